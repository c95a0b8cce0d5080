"""The audit trail (``audit.tsv``): every reviewer decision the batch applied, appended once, never rewritten.

Each row says who decided what, when and why, on which result (its digest
before and after: a REGATE makes a new result) and from which line of which
reviews file. `check_audit` stops a run whose reviews file lost a decision
the trail records: lines only accumulate.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cd125gate.review.reviews import Final, Review

AUDIT_COLUMNS = ("recorded_at", "sample_id", "decision", "reviewer", "date", "reason", "gates", "gates_sha256",
                 "result_sha256_before", "result_sha256_after", "final", "reviews_file", "reviews_line")
# The audit trail as cd125gate 0.x wrote it before REGATE lines bound their gates file: still read.
AUDIT_COLUMNS_V1 = tuple(c for c in AUDIT_COLUMNS if c != "gates_sha256")
# What identifies a decision: what it says, never where its line sits in which file.
DECISION_KEY = ("sample_id", "result_sha256_before", "decision", "reviewer", "date", "reason", "gates_sha256")
# Tabs and line breaks inside a cell would shift or split an audit row.
BLANK_CONTROL = str.maketrans("\t\r\n", "   ")


def audit_rows(applied: Iterable[tuple[Final, str]],
               reviewed_digests: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Audit rows (dicts, without ``recorded_at``) for the decisions applied.

    Parameters
    ----------
    applied : list of (Final, result_sha256)
        The final status of each reviewed sample and the digest of its automatic result.
    reviewed_digests : dict, optional
        sample_id -> SHA-256 of ``reviewed_result.json`` (REGATE); the result *after* the
        decision. For other decisions the result is unchanged: before == after.
    """
    reviewed_digests = reviewed_digests or {}
    rows = []
    for status, before in applied:
        r = status.review
        if r is None:
            continue
        after = reviewed_digests.get(r.sample_id, before) if r.decision == "REGATE" else before
        rows.append({"sample_id": r.sample_id, "decision": r.decision, "reviewer": r.reviewer,
                     "date": r.date, "reason": r.reason, "gates": str(r.gates or ""),
                     "gates_sha256": r.gates_sha256,
                     "result_sha256_before": before, "result_sha256_after": after,
                     "final": status.final, "reviews_file": r.source, "reviews_line": str(r.line)})
    return rows


def _decision_key(row):
    # What was decided, as `Review.key` says it: the same decision is one event wherever its line sits.
    return tuple(str(row.get(c) or "").translate(BLANK_CONTROL).strip() for c in DECISION_KEY)


def read_audit(path: Path | str) -> list[dict[str, str]]:
    """The rows of an ``audit.tsv`` (an empty list when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read audit trail: {exc}") from None
    if rows and tuple(rows[0]) not in (AUDIT_COLUMNS, AUDIT_COLUMNS_V1):
        raise InputError(path, f"not a cd125gate audit trail (columns {', '.join(rows[0])})")
    return rows


def _audit_header(path):
    """The columns of an existing audit trail (an older one keeps its own), else today's."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline().rstrip("\r\n")
    except FileNotFoundError:
        return AUDIT_COLUMNS
    return tuple(first.split("\t")) if first else AUDIT_COLUMNS


def known_digests(audit: Iterable[dict[str, str]]) -> dict[str, set[str]]:
    """sample_id -> digests of the results that earlier decisions were applied to."""
    known = {}
    for row in audit:
        known.setdefault(row["sample_id"], set()).add(row["result_sha256_before"])
    return known


def append_audit(path: Path | str, rows: list[dict[str, str]], recorded_at: str) -> list[dict[str, str]]:
    """Append the rows not already recorded; returns the rows appended.

    The file is only ever appended to: earlier lines are never rewritten, so
    the trail of who decided what, on which result, survives every rerun.
    """
    path = Path(path)
    seen = {_decision_key(row) for row in read_audit(path)}
    new = []
    for row in rows:
        key = _decision_key(row)
        if key not in seen:
            seen.add(key)
            new.append(row)
    if not new:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    header = not path.exists() or path.stat().st_size == 0
    columns = AUDIT_COLUMNS if header else _audit_header(path)
    with open(path, "a", encoding="utf-8") as handle:
        if header:
            handle.write("\t".join(AUDIT_COLUMNS) + "\n")
        for row in new:
            cells = [recorded_at] + [str(row.get(c, "")) for c in columns[1:]]
            handle.write("\t".join(c.translate(BLANK_CONTROL) for c in cells) + "\n")
        handle.flush()
    return new


def check_audit(reviews: Iterable[Review], audit: Iterable[dict[str, str]], source: Path | str | None,
                audit_path: Path | str = "audit.tsv") -> None:
    """Stop when ``audit.tsv`` records a decision the reviews file no longer holds.

    Lines only accumulate: a lost line would silently un-sign a sample. Decisions are
    matched by what they say (`Review.key`), never by file name or line number.

    Parameters
    ----------
    reviews : list of Review
    audit : list of dict
        Rows of ``audit.tsv``.
    source : str or Path or None
        The reviews file (None: the run names none).
    """
    held = {review.key() for review in reviews}
    held_v1 = {key[:-1] for key in held}  # rows of an older audit carry no gates digest
    for row in audit:
        key = _decision_key(row)
        if key in held or (not row.get("gates_sha256") and key[:-1] in held_v1):
            continue
        what = (f"{row['decision']} of sample '{row['sample_id']}' by {row['reviewer']} on {row['date']} "
                f"(recorded in {audit_path} at {row['recorded_at']})")
        if source is None:
            raise InputError(audit_path, f"records {what}, but this run names no reviews file; "
                                         "name the batch's reviews file (reviews: PATH)")
        raise InputError(source, f"{what} is no longer in this file; lines only accumulate "
                                 "(take a decision back with a WITHDRAW line and a reason)")
