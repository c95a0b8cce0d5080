# Settings, sample sheet and input functions shared by the rules.

import json
import os
import shlex
import sys

import yaml
from snakemake.utils import validate

from cd125gate.review import audit
from cd125gate.io import outputlock
from cd125gate.analysis import panel
from cd125gate.review import reviews as review_lines
from cd125gate.io import samplesheet
from cd125gate.review import screening
from cd125gate.errors import InputError
from cd125gate.io.fileio import sha256_file
from cd125gate.settings import load_settings


def check_analysis_settings():
    """The analysis settings, or a one-line stop before any job (rather than in every job).

    Checked before the schema, whose analysis part is generated from the same
    settings classes, so that the message is cd125gate's one line naming the key.
    """
    try:
        return load_settings(overrides=config.get("analysis") or {})
    except InputError as exc:
        sys.exit(f"cd125gate: workflow config, analysis block: {exc.problem}")


ANALYSIS_SETTINGS = check_analysis_settings()
validate(config, "../schemas/config.schema.yaml")


def load_samples():
    """The checked sample sheet, or a one-line stop before any job runs."""
    # sys.exit prints just the message; an exception would add Snakemake's traceback.
    try:
        samples = samplesheet.read_sheet(config["samples"])
    except InputError as exc:
        sys.exit(f"cd125gate: {exc}")
    for sample in samples:
        validate(sheet_record(sample), "../schemas/samples.schema.yaml")
    check_panels(samples)
    return {sample.sample_id: sample for sample in samples}


def check_panels(samples):
    """Stop before any job, one line per file, when a file's panel cannot be mapped."""
    lines = panel.sheet_problems(samples, ANALYSIS_SETTINGS.panel)
    if lines:
        sys.exit(
            "\n".join(f"cd125gate: {line}" for line in lines)
            + f"\ncd125gate: {len(lines)} file(s) whose panel cannot be mapped; no job was run"
            " (`cd125gate panel FILE` shows each channel)"
        )


def sheet_record(sample):
    """A sample as the sample sheet schema sees it: the filled columns, as text."""
    return {
        name: str(getattr(sample, name))
        for name in samplesheet.COLUMNS
        if getattr(sample, name) is not None
    }


def load_reviews(current, criteria):
    """The REGATE lines that apply, sample_id -> line, once every review line is checked; or a one-line stop.

    Lines are checked against the results as they are now, before any job:
    a review must sign the current result.json of a sample of this batch,
    every decision audit.tsv records must still be there, and edited gates
    must be usable on the sample's tubes.
    """
    source = config.get("reviews") or None
    audit_path = os.path.join(OUTDIR, "audit.tsv")
    try:
        lines = review_lines.read_reviews(source) if source else []
        recorded = audit.read_audit(audit_path)
        audit.check_audit(lines, recorded, source, audit_path)
        review_lines.check(lines, current, audit.known_digests(recorded), criteria)
        regates = applying_regates(lines, current)
        check_regates(regates)
    except InputError as exc:
        sys.exit(f"cd125gate: {exc}")
    return regates


def applying_regates(lines, current):
    """sample_id -> its REGATE line, when that is its latest line and signs its current result."""
    return {
        sid: line
        for sid, line in review_lines.regate_lines(lines).items()
        if line.result_sha256 == current[sid]
    }


def check_regates(regates):
    """Parse the edited gates of each REGATE and check them on its tubes, naming the line."""
    from cd125gate.review import regate

    for sid, line in regates.items():
        sample = SAMPLES[sid]
        tubes = [path for path in (sample.fcs, sample.control) if path is not None]
        try:
            regate.check_edited_gates(line.gates, tubes)
        except InputError as exc:
            raise InputError(
                line.source, f"line {line.line}: REGATE of sample '{sid}': {exc}"
            )


