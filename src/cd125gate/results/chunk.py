"""One workflow job analyses a chunk of samples, paying imports once (`cd125gate analyze-chunk`).

A sample job as its own process pays ~0.7 s of Python start-up and imports
(numpy, matplotlib, jsonschema, yaml...) before ~1.3 s of work on a 100k+100k
pair. Here one process imports the heavy modules once, then, for each sample in
turn, forks a child that runs exactly `cd125gate analyze ARGS --exit-zero`
(the analyze subcommand's own parser and ``run``, which the subcommand's module
hands in: this module runs a command without knowing the command layer).

Why fork, and not a loop in one process:

- **Imports paid once**: the child inherits the parent's warm modules (and
  compiled schema validators, matplotlib's font cache), so it starts in
  milliseconds.
- **Isolation of each sample**: a crash, a hang killed by the operator or an
  out-of-memory kill ends one child, not the chunk. The parent then writes that
  sample's FAILED result itself (as `analyze --exit-zero` does for an
  exception: a one-line reason pointing at the log), and goes on with the next
  sample. Memory, matplotlib and numpy state never leak from one sample into
  the next, so each result is the same, to the byte, as a job of its own.

The spec (JSON) lists the samples in order::

    {"samples": [{"log": "logs/analyze/S1.log",
                  "args": ["S1.fcs", "--control", "S1_fmo.fcs", "--out", "samples/S1", ...]},
                 ...]}

``args`` are the arguments of `cd125gate analyze`; ``log`` receives the
sample's stdout and stderr, as a job of its own would write them. Children run
one at a time; ``--threads`` is passed to each sample's analysis.

Exit status: 0 when every sample has its result (FAILED ones included); 1 when
a sample's result could not be written at all (e.g. its folder is not
writable; the chunk log and the sample's log say why); 2 for a spec that
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from cd125gate import processes
from cd125gate.errors import InputError, one_line

# `cd125gate analyze`'s own pieces: adds its arguments to a parser; runs it on parsed arguments.
AddArguments = Callable[[argparse.ArgumentParser], None]
RunSample = Callable[[argparse.Namespace], int]


def run_chunk(spec: Path | str, add_arguments: AddArguments, run_sample: RunSample,
              threads: int | None = None) -> int:
    """Analyse every sample of the chunk ``spec``, each in its own child; the chunk's exit status.

    ``add_arguments`` and ``run_sample`` are the analyze subcommand's: every
    sample is exactly `cd125gate analyze ARGS --exit-zero`.
    """
    entries = read_spec(spec, add_arguments, threads)
    _warm_up()
    missing = []
    for number, (entry, sample_args) in enumerate(entries, start=1):
        outcome = analyze_in_child(sample_args, entry["log"], run_sample)
        if outcome is not None:
            print(f"sample {number} of {len(entries)} ({sample_args.sample_id or sample_args.fcs}): {outcome}",
                  file=sys.stderr, flush=True)
            if not write_failed(sample_args, entry["log"], outcome):
                missing.append(sample_args.sample_id or sample_args.fcs)
    if missing:
        print(f"cd125gate: no result could be written for {len(missing)} sample(s): {', '.join(missing)}; "
              "see their logs", file=sys.stderr)
        return 1
    return 0


class SampleProcessDied(Exception):
    """The process analysing one sample ended without writing its result."""


# --- the spec --------------------------------------------------------------------------------------

def analyze_parser(add_arguments: AddArguments) -> argparse.ArgumentParser:
    """The parser of `cd125gate analyze`, from its own arguments (one set of arguments, one meaning)."""
    parser = argparse.ArgumentParser(prog="cd125gate analyze", add_help=False)
    add_arguments(parser)
    return parser


def read_spec(path: Path | str, add_arguments: AddArguments,
              threads: int | None = None) -> list[tuple[dict, argparse.Namespace]]:
    """[(entry, analyze Namespace)] of the spec at ``path``, checked before any sample runs."""
    try:
        with open(path, encoding="utf-8") as handle:
            spec = json.load(handle)
    except OSError as exc:
        raise InputError(path, f"cannot read the chunk spec: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(path, f"not a JSON chunk spec: {one_line(str(exc))}") from None
    samples = spec.get("samples") if isinstance(spec, dict) else None
    if not isinstance(samples, list) or not samples:
        raise InputError(path, "the chunk spec needs a non-empty list 'samples'")
    parser = analyze_parser(add_arguments)
    entries = []
    for number, entry in enumerate(samples, start=1):
        if not (isinstance(entry, dict) and isinstance(entry.get("log"), str) and entry["log"]
                and isinstance(entry.get("args"), list) and all(isinstance(a, str) for a in entry["args"])):
            raise InputError(path, f"sample {number}: needs 'log' (a path) and 'args' (a list of strings)")
        sample_args = entry["args"] + ([] if threads is None else ["--threads", str(threads)])
        try:
            namespace = parser.parse_args(sample_args)
        except SystemExit:  # argparse has printed the usage error
            raise InputError(path, f"sample {number}: not valid `cd125gate analyze` arguments "
                                   f"(see above)") from None
        namespace.exit_zero = True  # a chunk is a batch job: every written result is a success
        entries.append((entry, namespace))
    return entries


def _warm_up() -> None:
    """Import, once, what every sample's analysis would otherwise import in its own process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg  # noqa: F401 - the PNG canvas
    import matplotlib.colors  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.lines  # noqa: F401
    import matplotlib.patches  # noqa: F401
    import matplotlib.ticker  # noqa: F401

    # The whole analysis and its writers: each child would import them again (~0.05 s a sample).
    from cd125gate import results
    from cd125gate.analysis import checks, compensation, panel, pipeline, plausibility, threshold  # noqa: F401
    from cd125gate.analysis.gating import boundaries, ceiling, clones, hierarchy  # noqa: F401
    from cd125gate.analysis.numeric import mixture  # noqa: F401
    from cd125gate.figures import plots  # noqa: F401
    from cd125gate.io import fcs, gatingml  # noqa: F401
    from cd125gate.results import outputs, sample_run  # noqa: F401

    results._validator()  # the compiled result schema, inherited by every child


