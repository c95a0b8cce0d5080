"""One sample's run: analyse its tubes, write its folder, and say how it went (``run_sample``).

What `cd125gate analyze` does (its arguments: ``cli.analyze``), at the bench
or as one job of a batch, and what each sample of `cd125gate analyze-chunk`
runs in its own process. Exit status tells the outcomes apart: 0 MET or
NOT_MET, 3 REVIEW, 4 FAILED (the result is written for each), 2 an input that
cannot be read at all (one line on stderr). A batch job passes
``--exit-zero``: every written result is a success, and a crash of ours
becomes the sample's FAILED result (``crashed_analysis``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate import results
from cd125gate.analysis.pipeline import SampleAnalysis, analyze_sample, result_header
from cd125gate.errors import InputError
from cd125gate.settings import load_settings

if TYPE_CHECKING:
    import argparse

    from cd125gate.figures.figure_worker import FigureWorker
    from cd125gate.settings import Settings

EXIT_STATUS = {"MET": 0, "NOT_MET": 0, "REVIEW": 3, "FAILED": 4}


def run_sample(args: argparse.Namespace) -> int:
    """Analyse the sample ``args`` (`cd125gate analyze`'s arguments) into its folder; the exit status."""
    from cd125gate.figures import figure_worker

    # First, while the process has no threads: matplotlib is imported beside the analysis.
    worker = figure_worker.start()
    try:
        return _run(args, worker)
    finally:
        if worker is not None:
            worker.close()


def _run(args: argparse.Namespace, worker: FigureWorker | None) -> int:
    from cd125gate.results.outputs import plot_formats, write_outputs

    formats = plot_formats(args.plot_formats)
    settings = load_settings(args.config)
    meta = sample_meta(args)
    try:
        analysis = analyze_sample(args.fcs, args.control, settings, sample_id=args.sample_id,
                                  compensation_path=args.compensation, meta=meta, threads=args.threads,
                                  progress=None if args.quiet else _progress,
                                  beads=args.beads, bead_lot=args.bead_lot,
                                  allocate=worker.allocate if worker is not None else None)
        bad_inputs = analysis.failed_stage == "read" and not args.exit_zero
        result = write_outputs(analysis, args.out, formats,
                               progress=None if args.quiet or bad_inputs else _progress, worker=worker)
    except InputError:
        raise  # bad input or an unwritable folder: one line (cli.main), never a traceback
    except Exception as exc:
        if not args.exit_zero:
            raise  # the bench: the traceback is the bug report
        # A batch: the bug is this sample's FAILED row, and the other samples still get
        # their table. The traceback goes to the job log, where the reason points.
        import traceback

        traceback.print_exc(file=sys.stderr)
        bad_inputs = False
        result = write_outputs(crashed_analysis(args, settings, meta, exc), args.out, formats)
    if bad_inputs:
        # The inputs themselves are bad (missing, unreadable, no CD125...): a one-line error.
        print(f"cd125gate: {result.reasons[0]}", file=sys.stderr)
        return 2
    print(results.summary_line(result))
    if not args.quiet:
        print(f"results: {Path(args.out) / 'result.json'} (figures and gates beside it)", file=sys.stderr)
    return 0 if args.exit_zero else EXIT_STATUS[result.criterion]


def sample_meta(args: argparse.Namespace) -> dict[str, str | None]:
    """The sample sheet's fields of this sample, as its result records them."""
    return {"patient_id": args.patient_id, "specimen": args.specimen, "notes": args.notes,
            "cd125_clone": args.cd125_clone, "cd125_fluorochrome": args.cd125_fluorochrome,
            "cd125_lot": args.cd125_lot}


def crashed_analysis(args: argparse.Namespace, settings: Settings, meta: dict[str, str | None],
                     exc: BaseException) -> SampleAnalysis:
    """A FAILED analysis of nothing but the crash: what it was, and where its traceback is."""
    from cd125gate.errors import one_line

    what = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if len(what) > 200:  # the job log holds all of it
        what = what[:200] + "..."
    base = result_header(args.fcs, args.control, args.compensation or settings.compensation.matrix,
                         settings, args.sample_id, meta)
    return SampleAnalysis(results.failed(base, f"cd125gate crashed ({what}); see the job log — please report"))


def _progress(stage: str, seconds: float) -> None:
    print(f"  {stage:<22} {seconds:6.2f} s", file=sys.stderr, flush=True)
