"""Reviewer decisions as data: the reviews file, the final status of each sample, the audit trail.

A review never edits a result. A reviewer writes one line per decision in a
TSV file (``reviews: PATH`` in the workflow config)::

    sample_id  result_sha256  decision  reviewer  date  reason  gates  gates_sha256

``result_sha256`` is the SHA-256 of the ``result.json`` the reviewer looked
at: the line binds to exactly that result. When the result changes (new
settings, new software), the line is *stale* and the sample needs review
again. A REGATE binds its edited gates file the same way (``gates_sha256``).
Lines accumulate: a sample's latest line is the one that counts, earlier ones
stay as history, and a decision is taken back only by a WITHDRAW line.

Two moments check the lines:

* before any job (`check`): every line must name a sample of the batch, a
  decision we know, a reviewer, an ISO date, a reason (all but ACCEPT), a
  Gating-ML file whose digest is the one signed (REGATE) and the digest of
  the sample's current result, or of an earlier result that this batch
  already recorded in ``audit.tsv`` (an old review that a later result made
  stale); and every decision ``audit.tsv`` records must still be in the file
  (`check_audit`). Anything else stops the run with one line naming the
  file, the line and the problem.
* when the screening table is built (`final_status`): a line whose digest is
  not the current result's is stale and does not apply.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable

DECISIONS = ("ACCEPT", "OVERRIDE_MET", "OVERRIDE_NOT_MET", "REJECT", "REGATE", "WITHDRAW")
FINALS = ("MET", "NOT_MET", "PENDING_REVIEW", "REJECTED", "FAILED")
SIGNOFF = ("review_only", "all")
REQUIRED_COLUMNS = ("sample_id", "result_sha256", "decision", "reviewer", "date", "reason")
COLUMNS = REQUIRED_COLUMNS + ("gates", "gates_sha256")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    gates_sha256: str = ""  # SHA-256 of the gates file as the reviewer signed it (REGATE)

    def where(self) -> str:
        return f"{self.source}: line {self.line}"

    def key(self) -> tuple[str, ...]:
        """What the line decides (the audit trail's key): the same decision wherever the line sits."""
        return (self.sample_id, self.result_sha256, self.decision, self.reviewer, self.date, self.reason,
                self.gates_sha256)

    def decision_id(self) -> str:
        """A short name of this decision for file names (the regate job's output)."""
        import hashlib

        return hashlib.sha256("\t".join(self.key()).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Final:
    """A sample's final status and the review behind it (None fields: no review applied)."""

    final: str
    review: Review | None = None
    stale: Review | None = None   # the latest line for this sample, when it no longer applies
    note: str = ""                # why the status is what it is, for the reviewer

    def columns(self) -> dict[str, str | None]:
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


def read_reviews(path: Path | str) -> list[Review]:
    """The decision lines of a reviews file, each checked on its own (not yet against results).

    Blank lines and lines starting with ``#`` are skipped; line numbers count every line.

    Raises
    ------
    InputError
        ``"{path}: line N: {problem}"`` for the first bad line.
    """
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(_read_text(path).splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(path, "reviews file is empty (it needs a header line)")
    header_line, header = lines[0]
    names = [name.strip() for name in _cells(header)]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(path, f"line {header_line}: header lacks column(s) {', '.join(missing)} "
                               f"(expected {', '.join(COLUMNS)}, tab-separated)")
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise InputError(path, f"line {header_line}: unknown column(s) {', '.join(unknown)}")
    reviews = []
    for number, line in lines[1:]:
        cells = _cells(line)
        if len(cells) > len(names):
            raise InputError(path, f"line {number}: {len(cells)} cells but the header has {len(names)} "
                                   "(a tab inside a reason?)")
        record = dict(zip(names, (c.strip() for c in cells)))
        reviews.append(_review(record, path, number))
    return reviews


def _read_text(path):
    """The text of a reviews file: UTF-8, with or without the byte-order mark Excel and Notepad write."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read reviews file: {exc.strerror or exc}") from None
    # Excel's "Unicode Text" is UTF-16: say so rather than show a codec error.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:200]:
        raise InputError(path, "reviews file is UTF-16 text; save it as UTF-8 "
                               "(Excel: 'Tab delimited text', not 'Unicode Text')")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(path, f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                               "save the reviews file as UTF-8") from None


def _cells(line):
    """The tab-separated cells of one line; cells quoted as Excel writes them are read too."""
    return next(csv.reader([line], delimiter="\t"))


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
    gates, gates_sha256 = record.get("gates") or None, record.get("gates_sha256", "").lower()
    if decision == "REGATE":
        if gates is None:
            raise bad(f"REGATE of sample '{sample_id}' names no edited Gating-ML in the gates column")
        gates = (path.parent / gates).resolve() if not Path(gates).is_absolute() else Path(gates)
        if not gates.is_file():
            raise bad(f"REGATE of sample '{sample_id}': gates file {gates} does not exist")
        if not SHA256.match(gates_sha256):
            raise bad(f"REGATE of sample '{sample_id}': gates_sha256 is "
                      f"{'empty' if not gates_sha256 else 'not a SHA-256 digest (64 hex digits)'}; "
                      "it binds the edited gates file the reviewer signed (sha256sum of the file)")
    elif gates is not None or gates_sha256:
        raise bad(f"{decision} of sample '{sample_id}' names a gates file; only REGATE uses one")
    return Review(sample_id, digest, decision, record["reviewer"], record["date"], reason,
                  gates, str(path), number, gates_sha256)


# --- checking against the batch ------------------------------------------------------------------


def check(reviews: list[Review], current: dict[str, str | None], known: dict[str, set[str]] | None = None,
          criteria: dict[str, str] | None = None) -> None:
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
    in_effect = {}  # sample_id -> the line in effect so far (None once withdrawn)
    for review in reviews:
        problem = _line_problem(review, current, known, criteria, in_effect.get(review.sample_id))
        if problem:
            raise InputError(review.source, f"line {review.line}: {problem}")
        in_effect[review.sample_id] = None if review.decision == "WITHDRAW" else review


def _line_problem(review, current, known, criteria, earlier):
    """Why one line cannot apply to the batch, or None. ``earlier``: the sample's line in effect before it."""
    sid = review.sample_id
    if sid not in current:
        return f"unknown sample '{sid}' (not in this batch's sample sheet)"
    problem = _gates_problem(review)
    if problem:
        return problem
    if review.decision == "WITHDRAW" and (earlier is None or earlier.result_sha256 != review.result_sha256):
        return (f"WITHDRAW of sample '{sid}': no earlier decision on result {review.result_sha256[:12]}… "
                "is in effect to withdraw")
    if review.result_sha256 != current[sid] and review.result_sha256 in known.get(sid, ()):
        return None  # an old review of an earlier result: stale now, kept as history
    if current[sid] is None:
        return f"sample '{sid}' has no result.json yet: a review must name the result it signs"
    if review.result_sha256 != current[sid]:
        return digest_mismatch(sid, review.result_sha256, current[sid])
    problem = decision_problem(review.decision, criteria.get(sid))
    return f"{review.decision} of sample '{sid}': {problem}" if problem else None


def _gates_problem(review):
    """A REGATE whose gates file is no longer the one the reviewer signed, or None."""
    if review.decision != "REGATE":
        return None
    from cd125gate.io.fileio import sha256_file

    now = sha256_file(review.gates)
    if now == review.gates_sha256:
        return None
    return (f"REGATE of sample '{review.sample_id}': gates file {review.gates} is not the one signed "
            f"(gates_sha256 {_where_differs(review.gates_sha256, now)}); "
            "an edit after sign-out needs a new REGATE line")


def digest_mismatch(sample_id: str, named: str, current: str) -> str:
    """One line saying where a line's result digest differs from the current result's."""
    return (f"result_sha256 of sample '{sample_id}' is not its current result.json "
            f"({_where_differs(named, current)}): a mistyped digest, or a review of an earlier "
            "result; review the current result")


def _where_differs(named, actual):
    """'differs at character N: line …abc…, file …abd…' — enough to spot a typo, not two equal prefixes."""
    at = next(i for i, (a, b) in enumerate(zip(named, actual)) if a != b)
    first, last = max(0, at - 4), at + 8
    return (f"differs at character {at + 1}: the line has …{named[first:last]}…, "
            f"the file has …{actual[first:last]}…, in full {actual}")


def decision_problem(decision: str, criterion: str | None) -> str | None:
    """Why ``decision`` cannot resolve a result with this automatic ``criterion``, or None.

    A REVIEW has no answer to accept: the reviewer must say which (override),
    re-acquire (reject) or re-gate. A FAILED analysis has no data to override.
    """
    if criterion == "REVIEW" and decision == "ACCEPT":
        return "a REVIEW result has no answer to accept; use OVERRIDE_MET, OVERRIDE_NOT_MET, REJECT or REGATE"
    if criterion == "FAILED" and decision in ("OVERRIDE_MET", "OVERRIDE_NOT_MET"):
        return "a FAILED analysis cannot be overridden; use REJECT (re-acquire) or REGATE"
    return None


def latest_by_sample(reviews: Iterable[Review]) -> dict[str, Review]:
    """sample_id -> its last line in file order (later lines supersede earlier ones)."""
    latest = {}
    for review in reviews:
        latest[review.sample_id] = review
    return latest


def regate_lines(reviews: Iterable[Review]) -> dict[str, Review]:
    """sample_id -> the REGATE line that applies when it is the sample's latest line."""
    return {sid: r for sid, r in latest_by_sample(reviews).items() if r.decision == "REGATE"}


# --- the final status ----------------------------------------------------------------------------


def final_status(criterion: str, result_sha256: str | None, review: Review | None = None,
                 signoff: str = "review_only", regated_criterion: str | None = None) -> Final:
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
    if review.decision == "WITHDRAW":
        # The reviewer took the decision back: the sample is as if unreviewed, and says why.
        return Final(unreviewed, review, note=f"decision withdrawn by {review.reviewer} on {review.date}")
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
