"""``cd125gate workspace``: a FlowJo 10 workspace (batch.wsp) of the batch's gates (see `workspace`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULT_JSON", help="per-sample result.json files")
    parser.add_argument("--reviewed", nargs="*", default=[], metavar="REVIEWED_RESULT_JSON",
                        help="reviewed_result.json of the re-gated samples, or the folders holding them "
                             "(their edited gates: group re-gated)")
    parser.add_argument("--out", required=True, help="batch.wsp to write")


def run(args: argparse.Namespace) -> int:
    from cd125gate import results
    from cd125gate.io.fileio import atomic_write_bytes
    from cd125gate.io.workspace import batch_wsp, gated_samples, regated_samples

    loaded = []
    for path in map(Path, args.results):
        loaded.append((path.parent, results.load(path)))
    reviewed = []
    for path in map(Path, args.reviewed):
        if path.is_dir():  # the workflow's folder of one REGATE decision
            path = path / results.REVIEWED_RESULT
        if not path.is_file():
            print(f"no reviewed result in {path.parent} (the re-gating failed): its sample is not re-gated here")
            continue
        reviewed.append(results.load(path))
    samples = gated_samples(loaded) + regated_samples(reviewed)
    skipped = []
    atomic_write_bytes(args.out, batch_wsp(samples, Path(args.out).parent, skipped))
    print(f"{args.out}: {len(samples) - len(skipped)} gated tubes of {len(loaded)} samples"
          f" ({len(reviewed)} re-gated)")
    for name, reason in skipped:
        print(f"left out {name}: {reason} (its Gating-ML holds the gates)")
    return 0
