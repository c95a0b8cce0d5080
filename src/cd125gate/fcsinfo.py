"""`cd125gate inspect FILE...`: what an FCS file holds, before anyone analyses it.

(Named ``fcsinfo`` rather than ``inspect``, which would shadow the standard library module.)
"""

import argparse
import json
import math
import sys

from .errors import InputError


def add_arguments(parser):
    parser.add_argument("files", nargs="+", metavar="FILE", help="FCS files to summarise")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of text")
    parser.add_argument("--max-bytes", type=_positive, default=None, metavar="N",
                        help="refuse files larger than N bytes (default: $CD125GATE_MAX_FCS_BYTES or 2 GiB)")


def _positive(text):
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of bytes, not {text!r}")
    return int(text)


def run(args):
    """Summarise each file; report unreadable ones on stderr and exit 2 after the rest."""
    from .fcs import read_fcs

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


def summary(fcs):
    """Describe an ``FCSData`` as a JSON-ready dict."""
    spillover = None
    if fcs.spillover is not None:
        spillover = {
            "keyword": fcs.spillover.keyword,
            "channels": list(fcs.spillover.channels),
            "matrix": fcs.spillover.matrix.tolist(),
        }
    return {
        "path": fcs.path,
        "sha256": fcs.sha256,
        "version": fcs.version,
        "cytometer": fcs.cytometer,
        "event_count": fcs.event_count,
        "dataset_count": fcs.dataset_count,
        "byte_order": fcs.byte_order,
        "datatype": fcs.datatype,
        "timestep": fcs.timestep,
        "channels": [
            {
                "index": c.index,
                "name": c.name,
                "stain": c.stain,
                "range": c.range,
                "bits": c.bits,
                "amplification": list(c.amplification),
                "gain": c.gain,
            }
            for c in fcs.channels
        ],
        "spillover": spillover,
        "warnings": list(fcs.warnings),
    }


def strict_json(item):
    """``item`` with every non-finite float replaced by null, and a warning saying where and why."""
    notes = []

    def clean(value, where):
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{where} is {value!r}, not a finite number; written as null")
            return None
        if isinstance(value, dict):
            return {key: clean(inner, f"{where}.{key}" if where else key) for key, inner in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(inner, f"{where}[{i}]") for i, inner in enumerate(value)]
        return value

    cleaned = clean(item, "")
    cleaned["warnings"] = list(cleaned.get("warnings", [])) + notes
    return cleaned


def format_text(item):
    """Render one summary dict as the readable text block."""
    spillover = item["spillover"]
    lines = [
        item["path"],
        f"  version     {item['version']} ({item['byte_order']}-endian, $DATATYPE {item['datatype']})",
        f"  instrument  {item['cytometer'] or '(no $CYT)'}",
        f"  events      {item['event_count']}",
        f"  data sets   {item['dataset_count']}",
        "  spillover   " + (f"{spillover['keyword']}, {len(spillover['channels'])} channels"
                            if spillover else "none"),
        f"  sha256      {item['sha256']}",
        f"  channels    {len(item['channels'])}",
    ]
    width = max(len(c["name"]) for c in item["channels"])
    for c in item["channels"]:
        log = " log" if c["amplification"][0] > 0 else ""
        lines.append(f"    {c['index']:>3}  {c['name']:<{width}}  {c['stain'] or '-'}{log}")
    if item["warnings"]:
        lines.append("  warnings")
        lines.extend(f"    - {warning}" for warning in item["warnings"])
    return "\n".join(lines)
