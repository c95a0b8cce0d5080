"""``cd125gate regate``: re-gate one sample with edited gates into reviewed_result.json (see `regate`)."""

from __future__ import annotations

import argparse
import sys

from cd125gate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("result", help="the automatic result.json of the sample")
    parser.add_argument("--gates", required=True, help="edited Gating-ML 2.0 file")
    parser.add_argument("--out", help="reviewed result to write (default: reviewed_result.json beside RESULT)")
    parser.add_argument("--fcs", help="stained tube (default: the one result.json names)")
    parser.add_argument("--control", help="control tube (default: the one result.json names)")
    parser.add_argument("--reviews", help="reviews file: the sample's latest REGATE line says who, when, why")
    parser.add_argument("--current", help="also write the reviewed result here once it is complete "
                                          "(the workflow's reviewed_result.json beside result.json)")
    parser.add_argument("--failure", help="when the inputs cannot be re-gated, write the one-line problem here "
                                          "and exit 0 (the workflow records it; the batch goes on)")
    parser.add_argument("--config", help="analysis settings of the automatic result, to draw the re-gated "
                                         "QC figures (reviewed_qc.png) with; default: the packaged settings")
    parser.add_argument("--no-figures", action="store_true", help="write the reviewed result only")


def run(args: argparse.Namespace) -> int:
    if not args.failure:
        return _regate(args)
    try:
        return _regate(args)
    except InputError as exc:
        from cd125gate.io.fileio import atomic_write_text

        # A recorded outcome, not a failed job: Snakemake would stop the batch over one sample.
        atomic_write_text(args.failure, f"{exc}\n")
        print(f"cd125gate: {exc}", file=sys.stderr)
        return 0


def _regate(args: argparse.Namespace) -> int:
    from cd125gate import results
    from cd125gate.review import reviews
    from cd125gate.review.regate import regate_result
    from cd125gate.settings import load_settings

    review = None
    if args.reviews:
        sample_id = results.load(args.result).sample_id
        review = reviews.latest_by_sample(reviews.read_reviews(args.reviews)).get(sample_id)
        if review is None or review.decision != "REGATE":
            raise InputError(args.reviews, f"sample '{sample_id}' has no REGATE as its latest line")
    settings = load_settings(args.config) if args.config else None
    copies = [args.current] if args.current else []
    reviewed = regate_result(args.result, args.gates, args.out, args.fcs, args.control, review, copies,
                             settings, figures=not args.no_figures)
    if reviewed.regate.figure_note:
        print(f"no re-gated figure: {reviewed.regate.figure_note}")
    print("reviewed " + results.summary_line(reviewed))
    return 0