def current_results():
    """sample_id -> (digest, criterion) of each sample's result.json as it is now (None: none yet)."""
    digests, criteria = {}, {}
    for sample_id in SAMPLES:
        path = os.path.join(OUTDIR, "samples", sample_id, "result.json")
        digests[sample_id] = criteria[sample_id] = None
        if os.path.isfile(path):
            digests[sample_id] = sha256_file(path)
            try:
                with open(path, encoding="utf-8") as handle:
                    criteria[sample_id] = json.load(handle).get("criterion")
            except ValueError:
                pass  # a torn result is redone by its job; the screening rule refuses it if not
    return digests, criteria


def check_outdir(outdir):
    """Stop with one line when ``outdir`` cannot be a folder (a file on its path)."""
    existing = outdir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing):
        sys.exit(f"cd125gate: {outdir}: cannot be created: {existing} is not a folder")
    return outdir


SAMPLES = load_samples()
OUTDIR = check_outdir(os.path.normpath(config["outdir"]))
# The results as they are before any job: what review lines must sign.
CURRENT, CRITERIA = current_results()
# REGATES: samples whose latest review line is a REGATE of their current result, re-analysed with
# the reviewer's gates.
REGATES = load_reviews(CURRENT, CRITERIA)
EXTRA_PLOT_FORMATS = [fmt for fmt in config["plot_formats"] if fmt != "png"]


envvars:
    "PATH",


# Jobs run the `cd125gate` installed beside the Python that runs Snakemake, also
# when its environment is not activated (.venv/bin/snakemake) and in SLURM jobs.
os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ["PATH"]]
)


wildcard_constraints:
    sample_id=samplesheet.SAMPLE_ID_PATTERN.strip("^$"),
    decision="[0-9a-f]{16}",


def sample_path(name):
    """Output path of one per-sample file, with the {sample_id} wildcard."""
    return os.path.join(OUTDIR, "samples", "{sample_id}", name)


def batch_path(name):
    return os.path.join(OUTDIR, name)


def all_samples(name):
    """The per-sample file ``name`` of every sample in the sheet, in sheet order."""
    return expand(sample_path(name), sample_id=SAMPLES)


def reviewed_results():
    """The reviewed result of every REGATE decision that applies: one file per decision."""
    return [
        regate_output().format(sample_id=sid, decision=line.decision_id())
        for sid, line in REGATES.items()
    ]


def regate_output():
    # One folder per decision (not one file per sample): Snakemake deletes a job's outputs
    # before it runs and when it fails, so a later REGATE must never share an earlier one's.
    return sample_path(os.path.join(screening.REVIEWED_FOLDER, "{decision}"))


def screening_inputs(wildcards):
    """Results, the reviews file and the reviewed results that the screening table is made from."""
    files = {"results": all_samples("result.json"), "reviewed": reviewed_results()}
    if config.get("reviews"):
        files["reviews"] = config["reviews"]
    return files


def screening_options(wildcards, input):
    """The review arguments of `cd125gate screening`, shell-quoted."""
    options = (
        f"--signoff {config['signoff']} --audit {shlex.quote(batch_path('audit.tsv'))}"
    )
    if config.get("reviews"):
        options += f" --reviews {shlex.quote(str(input.reviews))}"
    return options


def review_page_option(wildcards):
    """`--reviews FILE` of the review page when the batch runs with a reviews file."""
    if not config.get("reviews"):
        return ""
    return f"--reviews {shlex.quote(str(config['reviews']))}"


def regate_inputs(wildcards):
    """The automatic result, the edited gates and the tubes of a sample under a REGATE line."""
    sample = SAMPLES[wildcards.sample_id]
    if REGATES[wildcards.sample_id].decision_id() != wildcards.decision:
        raise ValueError(
            f"no REGATE decision {wildcards.decision} of {wildcards.sample_id} applies"
        )
    files = {
        "result": sample_path("result.json").format(sample_id=wildcards.sample_id),
        "gates": str(REGATES[wildcards.sample_id].gates),
        "fcs": sample.fcs,
        # The automatic result's settings: the re-gated figure is drawn from the same events.
        "config": batch_path("analysis_config.yaml"),
    }
    if sample.control is not None:
        files["control"] = sample.control
    return files


