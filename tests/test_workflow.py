"""The Snakemake workflow, run for real: outputs, schemas, bad sheets, crashes, kill and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from cd125gate import results
from cd125gate.io import samplesheet
from cd125gate.settings import default_settings_dict
from conftest import (
    cd125gate_lines,
    gone_pid,
    run_snakemake,
    screening_rows,
    snakemake_command,
    write_lock,
    write_subset_sheet,
)

ROOT = Path(__file__).parents[1]
SAMPLE_FILES = ("result.json", "gates.xml", "gate_counts.tsv", "qc.png")
BATCH_FILES = ("screening.tsv", "screening.json", "report.html")
# Tubes that cannot be analysed must end as FAILED rows without stopping the batch.
MUST_FAIL = ("corrupt", "no_cd125")
# The batch fixture's jobs take 4 samples each: 14 samples are chunks of 4, 4, 4 and 2.
BATCH_CHUNK = 4


def sample_ids(sheet):
    return [sample.sample_id for sample in samplesheet.read_sheet(sheet)]


# --- settings, without running Snakemake --------------------------------------------------------

def test_config_analysis_block_equals_the_packaged_defaults():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert config["analysis"] == default_settings_dict()


def test_config_sample_sheet_lists_the_test_data_samples():
    def key(sample):  # notes are free text and may be reworded
        return (sample.sample_id, sample.fcs.resolve(), sample.control and sample.control.resolve(),
                sample.patient_id, sample.specimen)

    ours = samplesheet.read_sheet(ROOT / "config/samples.tsv")
    theirs = samplesheet.read_sheet(ROOT / "test_data/samples.tsv")
    assert list(map(key, ours)) == list(map(key, theirs))


def test_every_config_key_is_explained_in_the_readme():
    readme = (ROOT / "config/README.md").read_text()
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    keys = set(config) | {f"analysis.{section}" for section in config["analysis"]}
    keys |= {f"{section}.{key}" for section, block in config["analysis"].items()
             for key in block}
    assert [key for key in sorted(keys) if f"`{key.split('.')[-1]}`" not in readme] == []


# --- conventions ---------------------------------------------------------------------------------

def test_snakefmt_leaves_the_workflow_unchanged():
    proc = subprocess.run([str(Path(sys.executable).with_name("snakefmt")), "--check",
                           str(ROOT / "workflow")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [1, 10])
def test_lint_reports_nothing(tmp_path, chunk):
    proc = run_snakemake(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out", f"analyze_chunk={chunk}",
                         "--lint")
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in output
    assert "Lints for" not in output


# --- a bad sheet stops before any job ------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("sample_id\tfcs\nA\t{fcs}\nA\t{fcs}\n", "line 3: sample_id 'A' duplicates 'A' on line 2"),
    ("sample_id\tfcs\n../x\t{fcs}\n", "line 2: sample_id '../x' is not allowed"),
    ("sample_id\tfcs\nA\tmissing.fcs\n", "line 2: sample 'A': fcs file missing.fcs"),
    ("sample_id\tfcs\nA\tpipe.fcs\n", "line 2: sample 'A': fcs file pipe.fcs ({fifo}) is not a regular file"),
])
@pytest.mark.slow
def test_bad_sheet_stops_the_run_with_one_line(tmp_path, text, message):
    os.mkfifo(tmp_path / "pipe.fcs")  # reading it would block the run forever
    message = message.format(fifo=tmp_path / "pipe.fcs")
    sheet = tmp_path / "bad.tsv"
    sheet.write_text(text.format(fcs=ROOT / "test_data/low_fmo_stained.fcs"))
    proc = run_snakemake(tmp_path, sheet, tmp_path / "out")
    assert proc.returncode != 0
    errors = cd125gate_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"cd125gate: {sheet}: {message}")
    assert "Traceback" not in proc.stderr and "File \"" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_sheet_with_an_unmappable_panel_stops_before_any_job(tmp_path):
    fc500 = ROOT / "test_data/realdata/clarient_FI05_000599_tube6.fcs"  # CD38 where CD125 should be
    sheet = tmp_path / "mixed.tsv"
    sheet.write_text(f"sample_id\tfcs\nok\t{ROOT / 'test_data/low_fmo_stained.fcs'}\nfc500\t{fc500}\n")
    proc = run_snakemake(tmp_path, sheet, tmp_path / "out")
    assert proc.returncode != 0
    errors = cd125gate_lines(proc.stderr)
    assert errors == [
        f"cd125gate: sample fc500: stained tube {fc500}: required marker(s) CD125 not found; unrecognised "
        "channel(s): FL5 Log (CD38-PC7) (add the spelling to panel.markers if one of them is it)",
        "cd125gate: 1 file(s) whose panel cannot be mapped; no job was run (`cd125gate panel FILE` shows "
        "each channel)"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_chunk_of_no_samples_stops_the_run(tmp_path):
    proc = run_snakemake(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out", "analyze_chunk=0")
    assert proc.returncode != 0
    assert "0 is less than the minimum of 1" in proc.stderr and "analyze_chunk" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unknown_analysis_key_stops_the_run(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("analysis:\n  gating:\n    min_event: 10\n")
    proc = subprocess.run(
        [*snakemake_command(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out"),
         "--configfile", str(ROOT / "config/config.yaml"), str(extra)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cd125gate: workflow config, analysis block: unknown settings key 'gating.min_event'" \
        in proc.stderr
    assert not (tmp_path / "out").exists()


# --- the batch, run for real ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The whole test_data batch, run once on 2 cores, BATCH_CHUNK samples per analyze job."""
    workdir = tmp_path_factory.mktemp("batch")
    start = time.monotonic()
    proc = run_snakemake(workdir, ROOT / "config/samples.tsv", workdir / "results", f"analyze_chunk={BATCH_CHUNK}")
    print(f"\nbatch of {len(sample_ids(ROOT / 'config/samples.tsv'))} samples:"
          f" {time.monotonic() - start:.1f} s wall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, workdir / "results", proc


@pytest.mark.slow
def test_batch_says_where_its_results_are_and_keeps_its_log(batch):
    _, outdir, proc = batch
    assert f"cd125gate: review page {outdir / 'report.html'}" in proc.stderr
    kept = (outdir / "logs/snakemake.log").read_text()
    assert "Finished job" in kept or "steps (100%) done" in kept


@pytest.mark.slow
def test_batch_writes_every_output_and_valid_tables(batch):
    _, outdir, _ = batch
    ids = sample_ids(ROOT / "config/samples.tsv")
    for name in BATCH_FILES:
        assert (outdir / name).stat().st_size > 0
    result_validator = Draft202012Validator(results.load_schema("result.schema.json"))
    for sample_id in ids:
        for name in SAMPLE_FILES:
            assert (outdir / "samples" / sample_id / name).stat().st_size > 0, (sample_id, name)
        result = json.loads((outdir / "samples" / sample_id / "result.json").read_text())
        result_validator.validate(result)
        assert result["sample_id"] == sample_id
    document = json.loads((outdir / "screening.json").read_text())
    Draft202012Validator(results.load_schema("screening.schema.json")).validate(document)
    assert [row["sample_id"] for row in document["samples"]] == ids
    assert document["summary"]["samples"] == len(ids)
    assert sum(document["summary"]["criteria"].values()) == len(ids)
    tsv = (outdir / "screening.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in tsv[1:]] == ids


@pytest.mark.slow
def test_unreadable_tubes_become_failed_rows(batch):
    _, outdir, _ = batch
    rows = {row["sample_id"]: row
            for row in json.loads((outdir / "screening.json").read_text())["samples"]}
    for sample_id in MUST_FAIL:
        assert rows[sample_id]["criterion"] == "FAILED"
        assert rows[sample_id]["reasons"]


@pytest.mark.slow
def test_jobs_are_logged_and_benchmarked(batch):
    _, outdir, _ = batch
    ids = sample_ids(ROOT / "config/samples.tsv")
    for sample_id in ids:  # each sample its own log, at the same path as a job of its own
        log = (outdir / "logs/analyze" / f"{sample_id}.log").read_text()
        assert log.startswith("slurm_job_id=none\n")
        assert f"{sample_id}: " in log  # the summary line of its analysis
    chunks = -(-len(ids) // BATCH_CHUNK)
    for number in range(1, chunks + 1):
        assert (outdir / "logs/analyze_chunk" / f"{number}.log").read_text().startswith("slurm_job_id=none\n")
        assert (outdir / "benchmarks/analyze_chunk" / f"{number}.tsv").is_file()
    assert not (outdir / "benchmarks/analyze_chunk" / f"{chunks + 1}.tsv").exists()
    for rule in ("screening", "review_page"):
        assert (outdir / "benchmarks" / f"{rule}.tsv").is_file()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(batch):
    workdir, outdir, _ = batch
    proc = run_snakemake(workdir, ROOT / "config/samples.tsv", outdir, f"analyze_chunk={BATCH_CHUNK}", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


def planned_jobs(proc):
    """Rule name -> count of the jobs a dry run would run (its 'Job stats' table)."""
    lines = (proc.stdout + proc.stderr).splitlines()
    start = lines.index("Job stats:") + 3
    jobs = {}
    for line in lines[start:]:
        name, count = line.split()
        if name == "total":
            return jobs
        jobs[name] = int(count)


@pytest.mark.slow
def test_a_changed_sheet_value_reruns_its_chunk_only(batch, tmp_path):
    workdir, outdir, _ = batch
    # The same sheet elsewhere, with one note changed: clog is the 9th sample, so in chunk 3.
    text = (ROOT / "config/samples.tsv").read_text().replace("../test_data/", f"{ROOT}/test_data/")
    text, n = re.subn(r"(\nclog\t.*\t)[^\t\n]*\n", r"\1flow-rate jump, re-checked\n", text)
    assert n == 1 and sample_ids(ROOT / "config/samples.tsv").index("clog") // BATCH_CHUNK + 1 == 3
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(text)
    proc = run_snakemake(workdir, sheet, outdir, f"analyze_chunk={BATCH_CHUNK}", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc)
    assert {name for name in jobs if name.startswith("analyze")} == {"analyze_spec_3", "analyze_chunk_3"}
    assert "analysis_config" not in jobs and "screening" in jobs


@pytest.mark.slow
def test_changed_analysis_settings_rerun_every_chunk(batch, tmp_path):
    workdir, outdir, _ = batch
    settings = tmp_path / "settings.yaml"
    settings.write_text("analysis:\n  criterion:\n    confidence: 0.99\n")
    proc = subprocess.run(
        [*snakemake_command(workdir, ROOT / "config/samples.tsv", outdir, f"analyze_chunk={BATCH_CHUNK}",
                            "--dry-run"),
         "--configfile", str(ROOT / "config/config.yaml"), str(settings)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc)
    assert {name for name in jobs if name.startswith("analyze_chunk")} == \
        {f"analyze_chunk_{n}" for n in range(1, 5)}
    assert "analysis_config" in jobs


@pytest.mark.slow
def test_per_sample_jobs_give_the_chunks_results_to_the_byte(batch, tmp_path):
    _, chunked, _ = batch
    ids = sample_ids(ROOT / "config/samples.tsv")
    outdir = tmp_path / "out"
    targets = [str(outdir / "samples" / sid / name) for sid in ids for name in ("result.json", "gate_counts.tsv")]
    # (--printshellcmds ends the --config list, so that the targets are not read as config.)
    proc = run_snakemake(tmp_path, ROOT / "config/samples.tsv", outdir, "analyze_chunk=1", "--printshellcmds",
                         *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.stem for p in (outdir / "benchmarks/analyze").iterdir()) == sorted(ids)  # a job each
    for sid in ids:
        for name in ("result.json", "gate_counts.tsv", "gates.xml"):
            assert (outdir / "samples" / sid / name).read_bytes() == \
                   (chunked / "samples" / sid / name).read_bytes(), (sid, name)


@pytest.mark.slow
def test_snakemake_report_builds_with_plots_and_tables(batch, tmp_path):
    workdir, outdir, _ = batch
    report = tmp_path / "report.zip"
    proc = run_snakemake(workdir, ROOT / "config/samples.tsv", outdir, f"analyze_chunk={BATCH_CHUNK}",
                         "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        page = archive.read(next(n for n in names if n.count("/") == 1 and n.endswith(".html")))
    n_samples = len(sample_ids(ROOT / "config/samples.tsv"))
    raw = [name.rsplit("/", 1)[1] for name in names if "/data/raw/" in name]
    assert sorted(raw) == sorted(["qc.png", "gate_counts.tsv"] * n_samples
                                 + ["screening.tsv", "report.html"])
    for caption in ("QC plots of one sample", "Screening table of the batch",
                    "cd125gate run over the samples"):
        assert caption.encode() in page


# --- a crash of our own code is one sample's FAILED row ------------------------------------------

CRASH_HOOK = '''
import os, sys
# Test hook: make the gating of one sample crash, as a bug in our code would, whether
# the sample runs as a job of its own or in a chunk's forked process.
if os.environ.get("CD125GATE_TEST_CRASH") and os.path.basename(sys.argv[0]) == "cd125gate":
    import cd125gate.cli.analyze
    import cd125gate.analysis.gating.hierarchy

    real_run = cd125gate.cli.analyze.run

    def find_gates(*args, **kwargs):
        raise RuntimeError("injected crash")

    def run(args):
        if args.sample_id == os.environ["CD125GATE_TEST_CRASH"]:
            cd125gate.analysis.gating.hierarchy.find_gates = find_gates
        return real_run(args)

    cd125gate.cli.analyze.run = run
'''


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [1, 2])  # a job of its own; a chunk's process beside another sample
def test_a_crash_is_the_samples_failed_row_and_the_batch_finishes(tmp_path, chunk):
    sheet = write_subset_sheet(tmp_path / "two.tsv", {"low_fmo", "low_nocontrol"})
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_HOOK)
    env = dict(os.environ, PYTHONPATH=str(hook), CD125GATE_TEST_CRASH="low_fmo")
    outdir = tmp_path / "out"
    proc = run_snakemake(tmp_path, sheet, outdir, f"analyze_chunk={chunk}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in BATCH_FILES:
        assert (outdir / name).stat().st_size > 0
    rows = screening_rows(outdir)
    assert rows["low_fmo"]["criterion"] == "FAILED"
    assert rows["low_fmo"]["reasons"] == [
        "cd125gate crashed (RuntimeError: injected crash); see the job log — please report"]
    assert rows["low_nocontrol"]["criterion"] in ("MET", "NOT_MET", "REVIEW")
    # The traceback is in the job log, and the run's last words point at it.
    log = (outdir / "logs/analyze/low_fmo.log").read_text()
    assert "Traceback" in log and "RuntimeError: injected crash" in log
    assert (f"cd125gate: 1 sample(s) FAILED by a bug in cd125gate (please report; tracebacks in "
            f"{outdir / 'logs/analyze'}/ID.log): low_fmo") in proc.stderr
    assert "injected crash" in (outdir / "report.html").read_text()


# --- an output folder that cannot be written ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fault", ["under a file", "read-only", "disk full"])
def test_an_unwritable_output_folder_stops_the_run_with_one_line(tmp_path, tmpfs, fault):
    sheet = write_subset_sheet(tmp_path / "one.tsv", {"low_fmo"})
    if fault == "under a file":  # always possible, also where nothing can be mounted
        (tmp_path / "file").touch()
        outdir = tmp_path / "file/out"
        message = f"cannot be created: {tmp_path / 'file'} is not a folder"
    elif fault == "read-only":
        outdir = tmpfs("size=64k,ro") / "out"
        message = "cannot write the output folder: Read-only file system"
    else:
        full = tmpfs("size=64k")
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        outdir = full / "out"
        message = "cannot write the output folder: No space left on device"
    proc = run_snakemake(tmp_path / "checkout", sheet, outdir)
    assert proc.returncode != 0
    assert cd125gate_lines(proc.stderr) == [f"cd125gate: {outdir}: {message}"]
    assert "Traceback" not in proc.stderr
    assert not (outdir / ".cd125gate.lock").exists()


# --- degenerate tubes among good ones ------------------------------------------------------------

BUNDLED = ("low_fmo", "high_fmo", "few_blasts")


def degenerate_rows(folder):
    """Sheet rows (sample_id, stained, control) of the issue's degenerate tubes, a truncated and an empty one."""
    from test_fuzz import load_engine

    tubes = load_engine().degenerate_tubes(folder)
    good = (ROOT / "test_data/low_fmo_stained.fcs").read_bytes()
    tubes["truncated"] = folder / "truncated.fcs"
    tubes["truncated"].write_bytes(good[: len(good) // 2])
    tubes["zero_bytes"] = folder / "zero_bytes.fcs"
    tubes["zero_bytes"].write_bytes(b"")
    control = ROOT / "test_data/low_fmo_control.fcs"
    return {f"deg_{name}": (path, control) for name, path in tubes.items()}


@pytest.mark.slow
def test_degenerate_tubes_are_failed_rows_and_leave_the_other_samples_unchanged(tmp_path):
    from cd125gate.cli import main

    sheet = write_subset_sheet(tmp_path / "mixed.tsv", set(BUNDLED))
    degenerate = degenerate_rows(tmp_path / "tubes")
    assert len(degenerate) >= 12
    with sheet.open("a") as handle:
        for sample_id, (stained, control) in degenerate.items():
            handle.write(f"{sample_id}\t{stained}\t{control}\tDEG\tbone marrow\tdegenerate\n")
    outdir = tmp_path / "out"
    proc = run_snakemake(tmp_path, sheet, outdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = screening_rows(outdir)
    assert list(rows) == [*(s for s in sample_ids(ROOT / "test_data/samples.tsv") if s in BUNDLED),
                          *degenerate]
    for sample_id in degenerate:
        row = rows[sample_id]
        name = sample_id.removeprefix("deg_")
        if name == "timestep_zero":  # a bad $TIMESTEP alone is ignored, with a warning
            warnings = json.loads((outdir / "samples" / sample_id / "result.json").read_text())["warnings"]
            assert any("$TIMESTEP" in w for w in warnings), warnings
            continue
        assert row["criterion"] in ("FAILED", "REVIEW"), (sample_id, row)
        assert row["reasons"] and all(row["reasons"]), sample_id
        # A crash would still be a FAILED row, but every one of these must end in a guard of ours.
        assert not any(r.startswith("cd125gate crashed") for r in row["reasons"]), (sample_id, row)
    # Every bundled sample as if it had been run alone, to the byte.
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    sheet_rows = {s.sample_id: s for s in samplesheet.read_sheet(sheet)}
    for sample_id in BUNDLED:
        sample = sheet_rows[sample_id]
        alone = tmp_path / "alone" / sample_id
        assert main(["analyze", str(sample.fcs), "--control", str(sample.control), "--out", str(alone),
                     "--sample-id", sample_id, "--config", str(outdir / "analysis_config.yaml"),
                     "--plot-formats", ",".join(config["plot_formats"]), "--patient-id", sample.patient_id,
                     "--specimen", sample.specimen, "--notes", sample.notes, "--quiet", "--exit-zero"]) == 0
        for name in ("result.json", "gates.xml", "control_gates.xml", "gate_counts.tsv"):
            assert (outdir / "samples" / sample_id / name).read_bytes() == (alone / name).read_bytes(), \
                (sample_id, name)


# --- one run at a time per output folder ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("host", ["this", "another"])
def test_a_run_into_a_locked_folder_is_refused_before_any_job(tmp_path, host):
    import socket

    sheet = write_subset_sheet(tmp_path / "one.tsv", {"low_fmo"})
    outdir = tmp_path / "out"
    # Held by a live process (this test's) of another checkout; a process on another host
    # cannot be checked from here, so its lock holds too.
    holder = socket.gethostname() if host == "this" else "another-host.example"
    lock = write_lock(outdir, holder, os.getpid(), "/other/checkout")
    held = lock.read_bytes()
    proc = run_snakemake(tmp_path / "checkout", sheet, outdir)
    assert proc.returncode != 0
    assert cd125gate_lines(proc.stderr) == [
        f"cd125gate: {outdir}: in use by another run (host {holder}, pid {os.getpid()}, "
        f"working directory /other/checkout); wait for it to end, or if no such run is going, "
        f"remove {lock}"]
    assert sorted(p.name for p in outdir.iterdir()) == [".cd125gate.lock"]  # no job ran
    assert lock.read_bytes() == held
    # A dry run and --unlock neither need nor take the lock.
    for extra in ("--dry-run", "--unlock"):
        proc = run_snakemake(tmp_path / "checkout", sheet, outdir, extra)
        assert proc.returncode == 0, (extra, proc.stderr[-2000:])
        assert not cd125gate_lines(proc.stderr), extra
        assert lock.read_bytes() == held, extra


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_first_runs_and_a_gone_runs_lock_is_taken_over(tmp_path):
    import socket

    sheet = write_subset_sheet(tmp_path / "two.tsv", {"corrupt", "few_blasts"})
    outdir = tmp_path / "out"
    gone = gone_pid()
    lock = write_lock(outdir, socket.gethostname(), gone, "/killed/checkout")
    first = subprocess.Popen(snakemake_command(tmp_path / "a", sheet, outdir),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not lock.exists() or f'"pid": {first.pid},' not in lock.read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = run_snakemake(tmp_path / "b", sheet, outdir)
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        _, first_stderr = first.communicate(timeout=600)
    assert second.returncode != 0
    assert cd125gate_lines(second.stderr) == [
        f"cd125gate: {outdir}: in use by another run (host {socket.gethostname()}, pid {first.pid}, "
        f"working directory {tmp_path / 'a'}); wait for it to end, or if no such run is going, "
        f"remove {lock}"]
    assert first.returncode == 0, first_stderr[-3000:]
    assert cd125gate_lines(first_stderr)[0] == (
        f"cd125gate: {outdir}: taking over the lock of a run that is gone "
        f"(host {socket.gethostname()}, pid {gone}, working directory /killed/checkout)")
    assert not lock.exists()  # released at the end
    assert not list(outdir.glob(".cd125gate.lock*"))
    assert set(screening_rows(outdir)) == {"corrupt", "few_blasts"}


# --- kill and resume -----------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_run_resumes_redoing_only_what_is_missing(batch, tmp_path):
    subset = ("low_fmo", "high_fmo", "near50_fmo", "low_nocontrol")
    sheet = write_subset_sheet(tmp_path / "subset.tsv", set(subset))
    outdir = tmp_path / "out"
    # One job per sample: a killed chunk is redone whole (its outputs are all incomplete).
    chunk = "analyze_chunk=1"
    proc = subprocess.Popen(snakemake_command(tmp_path, sheet, outdir, chunk),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(outdir.glob("samples/*/result.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # A sample is finished once Snakemake recorded it: outputs there, no incomplete mark.
    finished = {sid: (outdir / "samples" / sid / "result.json").stat().st_mtime_ns
                for sid in subset if is_recorded_complete(tmp_path, outdir, sid)}
    assert len(finished) < len(subset), "the run was killed too late to test resuming"

    # The kill leaves Snakemake's lock behind; --unlock is the documented way out.
    assert run_snakemake(tmp_path, sheet, outdir, chunk, "--unlock").returncode == 0
    resumed = run_snakemake(tmp_path, sheet, outdir, chunk)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for sid, mtime in finished.items():
        assert (outdir / "samples" / sid / "result.json").stat().st_mtime_ns == mtime, sid

    _, full_outdir, _ = batch
    for sid in subset:
        for name in ("result.json", "gate_counts.tsv"):
            assert (outdir / "samples" / sid / name).read_bytes() == \
                   (full_outdir / "samples" / sid / name).read_bytes(), (sid, name)
    full_rows = {line.split("\t")[0]: line
                 for line in (full_outdir / "screening.tsv").read_text().splitlines()}
    assert (outdir / "screening.tsv").read_text().splitlines() == \
           [full_rows["sample_id"], *(full_rows[sid] for sid in subset)]


def is_recorded_complete(workdir, outdir, sample_id):
    """True when all outputs of the sample exist and Snakemake holds no incomplete mark."""
    import base64

    folder = outdir / "samples" / sample_id
    marks = {p.name for p in (workdir / ".snakemake/incomplete").glob("*")}
    for name in SAMPLE_FILES:
        key = base64.urlsafe_b64encode(str(folder / name).encode()).decode()
        if not (folder / name).exists() or key in marks:
            return False
    return True
