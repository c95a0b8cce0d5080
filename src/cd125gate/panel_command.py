"""`cd125gate panel`: which channel carries which marker, per file; and the batch's panel check.

The same check runs in `cd125gate validate-sheet` and in the workflow before its
first job, on every file of a sample sheet, reading only HEADER and TEXT: a panel
that cannot be mapped stops the batch in seconds with one line per file, rather
than failing every job after the batch has run.
"""

import json
from dataclasses import replace

from .errors import InputError


def map_file(path, panel_settings, required=None):
    """The PanelMap of one file (``required`` overrides the panel's required markers)."""
    from . import fcs, panel

    if required is not None:
        panel_settings = replace(panel_settings, required=list(required))
    return panel.map_panel(fcs.read_channels(path), panel_settings, path)


def sheet_problems(samples, panel_settings):
    """One line per file of the sheet whose panel cannot be mapped.

    A stained tube blocks when a required marker may hide under a name we do not know,
    or a name is ambiguous; a control tube (whose CD125 channel is unstained or an
    isotype by design) only when a name is ambiguous. A file that cannot be read is
    left to its job, which fails that sample alone with the reader's reason.
    """
    lines = []
    for sample in samples:
        for role, path, required in (("stained", sample.fcs, None), ("control", sample.control, ())):
            if path is None:
                continue
            try:
                why = map_file(path, panel_settings, required).blocking
            except InputError:
                continue
            if why:
                lines.append(f"sample {sample.sample_id}: {role} tube {path}: {why}")
    return lines


def describe(mapped):
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


def as_json(mapped):
    return {"file": mapped.path, "markers": mapped.markers, "missing_required": mapped.missing,
            "missing_optional": mapped.missing_optional,
            "unrecognised": [{"channel": n, "stain": s} for n, s in mapped.unrecognised],
            "cannot_be_mapped": mapped.blocking}


def add_arguments(parser):
    parser.add_argument("files", nargs="+", metavar="FILE.fcs", help="FCS files")
    parser.add_argument("--config", help="settings YAML (its `analysis:` block, or the whole file)")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of text")


def run(args):
    """Exit 0 when every file holds every required marker, 1 otherwise (2: a file unreadable)."""
    from .settings import load_settings

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
