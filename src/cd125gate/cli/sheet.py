"""`cd125gate sheet FOLDER`: write a sample sheet for a folder of tubes, pairing stained and control."""

from __future__ import annotations

import argparse
from pathlib import Path

from cd125gate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cd125gate.io.pairing import DEFAULT_PATTERNS

    parser.add_argument("folder", type=Path, help="folder holding the FCS tubes")
    parser.add_argument("--out", type=Path, help="sample sheet to write (default: FOLDER/samples.tsv)")
    parser.add_argument("--pattern", action="append", metavar="STAINED:CONTROL",
                        help="file names around {id}; repeatable, first match wins "
                             f"(default: {' and '.join(DEFAULT_PATTERNS)})")
    parser.add_argument("--force", action="store_true", help="write over an existing sheet")


def run(args: argparse.Namespace) -> int:
    """Pair the folder's tubes and write the sheet beside them; print what was paired and left out."""
    from cd125gate.io.fileio import atomic_write_text
    from cd125gate.io.pairing import DEFAULT_PATTERNS, pair_folder, sheet_text

    if not args.folder.is_dir():
        raise InputError(args.folder, "not a folder")
    out = args.out or args.folder / "samples.tsv"
    if out.exists() and not args.force:
        raise InputError(out, "exists already (use --force to write over it)")
    names = [p.name for p in args.folder.iterdir() if p.is_file() and p.suffix.lower() == ".fcs"]
    pairing = pair_folder(names, tuple(args.pattern or DEFAULT_PATTERNS))
    if not pairing.rows:
        raise InputError(args.folder, f"no stained tube found among {len(names)} FCS files")
    if out.resolve().parent != args.folder.resolve():
        raise InputError(out, "the sheet must be written into the folder of the tubes (paths are relative)")
    atomic_write_text(out, sheet_text(pairing))
    with_control = sum(control is not None for _, _, control in pairing.rows)
    print(f"{out}: {len(pairing.rows)} samples, {with_control} with a control tube")
    for sample_id, fcs, control in pairing.rows:
        if control is None:
            print(f"  {sample_id}: no control tube found for {fcs}")
    for name, why in pairing.left_out:
        print(f"  left out {name}: {why}")
    print(f"next: snakemake --cores 2 --config samples={out} outdir=results")
    return 0
