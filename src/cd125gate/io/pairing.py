"""`cd125gate sheet FOLDER`: a sample sheet from a folder of tubes, pairing stained and control by name.

A pattern is a pair of file names around ``{id}``, e.g. ``{id}_stained.fcs``
and ``{id}_control.fcs``. The first pattern whose stained name matches a file
decides its sample id and the control it looks for. A stained tube without its
control still becomes a row (the threshold then falls back, and is flagged);
a control without its stained tube, and a file no pattern explains, are
reported and left out. The sheet is written beside the tubes (paths relative
to it), and is never written over unless asked.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from cd125gate.errors import InputError
from cd125gate.io.samplesheet import SAMPLE_ID_PATTERN

DEFAULT_PATTERNS = ("{id}_stained.fcs:{id}_control.fcs", "{id}.fcs:{id}_FMO.fcs")


@dataclass(frozen=True)
class Pairing:
    """What a folder holds: (sample id, stained file, control file or None) rows, and the files left out."""

    rows: tuple[tuple[str, str, str | None], ...]
    left_out: tuple[tuple[str, str], ...]     # (file name, why)


def parse_pattern(text: str) -> tuple[re.Pattern[str], str]:
    """``"{id}_stained.fcs:{id}_control.fcs"`` -> (stained regex, control template)."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.count("{id}") == 1 for p in parts):
        raise InputError("--pattern", f"{text!r} is not STAINED:CONTROL with {{id}} once in each, "
                                      "e.g. {id}_stained.fcs:{id}_control.fcs")
    before, after = parts[0].split("{id}")
    return re.compile(f"^{re.escape(before)}(.+?){re.escape(after)}$", re.IGNORECASE), parts[1]


def pair_folder(names: Collection[str], patterns: tuple[str, ...] = DEFAULT_PATTERNS) -> Pairing:
    """Pair the file ``names`` of a folder into rows; first the pairs, then stained tubes alone."""
    compiled = [parse_pattern(p) for p in patterns]
    by_lower = {n.lower(): n for n in names}
    rows, claimed = [], set()
    for stained, control_template in compiled:  # pairs first, so a control is never taken as stained
        for name in sorted(set(names) - claimed):
            match = stained.match(name)
            control = match and by_lower.get(control_template.replace("{id}", match.group(1)).lower())
            if control and control != name and control not in claimed:
                rows.append((match.group(1), name, control))
                claimed.update((name, control))
    left_out = []
    for name in sorted(set(names) - claimed):
        if _looks_like_control(name, compiled):
            left_out.append((name, "a control tube without its stained tube"))
        elif any(stained.match(name) for stained, _ in compiled):
            rows.append((next(s.match(name).group(1) for s, _ in compiled if s.match(name)), name, None))
        else:
            left_out.append((name, "matches no pattern"))
    bad = [r for r in rows if not re.match(SAMPLE_ID_PATTERN, r[0])]
    left_out += [(fcs, f"'{sample_id}' cannot be a sample id (letters, digits, . _ -)")
                 for sample_id, fcs, _ in bad]
    return Pairing(tuple(sorted(r for r in rows if r not in bad)), tuple(left_out))


def _looks_like_control(name, compiled):
    return any(re.match("^" + re.escape(t).replace(r"\{id\}", ".+") + "$", name, re.IGNORECASE)
               for _, t in compiled)


def sheet_text(pairing: Pairing) -> str:
    """The sample sheet (sample_id, fcs, control) of a pairing, paths relative to the folder."""
    lines = ["sample_id\tfcs\tcontrol"]
    lines += [f"{sample_id}\t{fcs}\t{control or ''}" for sample_id, fcs, control in pairing.rows]
    return "\n".join(lines) + "\n"
