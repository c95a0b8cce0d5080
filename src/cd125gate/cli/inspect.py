"""`cd125gate inspect FILE...`: what an FCS file holds, before anyone analyses it."""

from __future__ import annotations

import argparse
import json
import sys

from cd125gate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="FCS files to summarise")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of text")
    parser.add_argument("--max-bytes", type=_positive, default=None, metavar="N",
                        help="refuse files larger than N bytes (default: $CD125GATE_MAX_FCS_BYTES or 2 GiB)")


def _positive(text):
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of bytes, not {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """Summarise each file; report unreadable ones on stderr and exit 2 after the rest."""
    from cd125gate.io.fcs import read_fcs
    from cd125gate.io.fcsinfo import format_text, strict_json, summary

    summaries = []
    failed = False
    for path in args.files:
        try:
            # The structure, offsets and DATA size are all checked without decoding events.
            summaries.append(summary(read_fcs(path, read_events=False, max_bytes=args.max_bytes)))
        except InputError as exc:
            print(f"cd125gate: {exc}", file=sys.stderr)
            failed = True
    if args.json:
        # Strict JSON: a stray NaN/Infinity would break every consumer but Python's.
        print(json.dumps([strict_json(item) for item in summaries], indent=2, allow_nan=False))
    else:
        print("\n\n".join(format_text(item) for item in summaries))
    return 2 if failed else 0