def regate_options(wildcards, input):
    options = f"--fcs {shlex.quote(str(input.fcs))}"
    if "control" in input.keys():
        options += f" --control {shlex.quote(str(input.control))}"
    return options


def batch_outputs():
    return all_samples("signout.pdf") + [
        batch_path(name)
        for name in ("screening.tsv", "screening.json", "report.html", "batch.wsp")
    ]


def analyze_inputs(wildcards):
    """The tubes and matrix of one sample, plus the settings file of the batch."""
    return sample_inputs(wildcards.sample_id)


def sample_inputs(sample_id):
    """The tubes and matrix of ``sample_id``, plus the settings file of the batch."""
    sample = SAMPLES[sample_id]
    files = {"fcs": sample.fcs, "config": batch_path("analysis_config.yaml")}
    for name in ("control", "compensation", "beads", "bead_lot"):
        if getattr(sample, name) is not None:
            files[name] = getattr(sample, name)
    return files


def sample_options(sample_id, files):
    """Flag -> value of the optional `cd125gate analyze` arguments of one sample."""
    sample = SAMPLES[sample_id]
    compensation = files.get("compensation")  # a matrix CSV
    if sample.precompensated:
        compensation = "precompensated"  # the word: events as they are
    options = {
        "--control": files.get("control"),
        "--compensation": compensation,
        "--patient-id": sample.patient_id,
        "--specimen": sample.specimen,
        "--notes": sample.notes,
        "--cd125-clone": sample.cd125_clone,
        "--cd125-fluorochrome": sample.cd125_fluorochrome,
        "--cd125-lot": sample.cd125_lot,
        "--beads": files.get("beads"),
        "--bead-lot": files.get("bead_lot"),
    }
    return {flag: str(value) for flag, value in options.items() if value is not None}


def analyze_options(wildcards, input):
    """The optional `cd125gate analyze` arguments of one sample, shell-quoted."""
    options = sample_options(wildcards.sample_id, input)
    return " ".join(f"{flag} {shlex.quote(value)}" for flag, value in options.items())


# --- chunks: one analyze job for several samples (`analyze_chunk` > 1) ------------------------------
# Each chunk is a rule of its own (its outputs must be named without wildcards),
# made in rules/analysis.smk. Its job runs `cd125gate analyze-chunk` on a spec
# that lists, per sample, the arguments the per-sample rule passes to
# `cd125gate analyze`, and the sample's log at the per-sample rule's path.
ANALYZE_CHUNK = config["analyze_chunk"]


def analyze_chunks():
    """Consecutive samples of the sheet, ``analyze_chunk`` at a time (the last may be shorter)."""
    ids = list(SAMPLES)
    return [ids[i : i + ANALYZE_CHUNK] for i in range(0, len(ids), ANALYZE_CHUNK)]


def chunk_inputs(chunk, spec):
    """The spec, and the tubes, matrices and settings file of every sample of ``chunk``."""
    files = {"spec": spec, "config": batch_path("analysis_config.yaml")}
    for sample_id in chunk:
        for name, path in sample_inputs(sample_id).items():
            if name != "config":
                files[f"{name}_{sample_id}"] = path
    return files


def chunk_spec(chunk):
    """The `cd125gate analyze-chunk` spec of ``chunk``: per sample, its log and analyze arguments."""
    entries = []
    for sample_id in chunk:
        files = sample_inputs(sample_id)
        args = [str(files["fcs"]), "--out", os.path.join(OUTDIR, "samples", sample_id)]
        args += ["--sample-id", sample_id, "--config", files["config"]]
        args += ["--plot-formats", ",".join(config["plot_formats"])]
        for flag, value in sample_options(sample_id, files).items():
            args += [flag, value]
        log = batch_path(f"logs/analyze/{sample_id}.log")
        entries.append({"log": log, "args": args})
    return {"samples": entries}


