"""`cd125gate analyze`: one sample at the bench, or as one job of a batch.

Exit status tells the outcomes apart: 0 MET or NOT_MET, 3 REVIEW, 4 FAILED
(the result is written for each), 2 an input that cannot be read at all (one
line on stderr). A batch job passes ``--exit-zero``: every written result is a
success, and a crash of ours becomes the sample's FAILED result.
"""

import os
import sys
from pathlib import Path

from . import results
from .analyze import SampleAnalysis, analyze_sample, result_header
from .errors import InputError
from .settings import load_settings

EXIT_STATUS = {"MET": 0, "NOT_MET": 0, "REVIEW": 3, "FAILED": 4}


def add_arguments(parser):
    parser.epilog = ("exit status: 0 MET or NOT_MET, 3 REVIEW, 4 FAILED (the result is written for each); "
                     "2 an input that cannot be read or analysed at all (one line on stderr). "
                     "--exit-zero: 0 for every written result, as a batch needs.")
    parser.add_argument("fcs", help="stained tube (FCS)")
    parser.add_argument("--control", help="control tube (FMO or isotype), gated the same way")
    parser.add_argument("--out", required=True, help="output folder for this sample")
    parser.add_argument("--sample-id", help="sample id (default: the FCS file name)")
    parser.add_argument("--config", help="settings YAML (its `analysis:` block, or the whole file)")
    parser.add_argument("--compensation", help="spillover matrix CSV overriding the file's own, or "
                                               "`precompensated`: the events are already compensated")
    parser.add_argument("--patient-id")
    parser.add_argument("--specimen")
    parser.add_argument("--notes")
    for name in ("clone", "fluorochrome", "lot"):
        parser.add_argument(f"--cd125-{name}", help=f"anti-CD125 {name} (default: the settings' panel.cd125_reagent)")
    parser.add_argument("--beads", help="calibration bead tube (FCS) at the tube's settings: CD125 antigen "
                                        "density (antibodies bound per cell)")
    parser.add_argument("--bead-lot", help="bead lot file (YAML: lot, dye, molecules; default: the settings' beads)")
    parser.add_argument("--plot-formats", default="png",
                        help="comma-separated figure formats: png (always), svg, pdf")
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="2 or more: read, compensate, transform and gate the two tubes side by side "
                             "(default: 2 where the process may use two CPUs)")
    parser.add_argument("--exit-zero", action="store_true",
                        help="exit 0 whenever a result was written, FAILED and REVIEW included (workflow jobs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args):
    from . import figure_worker

    # First, while the process has no threads: matplotlib is imported beside the analysis.
    worker = figure_worker.start()
    try:
        return _run(args, worker)
    finally:
        if worker is not None:
            worker.close()


def _run(args, worker):
    from .outputs import plot_formats, write_outputs

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
        result = write_outputs(_crashed(args, settings, meta, exc), args.out, formats)
    if bad_inputs:
        # The inputs themselves are bad (missing, unreadable, no CD125...): a one-line error.
        print(f"cd125gate: {result.reasons[0]}", file=sys.stderr)
        return 2
    print(results.summary_line(result))
    if not args.quiet:
        print(f"results: {Path(args.out) / 'result.json'} (figures and gates beside it)", file=sys.stderr)
    return 0 if args.exit_zero else EXIT_STATUS[result.criterion]


def sample_meta(args):
    """The sample sheet's fields of this sample, as its result records them."""
    return {"patient_id": args.patient_id, "specimen": args.specimen, "notes": args.notes,
            "cd125_clone": args.cd125_clone, "cd125_fluorochrome": args.cd125_fluorochrome,
            "cd125_lot": args.cd125_lot}


def _crashed(args, settings, meta, exc):
    """A FAILED analysis of nothing but the crash: what it was, and where its traceback is."""
    from .errors import one_line

    what = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if len(what) > 200:  # the job log holds all of it
        what = what[:200] + "..."
    base = result_header(args.fcs, args.control, args.compensation or settings.compensation.matrix,
                         settings, args.sample_id, meta)
    return SampleAnalysis(results.failed(base, f"cd125gate crashed ({what}); see the job log — please report"))


def _progress(stage, seconds):
    print(f"  {stage:<22} {seconds:6.2f} s", file=sys.stderr, flush=True)
