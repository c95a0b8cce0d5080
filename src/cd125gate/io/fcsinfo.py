"""What an FCS file holds, as a JSON-ready summary and as text (`cd125gate inspect`, in cli.inspect).

(Named ``fcsinfo`` rather than ``inspect``, which would shadow the standard library module.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cd125gate.io.fcs import FCSData


def summary(fcs: FCSData) -> dict[str, Any]:
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


def strict_json(item: dict[str, Any]) -> dict[str, Any]:
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


def format_text(item: dict[str, Any]) -> str:
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