# --- one sample, in a child process ----------------------------------------------------------------

def analyze_in_child(sample_args: argparse.Namespace, log: str, run_sample: RunSample) -> str | None:
    """Run one sample's analysis in a forked child; None when it ended normally, else what happened."""
    ended = processes.wait(processes.start(lambda: _child(sample_args, log, run_sample)))
    if ended.signal is not None:
        number = ended.signal
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        why = ", out of memory?" if number == signal.SIGKILL else ""
        return f"the analysis process was killed by {name}{why}"
    return None if ended.ok else f"the analysis process exited with status {ended.status}"


def _child(sample_args: argparse.Namespace, log: str, run_sample: RunSample) -> int:
    """The exit status of `cd125gate analyze ... --exit-zero`, its output going to ``log``."""
    try:
        os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        print(f"cd125gate: {log}: cannot write the sample's log: {exc.strerror or exc}", file=sys.stderr)
        return 2
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Fresh streams on the redirected descriptors: the inherited ones may be
    # wrappers of something else (an embedding program's, a test's capture).
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    # As the workflow's own per-sample job writes it first: which batch job ran the sample.
    print(f"slurm_job_id={os.environ.get('SLURM_JOB_ID', 'none')}", flush=True)
    # Anything but an InputError is a bug of ours: processes.start writes its traceback
    # to the log (the report), flushes the log and exits 1.
    try:
        return run_sample(sample_args)
    except InputError as exc:  # as cli.main: one line, exit 2
        print(f"cd125gate: {exc}", file=sys.stderr)
        return 2


# --- a child that died: the sample's FAILED result, from the parent --------------------------------

def write_failed(sample_args: argparse.Namespace, log: str, what: str) -> bool:
    """Write the sample's FAILED result for a child that died; False when even that cannot be written."""
    from cd125gate.results.outputs import plot_formats, write_outputs
    from cd125gate.results.sample_run import crashed_analysis, sample_meta
    from cd125gate.settings import load_settings

    try:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"cd125gate analyze-chunk: {what}; writing the sample's FAILED result\n")
    except OSError:
        pass  # the result still says what happened
    try:
        settings = load_settings(sample_args.config)
        failed = crashed_analysis(sample_args, settings, sample_meta(sample_args), SampleProcessDied(what))
        write_outputs(failed, sample_args.out, plot_formats(sample_args.plot_formats))
    except InputError as exc:
        print(f"cd125gate: {exc}", file=sys.stderr, flush=True)
        return False
    except Exception:  # noqa: BLE001 - one sample's bug must not end the chunk
        traceback.print_exc()
        return False
    return True
