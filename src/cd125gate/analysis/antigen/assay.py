"""Assay metadata a reviewer checks: when and on what the tube was acquired, and the CD125 reagent.

Acquisition date and time, instrument, serial, operator and tube name come
from the stained tube's FCS keywords; the CD125 antibody's clone,
fluorochrome and lot from the settings (``panel.cd125_reagent``, per panel)
or, per sample, from the sample sheet. Missing values stay None: a reviewer
sees what is not recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cd125gate.settings import Reagent

FIELDS = ("acquisition_date", "acquisition_time", "instrument", "instrument_serial", "operator",
          "tube_name", "cd125_clone", "cd125_fluorochrome", "cd125_lot")
# FCS keywords of the assay metadata, first one present wins ($CYTSN is FCS 3.1; CYTNUM is BD's).
KEYWORDS = {
    "instrument": ("$CYT",),
    "instrument_serial": ("$CYTSN", "CYTNUM", "$CYTNUM"),
    "operator": ("$OP", "EXPORT USER NAME"),
    "tube_name": ("TUBE NAME", "$SRC"),
}
_DATE_NUMBER = re.compile(r"[0-9]{1,4}")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def record(keywords: Mapping[str, object], reagent: Reagent, sample: Mapping[str, str] | None = None) -> dict:
    """The ``assay`` block of a result: FCS keywords, then the reagent (the sample's own values win)."""
    sample = sample or {}
    values = dict(from_keywords(keywords))
    for name in ("clone", "fluorochrome", "lot"):
        values[f"cd125_{name}"] = sample.get(f"cd125_{name}") or getattr(reagent, name)
    return values


def from_keywords(keywords: Mapping[str, object]) -> dict[str, str | None]:
    """Acquisition date and time, instrument, serial, operator and tube name from FCS keywords.

    Missing keywords give None: a reviewer sees what the file does not say.
    """
    def first(names: tuple[str, ...]) -> str | None:
        for name in names:
            value = str(keywords.get(name, "")).strip()
            if value:
                return value
        return None

    meta = {name: first(names) for name, names in KEYWORDS.items()}
    meta["acquisition_date"] = fcs_date(first(("$DATE",)))
    meta["acquisition_time"] = first(("$BTIM",))
    return meta


def fcs_date(text: str | None) -> str | None:
    """An FCS ``$DATE`` (dd-mmm-yyyy) as an ISO date; other spellings are kept as written."""
    if text is None:
        return None
    parts = text.strip().split("-")
    # ASCII digits, at most 4: isdigit() also accepts '²' (int() refuses it) and int() of a
    # 4,301-digit year raised Python's integer-digit-limit ValueError (a traceback in analyze).
    if len(parts) == 3 and parts[1].upper() in MONTHS and all(_DATE_NUMBER.fullmatch(p) for p in parts[::2]):
        year = int(parts[2]) + (1900 if len(parts[2]) == 2 else 0)  # FCS 2.0 wrote dd-mmm-yy
        return f"{year:04d}-{MONTHS.index(parts[1].upper()) + 1:02d}-{int(parts[0]):02d}"
    return text.strip()
