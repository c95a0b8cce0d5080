"""`cd125gate analyze-chunk`: each sample in a forked process; one bad sample never costs the others."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cd125gate.cli import analyze as cli_analyze
from cd125gate.cli import main
from cd125gate.results import chunk

ROOT = Path(__file__).parents[1]
DATA = ROOT / "test_data"


def entry(tmp_path, sample_id, tube, out=None, control=True):
    """A spec entry as the workflow writes it: the sample's log and its `cd125gate analyze` arguments."""
    args = [str(DATA / f"{tube}_stained.fcs"), "--out", str(out or tmp_path / "samples" / sample_id),
            "--sample-id", sample_id, "--patient-id", f"P-{sample_id}"]
    if control:
        args += ["--control", str(DATA / f"{tube}_control.fcs")]
    return {"log": str(tmp_path / "logs" / f"{sample_id}.log"), "args": args}


def write_spec(tmp_path, entries):
    spec = tmp_path / "chunk.json"
    spec.write_text(json.dumps({"samples": entries}))
    return spec


def result(tmp_path, sample_id):
    return json.loads((tmp_path / "samples" / sample_id / "result.json").read_text())


@pytest.fixture
def dying(monkeypatch):
    """Make the analysis of sample 'bad' end its process the way ``how`` says, in the child only.

    The chunk forks from this test's process, so the patched ``cli_analyze.run``
    is what the child runs; the other samples run the real one.
    """
    real_run = cli_analyze.run

    def install(how):
        def run(args):
            if args.sample_id == "bad":
                if how == "SIGKILL":  # what the kernel's out-of-memory killer sends
                    os.kill(os.getpid(), signal.SIGKILL)
                if how == "raise":  # a bug of ours escaping the analysis
                    raise RuntimeError("a bug")
                os._exit(7)  # an exit no analyze run gives
            return real_run(args)

        monkeypatch.setattr(cli_analyze, "run", run)

    return install


@pytest.mark.parametrize("how, what", [
    ("SIGKILL", "the analysis process was killed by SIGKILL, out of memory?"),
    ("exit 7", "the analysis process exited with status 7"),
    ("raise", "the analysis process exited with status 1"),
])
def test_a_dead_child_is_its_samples_failed_result_and_the_chunk_goes_on(tmp_path, dying, capfd, how, what):
    dying(how)
    spec = write_spec(tmp_path, [entry(tmp_path, "first", "low_fmo"), entry(tmp_path, "bad", "high_fmo"),
                                 entry(tmp_path, "last", "corrupt")])
    assert main(["analyze-chunk", str(spec)]) == 0
    assert f"sample 2 of 3 (bad): {what}" in capfd.readouterr().err

    assert result(tmp_path, "first")["criterion"] == "NOT_MET"  # before the bad one
    assert result(tmp_path, "last")["criterion"] == "FAILED"  # after it: a truncated tube, its own reason
    assert "truncated" in result(tmp_path, "last")["reasons"][0]
    bad = result(tmp_path, "bad")
    assert bad["criterion"] == "FAILED"
    assert bad["reasons"] == [f"cd125gate crashed (SampleProcessDied: {what}); see the job log — please report"]
    assert (bad["sample_id"], bad["patient_id"]) == ("bad", "P-bad")
    assert bad["inputs"]["fcs"]["path"] == str(DATA / "high_fmo_stained.fcs")
    for name in ("gates.xml", "gate_counts.tsv", "qc.png"):  # every file the workflow declares
        assert (tmp_path / "samples/bad" / name).stat().st_size > 0, name
    # Each sample's output went to its own log, which says which batch job ran it.
    logs = {sid: (tmp_path / "logs" / f"{sid}.log").read_text() for sid in ("first", "bad", "last")}
    assert all(log.startswith("slurm_job_id=none\n") for log in logs.values())
    assert "first: NOT_MET" in logs["first"] and "last: FAILED" in logs["last"]
    assert logs["bad"].endswith(f"cd125gate analyze-chunk: {what}; writing the sample's FAILED result\n")
    if how == "raise":  # the bug's traceback is the report, in the sample's log
        assert "RuntimeError: a bug" in logs["bad"]


