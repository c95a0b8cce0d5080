"""``cd125gate signout``: each sample's one-page sign-out record, signout.pdf (see `signout`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cd125gate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--screening", required=True, type=Path, help="screening.json of the batch")
    parser.add_argument("--results-dir", required=True, type=Path,
                        help="folder with one sub-folder per sample (result.json, qc.png and its key panels)")


def run(args: argparse.Namespace) -> int:
    import json

    from cd125gate import results
    from cd125gate.review.screening import ScreeningRow
    from cd125gate.review.signout import record_key_panels, reviewed_record, write_signout

    try:
        rows = [ScreeningRow.from_json(row) for row in json.loads(args.screening.read_text(encoding="utf-8"))["samples"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(args.screening, f"cannot read screening file: {exc}") from None
    for row in rows:
        folder = args.results_dir / row.sample_id
        result = results.load(folder / "result.json")
        # A re-gated sample's record is its reviewed result, the automatic one beside it.
        reviewed = reviewed_record(folder, row)
        record, automatic = (reviewed, result) if reviewed is not None else (result, None)
        write_signout(folder / "signout.pdf", record, row, record_key_panels(folder, record), automatic)
    print(f"{len(rows)} sign-out records written")
    return 0
