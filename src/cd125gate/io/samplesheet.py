"""The sample sheet: one stained tube (and its control) per row, checked before any analysis.

A sheet is a tab-separated file with a header row. ``sample_id`` and ``fcs``
are required; ``control``, ``patient_id``, ``specimen``, ``compensation`` and
``notes`` are optional (and ``beads``, ``bead_lot``: a calibration bead tube and its
lot file, for the CD125 density). ``compensation`` is a matrix CSV, or the word
``precompensated`` (the tubes hold events already compensated). Relative paths resolve against the sheet's folder, so
a sheet and its FCS files can move together. Every row has one cell per header
column (an empty cell is written as such, between two tabs), and a quoted cell
("...", with "" for a quote) must close on its own line: anything else is
refused naming the line, since a lost tab or an open quote would otherwise move
values into the wrong column or swallow later rows.

A bad sheet stops a run before any job; a listed file that exists but cannot be
read is a bad *sample* instead, and ends as a FAILED result.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cd125gate.errors import InputError

# The word that declares a tube already compensated, in place of a matrix CSV (the
# sample sheet's `compensation` column, `cd125gate analyze --compensation`). Defined
# here, with the sheet that reads it, so that checking a sheet never loads numpy.
PRECOMPENSATED = "precompensated"

REQUIRED_COLUMNS = ("sample_id", "fcs")
OPTIONAL_COLUMNS = ("control", "patient_id", "specimen", "compensation", "notes", "cd125_clone",
                    "cd125_fluorochrome", "cd125_lot", "beads", "bead_lot")
TEXT_COLUMNS = ("patient_id", "specimen", "notes", "cd125_clone", "cd125_fluorochrome", "cd125_lot")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
PATH_COLUMNS = ("fcs", "control", "compensation", "beads", "bead_lot")

# A sample ID names an output folder and appears in Snakemake job names and
# shell commands: no separators, spaces, quotes or a leading dot.
SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


@dataclass(frozen=True)
class Sample:
    """One row of the sample sheet, with paths made absolute."""

    sample_id: str
    fcs: Path
    control: Path | None = None
    compensation: Path | None = None      # matrix CSV
    precompensated: bool = False           # `compensation` said `precompensated`
    patient_id: str | None = None
    specimen: str | None = None
    notes: str | None = None
    cd125_clone: str | None = None         # the anti-CD125 reagent, when it differs from the settings'
    cd125_fluorochrome: str | None = None
    cd125_lot: str | None = None
    beads: Path | None = None             # calibration bead tube: the CD125 density (none: no density)
    bead_lot: Path | None = None          # its lot file (none: the settings' beads)
    line: int = 0          # line of the sheet the sample came from, for messages


def read_sheet(path: str | Path) -> list[Sample]:
    """
    Read and check a sample sheet.

    Parameters
    ----------
    path : str or Path
        Tab-separated sample sheet.

    Returns
    -------
    list of Sample
        In sheet order.

    Raises
    ------
    InputError
        Naming the sheet, the line and the problem: unreadable sheet, missing
        or unknown column, empty sheet, bad or duplicate sample ID, missing
        file.
    """
    path = Path(path)
    header, rows = _read_table(path)
    _check_header(path, header)
    samples = [_parse_row(path, header, cells, line) for line, cells in rows]
    if not samples:
        raise InputError(path, "the sheet lists no samples")
    _check_unique(path, samples)
    return samples


def _read_table(path):
    """Header and ``(line number, cells)`` of the non-blank rows; cells stripped.

    Each line is one row: a quoted cell may hold a tab but never a line break.
    (Letting a quote run across lines made a cell starting with '"' swallow every
    later row, so samples vanished without a word.)
    """
    if path.exists() and not path.is_file():
        # A FIFO would block and /dev/zero never end: only regular files are read.
        raise InputError(path, "the sample sheet is not a regular file")
    try:
        # utf-8-sig: sheets saved by spreadsheet programs often start with a BOM.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "sample sheet not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read sample sheet: {exc}") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        cells = _split_line(path, number, line)
        if any(cell.strip() for cell in cells):
            lines.append((number, [cell.strip() for cell in cells]))
    if not lines:
        raise InputError(path, "the sheet is empty (expected a header row: sample_id, fcs, ...)")
    return lines[0][1], lines[1:]


def _split_line(path, number, line):
    try:
        # strict: a quote that is not closed on its line, or text after a closing quote, is an error.
        return next(csv.reader([line], delimiter="\t", strict=True), [])
    except csv.Error:
        raise InputError(path, f"line {number}: a quote (\") is not closed on this line or is followed by "
                               "text; quote whole cells (\"...\") or remove the quote") from None


def _check_header(path, header):
    seen = set()
    for name in header:
        if name not in COLUMNS:
            raise InputError(
                path, f"line 1: unknown column '{name}' (allowed: {', '.join(COLUMNS)})"
            )
        if name in seen:
            raise InputError(path, f"line 1: column '{name}' appears twice")
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            raise InputError(path, f"line 1: required column '{name}' is missing")


def _parse_row(path, header, cells, line):
    if len(cells) != len(header):
        # A row with fewer cells is as suspect as one with more: a lost tab shifts
        # every later cell into the wrong column. Empty cells must be written as such.
        raise InputError(
            path, f"line {line}: {len(cells)} cells but the header has {len(header)} columns "
                  "(write an empty cell between two tabs)"
        )
    values = dict(zip(header, cells))
    sample_id = values["sample_id"]
    if not re.fullmatch(SAMPLE_ID_PATTERN, sample_id):
        raise InputError(
            path,
            f"line {line}: sample_id '{sample_id}' is not allowed: use 1-100 letters, digits,"
            " '.', '_' or '-', starting with a letter or digit",
        )
    if not values["fcs"]:
        raise InputError(path, f"line {line}: sample '{sample_id}' has no fcs file")
    precompensated = values.get("compensation", "").lower() == PRECOMPENSATED
    if precompensated:
        values["compensation"] = ""  # a word, not a matrix file
    paths = {
        name: _existing_file(path, line, sample_id, name, values.get(name, ""))
        for name in PATH_COLUMNS
    }
    if paths["control"] is not None and os.path.samefile(paths["fcs"], paths["control"]):
        raise InputError(path, f"line {line}: sample '{sample_id}' names the stained tube as its own control")
    texts = {name: values.get(name) or None for name in TEXT_COLUMNS}
    return Sample(sample_id=sample_id, line=line, precompensated=precompensated, **paths, **texts)


def same_tube_pairs(samples: list[Sample]) -> list[Sample]:
    """Samples whose control file has the stained file's SHA-256 (a copy of it), hashing only equal sizes."""
    from cd125gate.io.fileio import sha256_file

    return [s for s in samples if s.control is not None
            and s.fcs.stat().st_size == s.control.stat().st_size
            and sha256_file(s.fcs) == sha256_file(s.control)]


def _existing_file(sheet, line, sample_id, column, value):
    """Absolute path of ``value`` (relative to the sheet's folder), or None if empty."""
    if not value:
        return None
    file = Path(os.path.abspath(sheet.parent / value))
    if not file.is_file():
        problem = ("is a folder, not a file" if file.is_dir()
                   else "is not a regular file" if file.exists() else "does not exist")  # a FIFO would block
        raise InputError(
            sheet, f"line {line}: sample '{sample_id}': {column} file {value} ({file}) {problem}"
        )
    return file


def _check_unique(path, samples):
    # Case-insensitive: on macOS and Windows, S1 and s1 would share one output folder.
    first = {}
    for sample in samples:
        key = sample.sample_id.lower()
        if key in first:
            raise InputError(
                path,
                f"line {sample.line}: sample_id '{sample.sample_id}' duplicates"
                f" '{first[key].sample_id}' on line {first[key].line}",
            )
        first[key] = sample