def chunk_outputs(chunk):
    """Every file the per-sample rule declares, for each sample of ``chunk``, report flags included."""
    files = []
    for sample_id in chunk:
        folder = os.path.join(OUTDIR, "samples", sample_id)
        files += [
            os.path.join(folder, "result.json"),
            os.path.join(folder, "gates.xml"),
            in_report(folder, "gate_counts.tsv", "gate_counts.rst", "gate counts"),
            in_report(folder, "qc.png", "qc.rst", "QC plots"),
        ]
        files += [os.path.join(folder, f"qc.{fmt}") for fmt in EXTRA_PLOT_FORMATS]
    return files


def in_report(folder, name, caption, what):
    """A sample's file as the per-sample rule puts it into `snakemake --report`."""
    sample_id = os.path.basename(folder)
    return report(
        os.path.join(folder, name),
        caption=f"../report/{caption}",
        category="Samples",
        subcategory=sample_id,
        labels={"sample": sample_id, "file": what},
    )


def chunk_spec_text(chunk):
    """The spec file of ``chunk`` (JSON)."""
    return json.dumps(chunk_spec(chunk), indent=1) + "\n"


def analysis_config_text(analysis):
    """The batch's analysis settings as a config file that `cd125gate analyze --config` reads."""
    return yaml.safe_dump({"analysis": analysis}, sort_keys=False)


def finish_batch(snakemake_logs, succeeded):
    """Keep Snakemake's own log with the batch and say where the results are.

    ``snakemake_logs``: what Snakemake passes as ``log`` (Snakemake 9: a list of paths).
    """
    import shutil

    logs = (
        [snakemake_logs]
        if isinstance(snakemake_logs, str)
        else list(snakemake_logs or [])
    )
    logs = [str(path) for path in logs if os.path.isfile(str(path))]
    kept = None
    if logs and os.path.isdir(OUTDIR):
        kept = batch_path("logs/snakemake.log")
        try:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            shutil.copyfile(logs[0], kept)
        except OSError as exc:  # a full disk: say so, and point at Snakemake's own copy
            print(
                f"cd125gate: {OUTDIR}: cannot keep Snakemake's log there: {exc.strerror or exc}",
                file=sys.stderr,
            )
            kept = None
    if succeeded:
        print(
            f"cd125gate: review page {batch_path('report.html')}; "
            f"table {batch_path('screening.tsv')}; per sample {batch_path('samples')}/",
            file=sys.stderr,
        )
        crashed = crashed_samples()
        if crashed:
            print(
                f"cd125gate: {len(crashed)} sample(s) FAILED by a bug in cd125gate "
                f"(please report; tracebacks in {batch_path('logs/analyze')}/ID.log): {', '.join(crashed)}",
                file=sys.stderr,
            )
    else:
        print(
            f"cd125gate: the run stopped before the batch was complete; see {kept or ', '.join(logs) or 'the output above'}",
            file=sys.stderr,
        )


def crashed_samples():
    """Sample ids whose row says cd125gate crashed (`analyze --exit-zero` wrote it FAILED)."""
    try:
        with open(batch_path("screening.json"), encoding="utf-8") as handle:
            rows = json.load(handle)["samples"]
    except (OSError, ValueError, KeyError):
        return []
    return [
        row["sample_id"]
        for row in rows
        if any(reason.startswith("cd125gate crashed") for reason in row["reasons"])
    ]


# --- one run at a time per output folder ---------------------------------------------------------
# The lock lives in the outdir (cd125gate.io.outputlock says why). Taken in `onstart` (not
# for -n, --unlock or a run with nothing to do), dropped in `onsuccess`/`onerror`.


def take_outdir_lock():
    """Hold OUTDIR for this run, or stop with one line naming the run that holds it."""
    try:
        outputlock.take(OUTDIR)
    except outputlock.OutdirLocked as exc:
        sys.exit(f"cd125gate: {exc}")


def release_outdir_lock():
    """Drop this run's lock (never another run's)."""
    outputlock.release(OUTDIR)
