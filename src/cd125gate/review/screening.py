"""The screening table: one row per sample, collected from the per-sample results.

``screening.tsv`` is for people and spreadsheets; ``screening.json`` holds the
same rows plus a batch summary, and follows ``data/screening.schema.json``.
Every result is checked against ``data/result.schema.json`` as it is read, so
a malformed result stops the batch instead of becoming a plausible row.

Each row keeps the automatic ``criterion`` and adds the ``final`` status once
reviewer decisions (``reviews.py``) are applied, with who decided, when and
why, and the assay metadata a reviewer checks (acquisition date, instrument,
operator, tube) from the FCS keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate import results
from cd125gate.analysis.antigen import assay, beads
from cd125gate.errors import InputError
from cd125gate.io.fileio import sha256_file
from cd125gate.results import REVIEWED_RESULT, SampleResult
from cd125gate.review import audit, reviews
from cd125gate.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

CRITERIA = ("MET", "NOT_MET", "REVIEW", "FAILED")
REVIEW_COLUMNS = ("final", "reviewed_by", "reviewed_at", "review_decision", "review_reason", "review_note")
ASSAY_COLUMNS = assay.FIELDS
COLUMNS = (
    "sample_id", "criterion", *REVIEW_COLUMNS, "cd125_pos_fraction", "ci_low", "ci_high", "blast_events",
    "cd125_pos_events", "threshold_method", "reasons", "flags", "patient_id", "specimen",
    "fcs_sha256", "control_sha256", "cd125gate_version", "config_digest",
    "result_sha256", "reviewed_criterion", "reviewed_cd125_pos_fraction", "reviewed_ci_low",
    "reviewed_ci_high", "reviewed_result_sha256", "threshold_value_raw", "control_pos_fraction",
    "cd125_median_ratio", *ASSAY_COLUMNS, *beads.SCREENING_COLUMNS,
)
LIST_SEPARATOR = "; "


@dataclass(frozen=True)
class ScreeningRow:
    """One row of the screening table: a sample's result, its final status and its assay metadata.

    The fields are the table's columns in order (`COLUMNS`); ``reasons`` and
    ``flags`` are tuples, lists in JSON and ``; ``-joined in the TSV.
    """

    sample_id: str
    criterion: str | None           # None only in a hand-made row that names the sample alone
    final: str | None = None
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_decision: str | None = None
    review_reason: str | None = None
    review_note: str | None = None
    cd125_pos_fraction: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    blast_events: int | None = None
    cd125_pos_events: int | None = None
    threshold_method: str | None = None
    reasons: tuple = ()
    flags: tuple = ()
    patient_id: str | None = None
    specimen: str | None = None
    fcs_sha256: str | None = None
    control_sha256: str | None = None
    cd125gate_version: str | None = None
    config_digest: str | None = None
    result_sha256: str | None = None
    reviewed_criterion: str | None = None
    reviewed_cd125_pos_fraction: float | None = None
    reviewed_ci_low: float | None = None
    reviewed_ci_high: float | None = None
    reviewed_result_sha256: str | None = None
    threshold_value_raw: float | None = None
    control_pos_fraction: float | None = None
    cd125_median_ratio: float | None = None
    # assay metadata (assay.FIELDS)
    acquisition_date: str | None = None
    acquisition_time: str | None = None
    instrument: str | None = None
    instrument_serial: str | None = None
    operator: str | None = None
    tube_name: str | None = None
    cd125_clone: str | None = None
    cd125_fluorochrome: str | None = None
    cd125_lot: str | None = None
    # CD125 density from calibration beads (beads.SCREENING_COLUMNS)
    density: str | None = None
    density_reason: str | None = None
    abc_cd125_pos_median: float | None = None
    abc_cd125_pos_q1: float | None = None
    abc_cd125_pos_q3: float | None = None
    abc_cd125_pos_specific: float | None = None
    abc_blasts_median: float | None = None
    abc_control_blasts_median: float | None = None
    bead_lot: str | None = None
    bead_slope: float | None = None
    bead_intercept: float | None = None
    bead_r2: float | None = None

    @classmethod
    def of_result(cls, result: SampleResult) -> ScreeningRow:
        """The row of one result as it is worth with no review applied (see `collect_samples`)."""
        control = result.input_file("control")
        cutoff = result.cutoff
        return cls(
            sample_id=result.sample_id, criterion=result.criterion,
            **reviews.final_status(result.criterion, None).columns(),
            cd125_pos_fraction=result.cd125_pos_fraction, ci_low=result.ci_low, ci_high=result.ci_high,
            blast_events=result.blast_events, cd125_pos_events=result.cd125_pos_events,
            threshold_method=cutoff.method if cutoff else None, reasons=result.reasons, flags=result.flags,
            patient_id=result.patient_id, specimen=result.specimen,
            fcs_sha256=result.input_file("fcs").sha256, control_sha256=control.sha256 if control else None,
            cd125gate_version=result.provenance["cd125gate_version"],
            config_digest=result.provenance["config_digest"],
            threshold_value_raw=cutoff.value_raw if cutoff else None,
            control_pos_fraction=results.control_pos_fraction(result.control_gates),
            cd125_median_ratio=result.median_ratio,
            **{name: result.assay_field(name) for name in ASSAY_COLUMNS},
            **beads.screening_columns(result.density),
        )

    @classmethod
    def from_json(cls, data: dict) -> ScreeningRow:
        """A row of ``screening.json`` (columns it lacks are None)."""
        values = {name: data[name] for name in COLUMNS if name in data}
        values.setdefault("criterion", None)
        for name in ("reasons", "flags"):
            values[name] = tuple(values[name] or ()) if name in values else ()
        return cls(**values)

    def replace(self, **changes: object) -> ScreeningRow:
        return replace(self, **changes)

    def to_json(self) -> dict:
        """The row as ``screening.json`` holds it: every column, lists as lists."""
        data = {name: getattr(self, name) for name in COLUMNS}
        data["reasons"], data["flags"] = list(self.reasons), list(self.flags)
        return data

    def cells(self) -> list[str]:
        """The row's TSV cells: empty for null, lists joined by '; ', no tabs or newlines."""
        def cell(value: object) -> str:
            if value is None:
                return ""
            if isinstance(value, tuple):
                value = LIST_SEPARATOR.join(value)
            # Tabs and line breaks inside a cell would shift or split the row.
            return str(value).translate(audit.BLANK_CONTROL)

        return [cell(getattr(self, name)) for name in COLUMNS]

    def has_assay_metadata(self) -> bool:
        return any(getattr(self, name) for name in ASSAY_COLUMNS)

    @property
    def acquired(self) -> str:
        """Acquisition date and time ('' when not recorded)."""
        return " ".join(v for v in (self.acquisition_date, self.acquisition_time) if v)

    @property
    def instrument_label(self) -> str:
        """The instrument and its serial number ('' when not recorded)."""
        serial = f"(s/n {self.instrument_serial})" if self.instrument_serial else None
        return " ".join(v for v in (self.instrument, serial) if v)