@pytest.mark.slow
def test_each_result_is_the_one_analyze_writes_alone(tmp_path):
    spec = write_spec(tmp_path, [entry(tmp_path, "a", "few_blasts"), entry(tmp_path, "b", "low_nocontrol",
                                                                           control=False)])
    assert main(["analyze-chunk", str(spec), "--threads", "2"]) == 0
    for sample in json.loads(spec.read_text())["samples"]:
        sample_id = sample["args"][sample["args"].index("--sample-id") + 1]
        alone = tmp_path / "alone" / sample_id
        args = list(sample["args"])
        args[args.index("--out") + 1] = str(alone)
        assert main(["analyze", *args, "--exit-zero", "--quiet"]) == 0
        for name in ("result.json", "gates.xml", "gate_counts.tsv", "qc.png"):
            assert (tmp_path / "samples" / sample_id / name).read_bytes() == (alone / name).read_bytes(), \
                (sample_id, name)


def test_a_sample_whose_folder_cannot_be_written_fails_the_chunk_but_not_the_others(tmp_path, capfd):
    (tmp_path / "a_file").write_text("")
    spec = write_spec(tmp_path, [entry(tmp_path, "stuck", "corrupt", out=tmp_path / "a_file/stuck"),
                                 entry(tmp_path, "fine", "no_cd125")])
    assert main(["analyze-chunk", str(spec)]) == 1
    err = capfd.readouterr().err
    assert "sample 1 of 2 (stuck): the analysis process exited with status 2" in err
    assert "cd125gate: no result could be written for 1 sample(s): stuck; see their logs" in err
    assert f"cd125gate: {tmp_path / 'a_file/stuck'}: cannot write the sample's folder" in \
        (tmp_path / "logs/stuck.log").read_text()
    assert result(tmp_path, "fine")["criterion"] == "FAILED"  # no CD125 channel: its own result


@pytest.mark.parametrize("spec, problem", [
    ("[1, 2]", "the chunk spec needs a non-empty list 'samples'"),
    ('{"samples": []}', "the chunk spec needs a non-empty list 'samples'"),
    ('{"samples": [{"args": ["x.fcs"]}]}', "sample 1: needs 'log' (a path) and 'args' (a list of strings)"),
    ('{"samples": [{"log": "l", "args": ["x.fcs", "--bogus"]}]}',
     "sample 1: not valid `cd125gate analyze` arguments (see above)"),
    ("{", "not a JSON chunk spec: "),
])
def test_a_bad_spec_is_one_line_before_any_sample(tmp_path, capfd, spec, problem):
    path = tmp_path / "chunk.json"
    path.write_text(spec)
    assert main(["analyze-chunk", str(path)]) == 2
    err = capfd.readouterr().err
    assert f"cd125gate: {path}: {problem}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "l").exists()


def test_the_spec_entries_are_parsed_by_analyzes_own_parser(tmp_path):
    spec = write_spec(tmp_path, [entry(tmp_path, "a", "low_fmo")])
    [(_, args)] = chunk.read_spec(spec, cli_analyze.add_arguments, threads=3)
    assert (args.sample_id, args.patient_id, args.threads, args.exit_zero) == ("a", "P-a", 3, True)
    assert args.control == str(DATA / "low_fmo_control.fcs") and args.plot_formats == "png"


def test_the_chunk_pays_the_analysis_imports_once_not_in_every_child(tmp_path):
    # What a sample imports after the warm-up, each child imports again: only the command's
    # modules (imported by the chunk's caller) and the figure worker's (unused in a chunk) may be new.
    code = (
        "import sys\n"
        "from cd125gate.results import chunk\n"
        "chunk._warm_up()\n"
        "before = set(sys.modules)\n"
        "from cd125gate.cli import main\n"
        f"main(['analyze', {str(DATA / 'low_fmo_stained.fcs')!r}, '--control', "
        f"{str(DATA / 'low_fmo_control.fcs')!r}, '--out', {str(tmp_path / 'a')!r}])\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('cd125gate')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == \
        "['cd125gate.cli', 'cd125gate.cli.analyze', 'cd125gate.figures.figure_worker']"
