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

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from . import __version__, assay, beads, results, reviews
from .errors import InputError
from .fileio import atomic_write_json, atomic_write_text, sha256_file
from .results import REVIEWED_RESULT

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
# Tabs and line breaks inside a cell would shift or split the row.
BLANK_CONTROL = str.maketrans("\t\r\n", "   ")


def screening_row(result):
    """The screening-table row of one ``SampleResult`` (lists stay lists; see `format_tsv`).

    The result's own columns come from ``results.screening_row``; the review
    columns say what the result is worth with no review applied (see
    `collect_samples`); the assay columns are what the result records, if anything.
    """
    threshold = result.threshold or {}
    recorded = result.assay or {}
    return {
        **results.screening_row(result),
        **reviews.final_status(result.criterion, None).columns(),
        "result_sha256": None,
        "reviewed_criterion": None, "reviewed_cd125_pos_fraction": None, "reviewed_ci_low": None,
        "reviewed_ci_high": None, "reviewed_result_sha256": None,
        "threshold_value_raw": threshold.get("value_raw"),
        "control_pos_fraction": results.control_pos_fraction(result.control_gates),
        "cd125_median_ratio": (result.cd125_median or {}).get("ratio"),
        **{name: recorded.get(name) for name in ASSAY_COLUMNS},
        **beads.screening_columns(result.density),
    }


def read_assay_metadata(result, base=None):
    """The assay metadata of a result: its own ``assay`` block, else the stained FCS file's keywords.

    The FCS path in a result is relative to where the analysis ran; ``base``
    is tried too. An unreadable or moved file gives empty metadata, not an
    error: the table must still be written.
    """
    from .fcs import read_fcs

    if result.get("assay"):
        return {name: result["assay"].get(name) for name in ASSAY_COLUMNS}
    path = Path(result["inputs"]["fcs"]["path"])
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
    result: dict
    row: dict
    status: reviews.Final
    reviewed: dict | None = None          # reviewed_result.json of a REGATE, when current


def collect(paths, review_lines=None, signoff="review_only", metadata=True):
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


def collect_samples(paths, review_lines=None, signoff="review_only", metadata=True):
    """Like `collect`, keeping each sample's result and review status (for the audit trail)."""
    latest = reviews.latest_by_sample(review_lines or [])
    samples, seen = [], {}
    for path in paths:
        value = results.load(path)
        row, result = screening_row(value), value.to_json()
        if row["sample_id"] in seen:
            raise InputError(
                path, f"sample_id '{row['sample_id']}' was already given by {seen[row['sample_id']]}"
            )
        seen[row["sample_id"]] = path
        digest = sha256_file(path)
        review = latest.get(row["sample_id"])
        reviewed_path = reviewed_result_path(Path(path), review)
        reviewed = _current_reviewed_result(reviewed_path, digest, review)
        status = reviews.final_status(result["criterion"], digest, review, signoff,
                                      reviewed["criterion"] if reviewed else None)
        failure = regate_failure(reviewed_path) if status.review is not None else None
        if failure:
            status = replace(status, note=f"re-gating failed: {failure}")
        row.update(status.columns(), result_sha256=digest)
        if reviewed is not None and status.review is not None:
            row.update(reviewed_criterion=reviewed["criterion"],
                       reviewed_cd125_pos_fraction=reviewed["cd125_pos_fraction"],
                       reviewed_ci_low=reviewed["ci_low"], reviewed_ci_high=reviewed["ci_high"],
                       reviewed_result_sha256=sha256_file(reviewed_path))
        if metadata and not any(row[name] for name in ASSAY_COLUMNS):
            row.update(read_assay_metadata(result))
        samples.append(Collected(Path(path), result, row, status, reviewed))
    return samples


REVIEWED_FOLDER = "reviewed"
REGATE_FAILURE = "failed.txt"


def reviewed_result_path(result_path, review):
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


def regate_failure(reviewed_path):
    """The one-line problem of a re-gating that could not be done, or None."""
    failed = None if reviewed_path is None else reviewed_path.with_name(REGATE_FAILURE)
    if failed is None or reviewed_path.is_file() or not failed.is_file():
        return None
    return failed.read_text(encoding="utf-8", errors="replace").strip() or "no reason recorded"


