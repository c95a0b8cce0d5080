"""``cd125gate report``: the batch review page report.html (see `report`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", required=True, type=Path,
                        help="folder holding one sub-folder per sample with result.json and qc.png")
    parser.add_argument("--out", required=True, type=Path, help="report.html to write")
    parser.add_argument("--screening", type=Path,
                        help="screening.json: list the samples in its order and report any it names without a result")
    parser.add_argument("--reviews", type=Path,
                        help="the reviews file the batch was run with: its lines are the start of the reviews "
                             "file the page builds (earlier lines + new ones)")


def run(args: argparse.Namespace) -> int:
    from cd125gate.results.outputs import writing
    from cd125gate.review.report import write_page
    from cd125gate.review.report_samples import earlier_lines, load_samples

    samples = load_samples(args.results_dir, args.screening)
    earlier = earlier_lines(args.reviews) if args.reviews else []
    # A full disk or a read-only folder: one line naming the folder, never a traceback.
    with writing(Path(args.out).parent, Path(args.out).name):
        write_page(samples, args.out, earlier)
    return 0