# The columns are the row's fields: a column added to assay or beads needs a field here.
if tuple(f.name for f in fields(ScreeningRow)) != COLUMNS:
    raise ImportError("screening.ScreeningRow's fields are not the screening COLUMNS")


def read_assay_metadata(result: SampleResult, base: Path | str | None = None) -> dict:
    """The assay metadata of a result: its own ``assay`` block, else the stained FCS file's keywords.

    The FCS path in a result is relative to where the analysis ran; ``base``
    is tried too. An unreadable or moved file gives empty metadata, not an
    error: the table must still be written.
    """
    from cd125gate.io.fcs import read_fcs

    if result.assay:
        return {name: result.assay_field(name) for name in ASSAY_COLUMNS}
    path = Path(result.input_file("fcs").path)
    candidates = [path] if path.is_absolute() or base is None else [path, Path(base) / path]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return assay.from_keywords(read_fcs(candidate, read_events=False).keywords)
            except InputError:
                break
    return {name: None for name in ASSAY_COLUMNS}


@dataclass
class Collected:
    """One sample as the table sees it: its row, result and the status reviews gave it."""

    path: Path
    result: SampleResult
    row: ScreeningRow
    status: reviews.Final
    reviewed: SampleResult | None = None    # reviewed_result.json of a REGATE, when current


def collect(paths: Iterable[Path | str], review_lines: list[reviews.Review] | None = None,
            signoff: str = "review_only", metadata: bool = True) -> list[ScreeningRow]:
    """
    Screening rows of the results at ``paths``, in the order given.

    Parameters
    ----------
    review_lines : list of reviews.Review, optional
        Decisions from a reviews file; each sample's latest line is applied.
    signoff : str
        ``review_only`` or ``all`` (MET / NOT_MET also wait for a review).
    metadata : bool
        Read the assay metadata from the FCS keywords when the result has none.

    Raises
    ------
    InputError
        For an invalid result, or two results for one sample ID.
    """
    return [c.row for c in collect_samples(paths, review_lines, signoff, metadata)]


