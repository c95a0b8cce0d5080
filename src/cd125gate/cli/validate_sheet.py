"""`cd125gate validate-sheet SHEET`: check a sample sheet, its pairs and its files' panels before a run."""

from __future__ import annotations

import argparse
import sys

from cd125gate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sheet", help="sample sheet (TSV: sample_id, fcs, control, ...)")
    parser.add_argument("--config", help="settings YAML whose panel maps the files (default: packaged)")


def run(args: argparse.Namespace) -> int:
    """Read and check the sheet, its pairs and every file's panel; exit 1 when a panel cannot be mapped."""
    from cd125gate.analysis.panel import sheet_problems
    from cd125gate.io.samplesheet import read_sheet, same_tube_pairs
    from cd125gate.settings import load_settings

    samples = read_sheet(args.sheet)
    # Hashing every pair is for this explicit check; the workflow's own read only compares paths.
    copies = same_tube_pairs(samples)
    if copies:
        first = copies[0]
        raise InputError(args.sheet, f"line {first.line}: sample '{first.sample_id}': the control "
                                     f"{first.control.name} is a copy of the stained tube (same SHA-256)"
                                     + (f"; {len(copies) - 1} more such sample(s)" if len(copies) > 1 else ""))
    unmapped = sheet_problems(samples, load_settings(args.config).panel)
    if unmapped:
        for line in unmapped:
            print(f"cd125gate: {args.sheet}: {line}", file=sys.stderr)
        return 1
    controls = sum(sample.control is not None for sample in samples)
    # Rows read = samples (every non-blank row after the header becomes one sample or an error);
    # said explicitly so that a sheet which lost rows cannot pass unnoticed.
    print(f"{args.sheet}: {len(samples)} rows read after the header (last on line {samples[-1].line}): "
          f"{len(samples)} samples, {controls} with a control tube: OK")
    return 0
