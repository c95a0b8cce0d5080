"""The samples of the review page: each result (or the lack of one), its figures and screening row.

`load_samples` reads a results folder (in ``screening.json``'s order when
given), and `earlier_lines` the reviews file the batch was run with. A sample
a reviewer re-gated is shown as its reviewed result, the automatic one beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cd125gate import results
from cd125gate.errors import InputError
from cd125gate.results import SampleResult
from cd125gate.review import reviews
from cd125gate.review.screening import ScreeningRow


@dataclass
class Sample:
    """One row of the page: a result (or the lack of one) and its figures."""

    sample_id: str
    result: SampleResult
    figures: list = field(default_factory=list)     # (file name, PNG bytes)
    problems: list = field(default_factory=list)    # what is wrong with the sample's outputs
    result_sha256: str | None = None                # the digest a review line must name
    row: ScreeningRow | None = None                 # its screening row (final status, review, assay)
    key_plots: list = field(default_factory=list, repr=False)  # (file name, PNG) of the printed key panels
    key_note: str | None = None                     # why the record has no key panels to print
    reviewed: SampleResult | None = None            # reviewed_result.json when the record is a REGATE's

    @property
    def criterion(self) -> str:
        """The automatic criterion (the table, filters and summary count these)."""
        return self.result.criterion

    @property
    def record(self) -> SampleResult:
        """The result the card and its printed page are drawn from: the re-gated one after a REGATE."""
        return self.reviewed or self.result

    @property
    def final(self) -> str:
        """The final status: from the screening row, else what the automatic result is worth unreviewed."""
        if self.row is not None and self.row.final:
            return self.row.final
        return reviews.final_status(self.criterion, None).final

    @property
    def decision(self) -> str:
        """The review decision applied ('' when none)."""
        return (self.row.review_decision if self.row is not None else None) or ""


def earlier_lines(path: Path | str) -> list[dict[str, str]]:
    """The decision lines of a reviews file as written (column -> cell), comments and blank lines left out.

    The page writes them back first in the reviews file it builds: decisions
    only accumulate, and the workflow refuses a file that lost one. Cells are
    kept as written (a relative gates path stays relative); the file was
    checked by the workflow before this page was made.
    """
    import csv

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read reviews file: {exc}") from None
    rows = [row for row in csv.reader(text.splitlines(), delimiter="\t")
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        return []
    header = [name.strip() for name in rows[0]]
    return [{name: cell for name, cell in zip(header, row) if name} for row in rows[1:]]


def load_samples(results_dir: Path | str, screening: Path | str | None = None) -> list[Sample]:
    """The samples of a results folder, in screening order when a screening file is given.

    Parameters
    ----------
    results_dir : Path
        Folder with one sub-folder per sample, each holding ``result.json``.
    screening : Path or None
        ``screening.json``; its ``samples`` rows (``sample_id``) set the batch and its order.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InputError(results_dir, "results folder does not exist")
    from cd125gate.io.fileio import sha256_file

    found, paths = {}, {}
    for path in sorted(results_dir.glob("*/result.json")):
        result = results.load(path)
        sample_id = result.sample_id
        if sample_id in found:
            raise InputError(path, f"sample id {sample_id!r} is also the id of {paths[sample_id]}")
        found[sample_id] = Sample(sample_id, result, _figures(path.parent, result), result_sha256=sha256_file(path))
        paths[sample_id] = path
        if not found[sample_id].figures:
            found[sample_id].problems.append("no QC figure (qc.png) in its results folder")
    if not found and screening is None:
        raise InputError(results_dir, "no */result.json found")
    if screening is None:
        samples = [found[k] for k in sorted(found)]
    else:
        rows = _read_screening(screening)
        samples = _in_screening_order(found, list(rows))
        for sample in samples:
            sample.row = rows.get(sample.sample_id)
            _attach_reviewed(sample, results_dir / sample.sample_id)
    for sample in samples:
        if sample.figures:
            _attach_key_panels(sample, paths[sample.sample_id].parent)
    return samples


def _attach_reviewed(sample: Sample, folder: Path) -> None:
    """Make a re-gated sample's record its reviewed result: its figures first, the automatic ones after."""
    from cd125gate.figures.regate_figure import REVIEWED_QC, page_files
    from cd125gate.review.signout import reviewed_record

    sample.reviewed = reviewed_record(folder, sample.row)
    if sample.reviewed is not None:
        automatic = [(name, png) for name, png in sample.figures if not name.startswith("reviewed_")]
        reviewed = [(name, (folder / name).read_bytes())
                    for name in page_files(REVIEWED_QC) if (folder / name).is_file()]
        sample.figures = reviewed + automatic


def _attach_key_panels(sample: Sample, folder: Path) -> None:
    """The record's key panels, printed on its page; a figure without them is an incomplete output."""
    from cd125gate.review.signout import record_key_panels

    panels = record_key_panels(folder, sample.record)
    sample.key_plots = [(f"key_{name}.png", png) for name, png in panels.panels]
    sample.key_note = panels.missing
    if panels.missing:
        sample.problems.append(panels.missing)


def _figures(sample_dir: Path, result: SampleResult) -> list[tuple[str, bytes]]:
    """(name, bytes) of the sample's PNG figures: qc.png first, then the others by name.

    The figures named in the result's ``outputs`` are looked up by file name in
    the sample's folder, because the recorded paths are relative to wherever
    the workflow ran.
    """
    from cd125gate.figures.plots import key_panel_files

    names = {p.name for p in sample_dir.glob("qc*.png")}  # reviewed_qc*.png: see _attach_reviewed
    names |= {Path(v).name for v in (result.outputs or {}).values() if str(v).endswith(".png")}
    names -= set(key_panel_files("qc"))  # printed on the sample's page, not figures of their own
    ordered = sorted(names, key=lambda n: (n != "qc.png", n))
    return [(n, (sample_dir / n).read_bytes()) for n in ordered if (sample_dir / n).is_file()]


def _read_screening(path: Path | str) -> dict[str, ScreeningRow]:
    """sample_id -> screening row (final status, review, assay metadata), in the file's order."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["samples"]
        ids = [str(row["sample_id"]) for row in rows]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read screening file: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise InputError(path, f"screening file needs a 'samples' list of rows with 'sample_id' ({exc})") from None
    return {sample_id: ScreeningRow.from_json(row) for sample_id, row in zip(ids, rows)}


def _in_screening_order(found: dict[str, Sample], ids: list[str]) -> list[Sample]:
    """Screening order; a listed sample without a result becomes a FAILED row.

    Result folders that screening.json does not list (left over from an
    earlier sample sheet written to the same output folder) are not part of
    this batch and are left out.
    """
    samples = []
    for sample_id in dict.fromkeys(ids):
        if sample_id in found:
            samples.append(found[sample_id])
        else:
            missing = SampleResult(sample_id, "FAILED", ("listed in screening.json but no result.json was found",),
                                   flags=(), warnings=(), inputs={}, provenance={}, criterion_settings={})
            samples.append(Sample(sample_id, missing, problems=["result.json missing"]))
    return samples
