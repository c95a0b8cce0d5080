"""Reviewer decisions as data: the reviews file, the final status of each sample, the audit trail.

A review never edits a result. A reviewer writes one line per decision in a
TSV file (``reviews: PATH`` in the workflow config)::

    sample_id  result_sha256  decision  reviewer  date  reason  gates

``result_sha256`` is the SHA-256 of the ``result.json`` the reviewer looked
at: the line binds to exactly that result. When the result changes (new
settings, new software), the line is *stale* and the sample needs review
again. Lines accumulate: a sample's latest line that applies is the one that
counts, earlier ones stay as history.

Two moments check the lines:

* before any job (`check`): every line must name a sample of the batch, a
  decision we know, a reviewer, an ISO date, a reason (all but ACCEPT), a
  Gating-ML file (REGATE) and the digest of the sample's current result, or
  of an earlier result that this batch already recorded in ``audit.tsv`` (an
  old review that a later result made stale). Anything else stops the run
  with one line naming the file, the line and the problem.
* when the screening table is built (`final_status`): a line whose digest is
  not the current result's is stale and does not apply.
"""

import csv
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .errors import InputError

DECISIONS = ("ACCEPT", "OVERRIDE_MET", "OVERRIDE_NOT_MET", "REJECT", "REGATE")
FINALS = ("MET", "NOT_MET", "PENDING_REVIEW", "REJECTED", "FAILED")
SIGNOFF = ("review_only", "all")
REQUIRED_COLUMNS = ("sample_id", "result_sha256", "decision", "reviewer", "date", "reason")
COLUMNS = REQUIRED_COLUMNS + ("gates",)
AUDIT_COLUMNS = ("recorded_at", "sample_id", "decision", "reviewer", "date", "reason", "gates",
                 "result_sha256_before", "result_sha256_after", "final", "reviews_file", "reviews_line")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Tabs and line breaks inside a cell would shift or split an audit row.
BLANK_CONTROL = str.maketrans("\t\r\n", "   ")


@dataclass(frozen=True)
class Review:
    """One decision line of a reviews file."""

    sample_id: str
    result_sha256: str
    decision: str
    reviewer: str
    date: str           # ISO 8601 date (YYYY-MM-DD)
    reason: str
    gates: Path | None  # the edited Gating-ML of a REGATE, resolved against the reviews file's folder
    source: str         # the reviews file
    line: int           # its line number (1 = header)

    def where(self):
        return f"{self.source}: line {self.line}"


@dataclass(frozen=True)
class Final:
    """A sample's final status and the review behind it (None fields: no review applied)."""

    final: str
    review: Review | None = None
    stale: Review | None = None   # the latest line for this sample, when it no longer applies
    note: str = ""                # why the status is what it is, for the reviewer

    def columns(self):
        """The screening-table columns of this status."""
        r = self.review
        return {
            "final": self.final,
            "reviewed_by": r.reviewer if r else None,
            "reviewed_at": r.date if r else None,
            "review_decision": r.decision if r else None,
            "review_reason": (r.reason or None) if r else None,
            "review_note": self.note or None,
        }


# --- reading -------------------------------------------------------------------------------------


