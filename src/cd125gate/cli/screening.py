"""``cd125gate screening``: collect per-sample results into screening.tsv/json (see `screening`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cd125gate.review.reviews import SIGNOFF

    parser.add_argument("results", nargs="+", metavar="RESULT_JSON",
                        help="per-sample result.json files, in the order of the table")
    parser.add_argument("--tsv", required=True, help="screening table to write (TSV)")
    parser.add_argument("--json", required=True, help="screening table + batch summary to write (JSON)")
    parser.add_argument("--reviews", help="reviews file (TSV): reviewer decisions to apply")
    parser.add_argument("--signoff", choices=SIGNOFF, default="review_only",
                        help="review_only: MET / NOT_MET stand unreviewed; all: every sample needs sign-off")
    parser.add_argument("--audit", help="audit trail (TSV) to append the applied decisions to")


def run(args: argparse.Namespace) -> int:
    from cd125gate.io.fileio import atomic_write_json, atomic_write_text
    from cd125gate.results.outputs import writing
    from cd125gate.review import reviews
    from cd125gate.review.screening import (
        CRITERIA,
        collect_samples,
        format_tsv,
        record_audit,
        screening_document,
        summarize,
    )

    review_lines = reviews.read_reviews(args.reviews) if args.reviews else []
    samples = collect_samples(args.results, review_lines, args.signoff)
    rows = [s.row for s in samples]
    # A full disk or a read-only folder: one line naming the folder, never a traceback.
    with writing(Path(args.tsv).parent, Path(args.tsv).name):
        atomic_write_text(args.tsv, format_tsv(rows))
    with writing(Path(args.json).parent, Path(args.json).name):
        atomic_write_json(args.json, screening_document(rows))
    if args.audit:
        with writing(Path(args.audit).parent, Path(args.audit).name):
            record_audit(args.audit, samples)
    summary = summarize(rows)
    counts, finals = summary["criteria"], summary["finals"]
    print(", ".join(f"{name} {counts[name]}" for name in CRITERIA) + f" ({len(rows)} samples); final: "
          + ", ".join(f"{name} {finals[name]}" for name in reviews.FINALS))
    return 0
