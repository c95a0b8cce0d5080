"""A sample's folder: result.json, gates.xml, gate counts and QC figures of exactly one run.

Every run writes its files into a fresh staging folder first and moves them
into the sample's folder only when all of them, ``result.json`` last, are
complete. Files an earlier run left there (a control's figure and gates after
the control was taken off the sheet, an SVG no longer asked for) are removed,
so the folder never shows another run's control as this run's.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate import results
from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.analysis.pipeline import SampleAnalysis
    from cd125gate.figures.figure_worker import FigureWorker
    from cd125gate.results import SampleResult

RESULT = "result.json"
# Every file name a run may write (the key panels' come from `plots.key_panel_files`, see
# `_ours`); only these are ever removed from a sample's folder.
OURS = r"^(result\.json|(control_)?gates\.xml|gate_counts\.tsv|(qc(_control)?|beads)\.(png|svg|pdf)|{keys})$"


def output_key(name: str) -> str:
    """The key of a figure file in a result's ``outputs``: ``qc_key_cd125.png`` -> ``qc_key_cd125_png``."""
    path = Path(name)
    return f"{path.stem}_{path.suffix[1:]}"


@functools.cache
def _ours() -> re.Pattern:
    from cd125gate.figures.plots import key_panel_files

    return re.compile(OURS.format(keys="|".join(map(re.escape, key_panel_files("qc")))))


def plot_formats(text: str) -> tuple[str, ...]:
    """The figure formats asked for ("png,svg"), png always first; unknown ones are refused."""
    from cd125gate.figures.raster import FORMATS

    formats = tuple(dict.fromkeys(["png"] + [f for f in text.split(",") if f]))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError("--plot-formats", f"unknown format(s) {', '.join(unknown)}; "
                                           f"choose from {', '.join(FORMATS)}")
    return formats


@contextmanager
def writing(folder: Path | str, what: str) -> Iterator[None]:
    """A failed write (disk full, read-only folder) as one line naming the folder and the problem."""
    try:
        yield
    except OSError as exc:
        raise InputError(folder, f"cannot write {what}: {exc.strerror or exc}") from None


def write_outputs(analysis: SampleAnalysis, out_dir: Path | str, formats: Iterable[str] = ("png",),
                  progress: Callable[[str, float], None] | None = None,
                  worker: FigureWorker | None = None) -> SampleResult:
    """Write the sample's files into ``out_dir`` and return its result with ``outputs`` filled in.

    ``analysis`` is left as it was: the result written is the one returned.

    A FAILED sample gets the same files (an empty Gating-ML, a figure stating
    the reason) so a batch always finds them. ``worker``: a started
    `figure_worker.FigureWorker` that draws the figures (else drawn here).
    """
    out_dir = Path(out_dir)
    with writing(out_dir, "the sample's folder"):
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    try:
        with writing(out_dir, "the sample's folder"):
            start = time.perf_counter()
            result = _write_all(analysis, staging, formats, worker)
            _move_into_place(staging, out_dir, result.outputs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress is not None:
        progress("figures and files", time.perf_counter() - start)
    return result


def _write_all(analysis: SampleAnalysis, folder: Path, formats: Iterable[str],
               worker: FigureWorker | None = None) -> SampleResult:
    """Every file of the run in ``folder``; the result with its ``outputs``."""
    from cd125gate.io import gatingml
    from cd125gate.io.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

    result = analysis.result
    outputs = {"result": RESULT, "gates": "gates.xml", "counts": "gate_counts.tsv"}
    if analysis.stained is not None and result.gates:
        drawn = _figures(worker, "plot_sample", analysis.stained, analysis.control, analysis.threshold,
                         result, folder, formats)
        atomic_write_bytes(folder / outputs["gates"], gatingml.export(analysis.stained, analysis.compensation))
        if analysis.control is not None:
            outputs["control_gates"] = "control_gates.xml"
            atomic_write_bytes(folder / outputs["control_gates"],
                               gatingml.export(analysis.control, analysis.compensation))
        results.prepare_validation()  # while the figures are drawn
        figures = drawn()
        if analysis.density is not None and analysis.density.curve is not None:
            from cd125gate.figures.beads_plot import plot_beads

            figures += plot_beads(analysis.density, result.sample_id, folder, formats)
    else:
        drawn = _figures(worker, "plot_failure", result, folder, formats)
        atomic_write_bytes(folder / outputs["gates"], gatingml.export_empty("; ".join(result.reasons)))
        results.prepare_validation()
        figures = drawn()
    # One key per file: "qc_png", "qc_key_cd125_png", "qc_control_png", "qc_svg", ...
    outputs.update({output_key(f.name): f.name for f in figures})
    atomic_write_text(folder / outputs["counts"], results.counts_tsv(result))
    result = result.replace(outputs=outputs)
    results.validate(result)
    atomic_write_json(folder / RESULT, result.to_json())
    return result


def _figures(worker: FigureWorker | None, name: str, *args: object) -> Callable[[], list[Path]]:
    """``finish() -> paths`` of ``plots.<name>(*args)``: drawn by ``worker`` if it can, else here."""
    finish = worker.draw(name, *args) if worker is not None else lambda: (False, None)

    def drawn() -> list[Path]:
        done, paths = finish()
        if done:
            return paths
        from cd125gate.figures import plots

        return getattr(plots, name)(*args)

    return drawn


def _move_into_place(staging, out_dir, outputs):
    """Replace the folder's run with the staged one; ``result.json`` goes first out and last in."""
    (out_dir / RESULT).unlink(missing_ok=True)
    new = set(outputs.values())
    for path in out_dir.iterdir():
        if _ours().match(path.name) and path.name not in new and path.is_file():
            path.unlink()
    for name in sorted(new - {RESULT}):
        os.replace(staging / name, out_dir / name)
    os.replace(staging / RESULT, out_dir / RESULT)