def read_reviews(path):
    """The decision lines of a reviews file, each checked on its own (not yet against results).

    Blank lines and lines starting with ``#`` are skipped; line numbers count every line.

    Raises
    ------
    InputError
        ``"{path}: line N: {problem}"`` for the first bad line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read reviews file: {exc}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(path, "reviews file is empty (it needs a header line)")
    header_line, header = lines[0]
    names = [name.strip() for name in header.split("\t")]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(path, f"line {header_line}: header lacks column(s) {', '.join(missing)} "
                               f"(expected {', '.join(COLUMNS)}, tab-separated)")
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise InputError(path, f"line {header_line}: unknown column(s) {', '.join(unknown)}")
    reviews = []
    for number, line in lines[1:]:
        cells = line.split("\t")
        if len(cells) > len(names):
            raise InputError(path, f"line {number}: {len(cells)} cells but the header has {len(names)} "
                                   "(a tab inside a reason?)")
        record = dict(zip(names, (c.strip() for c in cells)))
        reviews.append(_review(record, path, number))
    return reviews


def _review(record, path, number):
    def bad(problem):
        return InputError(path, f"line {number}: {problem}")

    sample_id = record.get("sample_id", "")
    decision = record.get("decision", "")
    digest = record.get("result_sha256", "").lower()
    if not sample_id:
        raise bad("sample_id is empty")
    if decision not in DECISIONS:
        raise bad(f"unknown decision {decision!r} for sample '{sample_id}' (choose from {', '.join(DECISIONS)})")
    if not SHA256.match(digest):
        raise bad(f"result_sha256 of sample '{sample_id}' is not a SHA-256 digest (64 hex digits)")
    if not record.get("reviewer"):
        raise bad(f"{decision} of sample '{sample_id}' names no reviewer")
    try:
        date.fromisoformat(record.get("date", ""))
        if len(record["date"]) != 10:
            raise ValueError
    except (ValueError, KeyError):
        raise bad(f"date {record.get('date', '')!r} of sample '{sample_id}' is not a date YYYY-MM-DD") from None
    reason = record.get("reason", "")
    if decision != "ACCEPT" and not reason:
        raise bad(f"{decision} of sample '{sample_id}' gives no reason (required for all but ACCEPT)")
    gates = record.get("gates") or None
    if decision == "REGATE":
        if gates is None:
            raise bad(f"REGATE of sample '{sample_id}' names no edited Gating-ML in the gates column")
        gates = (path.parent / gates).resolve() if not Path(gates).is_absolute() else Path(gates)
        if not gates.is_file():
            raise bad(f"REGATE of sample '{sample_id}': gates file {gates} does not exist")
    elif gates is not None:
        raise bad(f"{decision} of sample '{sample_id}' names a gates file; only REGATE uses one")
    return Review(sample_id, digest, decision, record["reviewer"], record["date"], reason,
                  gates, str(path), number)


# --- checking against the batch ------------------------------------------------------------------


def check(reviews, current, known=None, criteria=None):
    """Check review lines against the batch before any job runs.

    Parameters
    ----------
    reviews : list of Review
    current : dict
        sample_id -> SHA-256 of its current result.json, or None when it has no result yet,
        for every sample of the batch.
    known : dict, optional
        sample_id -> set of digests of earlier results of this batch (from ``audit.tsv``):
        a line naming one of them is an old review made stale by a later result, not an error.
    criteria : dict, optional
        sample_id -> automatic criterion of the current result, to refuse decisions that
        do not fit it (an override of a FAILED analysis, an ACCEPT of a REVIEW).

    Raises
    ------
    InputError
        For the first bad line, naming the file and the line.
    """
    known = known or {}
    criteria = criteria or {}
    for review in reviews:
        def bad(problem):
            return InputError(review.source, f"line {review.line}: {problem}")

        sid = review.sample_id
        if sid not in current:
            raise bad(f"unknown sample '{sid}' (not in this batch's sample sheet)")
        if review.result_sha256 in known.get(sid, ()):
            continue  # an old review: stale now, kept as history
        if current[sid] is None:
            raise bad(f"sample '{sid}' has no result.json yet: a review must name the result it signs")
        if review.result_sha256 != current[sid]:
            raise bad(f"stale digest for sample '{sid}': the line names result {review.result_sha256[:12]}…, "
                      f"the current result.json is {current[sid][:12]}… (review the current result)")
        problem = decision_problem(review.decision, criteria.get(sid))
        if problem:
            raise bad(f"{review.decision} of sample '{sid}': {problem}")


def decision_problem(decision, criterion):
    """Why ``decision`` cannot resolve a result with this automatic ``criterion``, or None.

    A REVIEW has no answer to accept: the reviewer must say which (override),
    re-acquire (reject) or re-gate. A FAILED analysis has no data to override.
    """
    if criterion == "REVIEW" and decision == "ACCEPT":
        return "a REVIEW result has no answer to accept; use OVERRIDE_MET, OVERRIDE_NOT_MET, REJECT or REGATE"
    if criterion == "FAILED" and decision in ("OVERRIDE_MET", "OVERRIDE_NOT_MET"):
        return "a FAILED analysis cannot be overridden; use REJECT (re-acquire) or REGATE"
    return None


def latest_by_sample(reviews):
    """sample_id -> its last line in file order (later lines supersede earlier ones)."""
    latest = {}
    for review in reviews:
        latest[review.sample_id] = review
    return latest


def regate_lines(reviews):
    """sample_id -> the REGATE line that applies when it is the sample's latest line."""
    return {sid: r for sid, r in latest_by_sample(reviews).items() if r.decision == "REGATE"}


