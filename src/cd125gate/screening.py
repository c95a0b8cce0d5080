"""The screening table: one row per sample, collected from the per-sample results.

``screening.tsv`` is for people and spreadsheets; ``screening.json`` holds the
same rows plus a batch summary, and follows ``data/screening.schema.json``.
Every result is checked against ``data/result.schema.json`` as it is read, so
a malformed result stops the batch instead of becoming a plausible row.
"""

from . import __version__, results
from .errors import InputError
from .fileio import atomic_write_json, atomic_write_text

CRITERIA = ("MET", "NOT_MET", "REVIEW", "FAILED")
COLUMNS = (
    "sample_id", "criterion", "cd125_pos_fraction", "ci_low", "ci_high", "blast_events",
    "cd125_pos_events", "threshold_method", "reasons", "flags", "patient_id", "specimen",
    "fcs_sha256", "control_sha256", "cd125gate_version", "config_digest",
)
LIST_SEPARATOR = "; "
# Tabs and line breaks inside a cell would shift or split the row.
BLANK_CONTROL = str.maketrans("\t\r\n", "   ")


def collect(paths):
    """
    Screening rows of the results at ``paths``, in the order given.

    Raises
    ------
    InputError
        For an invalid result, or two results for one sample ID.
    """
    rows, seen = [], {}
    for path in paths:
        row = results.screening_row(results.load(path))
        if row["sample_id"] in seen:
            raise InputError(
                path, f"sample_id '{row['sample_id']}' was already given by {seen[row['sample_id']]}"
            )
        seen[row["sample_id"]] = path
        rows.append(row)
    return rows


def summarize(rows):
    """Batch summary: sample count, count per criterion, versions and settings seen."""
    return {
        "samples": len(rows),
        "criteria": {name: sum(row["criterion"] == name for row in rows) for name in CRITERIA},
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


def run(args):
    rows = collect(args.results)
    atomic_write_text(args.tsv, format_tsv(rows))
    atomic_write_json(args.json, screening_document(rows))
    counts = summarize(rows)["criteria"]
    print(", ".join(f"{name} {counts[name]}" for name in CRITERIA) + f" ({len(rows)} samples)")
    return 0