def collect_samples(paths: Iterable[Path | str], review_lines: list[reviews.Review] | None = None,
                    signoff: str = "review_only", metadata: bool = True) -> list[Collected]:
    """Like `collect`, keeping each sample's result and review status (for the audit trail)."""
    latest = reviews.latest_by_sample(review_lines or [])
    samples, seen = [], {}
    for path in paths:
        result = results.load(path)
        row = ScreeningRow.of_result(result)
        if row.sample_id in seen:
            raise InputError(path, f"sample_id '{row.sample_id}' was already given by {seen[row.sample_id]}")
        seen[row.sample_id] = path
        digest = sha256_file(path)
        review = latest.get(row.sample_id)
        reviewed_path = reviewed_result_path(Path(path), review)
        reviewed = _current_reviewed_result(reviewed_path, digest, review)
        status = reviews.final_status(result.criterion, digest, review, signoff,
                                      reviewed.criterion if reviewed else None)
        failure = regate_failure(reviewed_path) if status.review is not None else None
        if failure:
            status = replace(status, note=f"re-gating failed: {failure}")
        row = row.replace(**status.columns(), result_sha256=digest)
        if reviewed is not None and status.review is not None:
            row = row.replace(reviewed_criterion=reviewed.criterion,
                              reviewed_cd125_pos_fraction=reviewed.cd125_pos_fraction,
                              reviewed_ci_low=reviewed.ci_low, reviewed_ci_high=reviewed.ci_high,
                              reviewed_result_sha256=sha256_file(reviewed_path))
        if metadata and not row.has_assay_metadata():
            row = row.replace(**read_assay_metadata(result))
        samples.append(Collected(Path(path), result, row, status, reviewed))
    return samples


REVIEWED_FOLDER = "reviewed"
REGATE_FAILURE = "failed.txt"


def reviewed_result_path(result_path: Path | str, review: reviews.Review | None) -> Path | None:
    """Where the re-gating of ``review`` (a REGATE line) is kept: one file per decision.

    Each REGATE decision has a folder of its own beside ``result.json``, so that
    re-gating a later decision (which may fail) never overwrites or deletes
    what an earlier one produced; ``reviewed_result.json`` beside
    ``result.json`` is a copy of the latest that succeeded. A re-gating that
    could not be done leaves ``failed.txt`` (the one-line problem) instead.
    """
    if review is None or review.decision != "REGATE":
        return None
    return Path(result_path).parent / REVIEWED_FOLDER / review.decision_id() / REVIEWED_RESULT


def regate_failure(reviewed_path: Path | None) -> str | None:
    """The one-line problem of a re-gating that could not be done, or None."""
    failed = None if reviewed_path is None else reviewed_path.with_name(REGATE_FAILURE)
    if failed is None or reviewed_path.is_file() or not failed.is_file():
        return None
    return failed.read_text(encoding="utf-8", errors="replace").strip() or "no reason recorded"


def _current_reviewed_result(reviewed_path: Path | None, digest: str,
                             review: reviews.Review | None) -> SampleResult | None:
    """The re-gated result of ``review`` when it re-gated this very result with the gates signed.

    A reviewed result left over from an earlier REGATE (another result, other
    gates) is not this review's answer and is ignored.
    """
    if reviewed_path is None or not reviewed_path.is_file():
        return None
    reviewed = results.load(reviewed_path)
    source = reviewed.regate
    if source is None or source.source_result_sha256 != digest or source.gates_sha256 != review.gates_sha256:
        return None
    return reviewed


def summarize(rows: Iterable[ScreeningRow]) -> dict:
    """Batch summary: sample count, count per criterion and final status, versions and settings seen."""
    return {
        "samples": len(rows),
        "criteria": {name: sum(row.criterion == name for row in rows) for name in CRITERIA},
        "finals": {name: sum(row.final == name for row in rows) for name in reviews.FINALS},
        # More than one digest means the batch mixes analysis settings: the reviewer must see it.
        "config_digests": sorted({row.config_digest for row in rows}),
        "cd125gate_versions": sorted({row.cd125gate_version for row in rows}),
    }


def format_tsv(rows: Iterable[ScreeningRow]) -> str:
    """The rows as TSV text: empty cell for null, lists joined by '; ', no tabs or newlines in cells."""
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(row.cells()) for row in rows]
    return "\n".join(lines) + "\n"


def screening_document(rows: list[ScreeningRow]) -> dict:
    """The content of ``screening.json``."""
    return {
        "schema_version": "1",
        "cd125gate_version": __version__,
        "summary": summarize(rows),
        "samples": [row.to_json() for row in rows],
    }


def record_audit(path: Path | str, samples: list[Collected], now: str | None = None) -> list:
    """Append the decisions applied to ``samples`` to the audit trail (each one once)."""
    # A REGATE is recorded once its reviewed result exists: before that nothing was decided yet.
    applied = [(s.status, s.row.result_sha256) for s in samples if s.status.review is not None
               and (s.status.review.decision != "REGATE" or s.row.reviewed_result_sha256)]
    after = {s.row.sample_id: s.row.reviewed_result_sha256 for s in samples if s.row.reviewed_result_sha256}
    now = now or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return audit.append_audit(path, audit.audit_rows(applied, after), now)
