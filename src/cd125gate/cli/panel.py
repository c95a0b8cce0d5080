"""`cd125gate panel FILE.fcs...`: which channel carries which marker, per file, and what is missing."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.analysis.panel import PanelMap


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE.fcs", help="FCS files")
    parser.add_argument("--config", help="settings YAML (its `analysis:` block, or the whole file)")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of text")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every file holds every required marker, 1 otherwise (2: a file unreadable)."""
    from cd125gate.analysis.panel import map_file
    from cd125gate.settings import load_settings

    panel_settings = load_settings(args.config).panel
    status, records = 0, []
    for path in args.files:
        try:
            mapped = map_file(path, panel_settings)
        except InputError as exc:
            print(f"cd125gate: {exc}", flush=True)
            status = 2
            continue
        if mapped.missing or mapped.blocking:
            status = max(status, 1)
        if args.json:
            records.append(as_json(mapped))
        else:
            print("\n".join(describe(mapped)) + "\n")
    if args.json:
        print(json.dumps(records, indent=2))
    return status


def describe(mapped: PanelMap) -> list[str]:
    """Lines for one file: each marker with its channel, then what is missing."""
    stains = dict(mapped.channels)
    lines = [mapped.path]
    for marker, name in mapped.markers.items():
        stain = stains.get(name)
        lines.append(f"  {marker:<10} {name}" + (f"  ({stain})" if stain and stain != name else ""))
    for label, names in (("missing required", mapped.missing), ("missing optional", mapped.missing_optional)):
        if names:
            lines.append(f"  {label}: {', '.join(names)}")
    if mapped.unrecognised:
        lines.append("  not a panel marker: " + ", ".join(
            f"{name} ({stain})" if stain else name for name, stain in mapped.unrecognised))
    why = mapped.blocking
    lines.append(f"  cannot be mapped: {why}" if why else
                 "  lacks a required marker" if mapped.missing else "  OK")
    return lines


def as_json(mapped: PanelMap) -> dict[str, Any]:
    """One file's mapping as a JSON-ready dict."""
    return {"file": mapped.path, "markers": mapped.markers, "missing_required": mapped.missing,
            "missing_optional": mapped.missing_optional,
            "unrecognised": [{"channel": n, "stain": s} for n, s in mapped.unrecognised],
            "cannot_be_mapped": mapped.blocking}