# --- the final status ----------------------------------------------------------------------------


def final_status(criterion, result_sha256, review=None, signoff="review_only", regated_criterion=None):
    """The final status of one sample.

    Parameters
    ----------
    criterion : str
        The automatic criterion (MET, NOT_MET, REVIEW, FAILED).
    result_sha256 : str
        SHA-256 of the current result.json.
    review : Review or None
        The sample's latest review line.
    signoff : str
        ``review_only``: MET / NOT_MET stand without a review; ``all``: they need one too.
    regated_criterion : str or None
        The criterion of ``reviewed_result.json`` for a REGATE (None: not yet computed).

    Returns
    -------
    Final
    """
    if signoff not in SIGNOFF:
        raise ValueError(f"signoff must be one of {SIGNOFF}, not {signoff!r}")
    unreviewed = _unreviewed(criterion, signoff)
    if review is None:
        return Final(unreviewed)
    if review.result_sha256 != result_sha256:
        # The result changed since the reviewer signed it: the old decision says nothing about it.
        note = f"{review.decision} by {review.reviewer} on {review.date} is stale: the result changed since"
        return Final("FAILED" if criterion == "FAILED" else "PENDING_REVIEW", None, review, note)
    if decision_problem(review.decision, criterion):
        # `check` refuses these before a run; a result that changed into this state mid-run lands here.
        return Final(unreviewed, None, review, decision_problem(review.decision, criterion))
    if review.decision == "ACCEPT":
        return Final(criterion if criterion in ("MET", "NOT_MET") else "FAILED", review)
    if review.decision == "OVERRIDE_MET":
        return Final("MET", review)
    if review.decision == "OVERRIDE_NOT_MET":
        return Final("NOT_MET", review)
    if review.decision == "REJECT":
        return Final("REJECTED", review)
    # REGATE: the reviewed gates decide; a reviewed REVIEW still needs a reviewer's answer.
    if regated_criterion is None:
        return Final("PENDING_REVIEW", review, note="re-gating not computed yet")
    final = {"MET": "MET", "NOT_MET": "NOT_MET", "FAILED": "FAILED"}.get(regated_criterion, "PENDING_REVIEW")
    return Final(final, review)


def _unreviewed(criterion, signoff):
    if criterion == "FAILED":
        return "FAILED"
    if criterion == "REVIEW" or signoff == "all":
        return "PENDING_REVIEW"
    return criterion


# --- the audit trail -----------------------------------------------------------------------------


def audit_rows(applied, reviewed_digests=None):
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
                     "result_sha256_before": before, "result_sha256_after": after,
                     "final": status.final, "reviews_file": r.source, "reviews_line": str(r.line)})
    return rows


def _audit_key(row):
    # Everything but the time of recording: the same decision on the same results is one event.
    return tuple(str(row.get(c, "")).translate(BLANK_CONTROL) for c in AUDIT_COLUMNS[1:])


def read_audit(path):
    """The rows of an ``audit.tsv`` (an empty list when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read audit trail: {exc}") from None
    if rows and list(rows[0]) != list(AUDIT_COLUMNS):
        raise InputError(path, f"not a cd125gate audit trail (columns {', '.join(rows[0])})")
    return rows


def known_digests(audit):
    """sample_id -> digests of the results that earlier decisions were applied to."""
    known = {}
    for row in audit:
        known.setdefault(row["sample_id"], set()).add(row["result_sha256_before"])
    return known


def append_audit(path, rows, recorded_at):
    """Append the rows not already recorded; returns the rows appended.

    The file is only ever appended to: earlier lines are never rewritten, so
    the trail of who decided what, on which result, survives every rerun.
    """
    path = Path(path)
    seen = {_audit_key(row) for row in read_audit(path)}
    new = []
    for row in rows:
        key = _audit_key(row)
        if key not in seen:
            seen.add(key)
            new.append(row)
    if not new:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    header = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8") as handle:
        if header:
            handle.write("\t".join(AUDIT_COLUMNS) + "\n")
        for row in new:
            cells = [recorded_at] + [str(row.get(c, "")) for c in AUDIT_COLUMNS[1:]]
            handle.write("\t".join(c.translate(BLANK_CONTROL) for c in cells) + "\n")
        handle.flush()
    return new