def _current_reviewed_result(reviewed_path, digest, review):
    """The re-gated result of ``review`` when it re-gated this very result with the gates signed.

    A reviewed result left over from an earlier REGATE (another result, other
    gates) is not this review's answer and is ignored.
    """
    if reviewed_path is None or not reviewed_path.is_file():
        return None
    reviewed = results.load(reviewed_path).to_json()
    source = reviewed.get("review") or {}
    if source.get("source_result_sha256") != digest:
        return None
    if source.get("gates_sha256") != review.gates_sha256:
        return None
    return reviewed


def summarize(rows):
    """Batch summary: sample count, count per criterion and final status, versions and settings seen."""
    return {
        "samples": len(rows),
        "criteria": {name: sum(row["criterion"] == name for row in rows) for name in CRITERIA},
        "finals": {name: sum(row["final"] == name for row in rows) for name in reviews.FINALS},
        # More than one digest means the batch mixes analysis settings: the reviewer must see it.
        "config_digests": sorted({row["config_digest"] for row in rows}),
        "cd125gate_versions": sorted({row["cd125gate_version"] for row in rows}),
    }


def format_tsv(rows):
    """The rows as TSV text: empty cell for null, lists joined by '; ', no tabs or newlines in cells."""

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, list):
            value = LIST_SEPARATOR.join(value)
        return str(value).translate(BLANK_CONTROL)

    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(cell(row[name]) for name in COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def screening_document(rows):
    """The content of ``screening.json``."""
    return {
        "schema_version": "1",
        "cd125gate_version": __version__,
        "summary": summarize(rows),
        "samples": rows,
    }


def add_arguments(parser):
    parser.add_argument("results", nargs="+", metavar="RESULT_JSON",
                        help="per-sample result.json files, in the order of the table")
    parser.add_argument("--tsv", required=True, help="screening table to write (TSV)")
    parser.add_argument("--json", required=True, help="screening table + batch summary to write (JSON)")
    parser.add_argument("--reviews", help="reviews file (TSV): reviewer decisions to apply")
    parser.add_argument("--signoff", choices=reviews.SIGNOFF, default="review_only",
                        help="review_only: MET / NOT_MET stand unreviewed; all: every sample needs sign-off")
    parser.add_argument("--audit", help="audit trail (TSV) to append the applied decisions to")


def run(args):
    from .outputs import writing

    review_lines = reviews.read_reviews(args.reviews) if args.reviews else []
    samples = collect_samples(args.results, review_lines, args.signoff)
    rows = [s.row for s in samples]
    # A full disk or a read-only folder: one line naming the folder, never a traceback.
    with writing(Path(args.tsv).parent, Path(args.tsv).name):
        atomic_write_text(args.tsv, format_tsv(rows))
    with writing(Path(args.json).parent, Path(args.json).name):
        atomic_write_json(args.json, screening_document(rows))
    if args.audit:
        with writing(Path(args.audit).parent, Path(args.audit).name):
            record_audit(args.audit, samples)
    counts = summarize(rows)["criteria"]
    finals = summarize(rows)["finals"]
    print(", ".join(f"{name} {counts[name]}" for name in CRITERIA) + f" ({len(rows)} samples); final: "
          + ", ".join(f"{name} {finals[name]}" for name in reviews.FINALS))
    return 0


def record_audit(path, samples, now=None):
    """Append the decisions applied to ``samples`` to the audit trail (each one once)."""
    # A REGATE is recorded once its reviewed result exists: before that nothing was decided yet.
    applied = [(s.status, s.row["result_sha256"]) for s in samples if s.status.review is not None
               and (s.status.review.decision != "REGATE" or s.row["reviewed_result_sha256"])]
    after = {s.row["sample_id"]: s.row["reviewed_result_sha256"] for s in samples
             if s.row["reviewed_result_sha256"]}
    now = now or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return reviews.append_audit(path, reviews.audit_rows(applied, after), now)
