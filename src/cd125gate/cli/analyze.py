"""`cd125gate analyze`: one sample at the bench, or as one job of a batch.

The subcommand's arguments; the run itself is ``sample_run.run_sample``,
imported only when the subcommand runs.
"""

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from cd125gate.results.sample_run import run_sample

    return run_sample(args)
