"""The QC figures of a re-gated sample: its events under the reviewer's gates (``reviewed_qc.png``).

A re-gated record must show what was decided: the edited gates, the edited
CD125 cut-off, the CD125 histogram of the re-gated blasts and their counts,
not the automatic ones. The sample is analysed again with the batch's
settings (the same events, compensation and transforms as the automatic
result), its gates are replaced by the edited ones and applied again, and the
figures are drawn by `cd125gate.figures.plots` as for any result.

The figure is drawn only when it is the evidence of the reviewed result's
numbers: the repeated analysis must reproduce ``result.json``'s counts, and
the edited gates, applied here, must give exactly FlowKit's counts of the
reviewed result. Otherwise a card says why there is no figure.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.errors import InputError
from cd125gate.io.gatesfile import cd125_cutoff
from cd125gate.results import REVIEWED_RESULT, SampleResult

if TYPE_CHECKING:
    import flowkit as fk

    from cd125gate.analysis.compensation import Compensation
    from cd125gate.analysis.model import GateStep, Threshold, TubeAnalysis
    from cd125gate.settings import Settings

REVIEWED_QC = "reviewed_qc"   # reviewed_qc.png (stained tube), reviewed_qc_control.png


class NoFigure(Exception):
    """The re-gated figure would not be the evidence of the reviewed numbers (the message says why)."""


def page_files(stem: str) -> list[str]:
    """The pages drawn for ``stem``: the stained tube's, then the control's."""
    return [f"{stem}.png", f"{stem}_control.png"]


def figure_files(stem: str) -> list[str]:
    """The figure files drawn for ``stem``: its pages (`page_files`), then the key panels."""
    from cd125gate.figures.plots import key_panel_files

    return [*page_files(stem), *key_panel_files(stem)]


def figure_stem(reviewed_path: Path | str) -> str:
    """The stem of the figures written beside a reviewed result: ``reviewed_qc`` beside reviewed_result.json."""
    path = Path(reviewed_path)
    return REVIEWED_QC if path.name == REVIEWED_RESULT else f"{path.stem}_qc"


def draw_reviewed(result: SampleResult, reviewed: SampleResult, strategy: fk.GatingStrategy, folder: Path | str,
                  settings: Settings | None = None, stem: str = REVIEWED_QC) -> str | None:
    """Write ``<stem>.png`` (and ``<stem>_control.png``, the key panels) of a reviewed result into ``folder``.

    ``result`` is the automatic result, ``reviewed`` the re-gated one; ``strategy`` is the
    edited GatingStrategy. Returns None, or the reason a card was drawn instead.
    """
    from cd125gate.figures import plots

    Path(folder).mkdir(parents=True, exist_ok=True)
    for name in plots.key_panel_files(stem):
        (Path(folder) / name).unlink(missing_ok=True)  # an earlier REGATE's key panels are not this one's
    try:
        stained, control, threshold = reviewed_tubes(result, reviewed, strategy, settings)
    except (NoFigure, InputError) as exc:
        reason = str(exc)
        _card(reviewed, reason, folder, stem)
        return reason
    # The internal controls were measured against the automatic cut-off: not evidence here.
    shown = reviewed.replace(internal_controls=None)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        plots.plot_sample(stained, control, threshold, shown, tmp)
        for drawn, name in zip(figure_files("qc"), figure_files(stem)):
            if (Path(tmp) / drawn).is_file():
                shutil.move(Path(tmp) / drawn, Path(folder) / name)
    return None


def reviewed_tubes(result: SampleResult, reviewed: SampleResult, strategy: fk.GatingStrategy,
                   settings: Settings | None = None) -> tuple[TubeAnalysis, TubeAnalysis | None, Threshold | None]:
    """(stained, control, threshold) of the sample under the edited gates, their counts FlowKit's."""
    from cd125gate.analysis import pipeline as analyze
    from cd125gate.analysis.model import Threshold

    analysis = analyze.analyze_sample(*_tube_paths(result), settings, sample_id=result.sample_id,
                                      compensation_path=_compensation(result))
    if analysis.stained is None or analysis.result.criterion == "FAILED":
        raise NoFigure("the automatic analysis could not be repeated: " + "; ".join(analysis.result.reasons))
    _same_counts(analysis.result.gates, result.gates, "repeating the analysis does not reproduce "
                 "result.json's counts (other settings or files?)")
    tubes = [analysis.stained] + ([analysis.control] if analysis.control is not None else [])
    tables = [reviewed.gates, reviewed.control_gates]
    for tube, table in zip(tubes, tables):
        regate_tube(tube, strategy, analysis.compensation)
        counted = [{"name": s.name, "count": s.count} for s in tube.steps]
        _same_counts(counted, table, f"the edited gates applied to the {tube.role} tube do not give FlowKit's counts")
    if analysis.control is not None and not reviewed.control_gates:
        analysis.control = None  # re-gating left the control out (it had moved): so does the figure
    cut = reviewed.cutoff
    threshold = None
    if cut is not None and cd125_cutoff(strategy) is not None:
        threshold = Threshold(cut.method, cut.value, cut.value_raw, cut.percentile, cut.reference_events,
                              cut.description)
    return analysis.stained, analysis.control, threshold


def regate_tube(tube: TubeAnalysis, strategy: fk.GatingStrategy, compensation: Compensation | None) -> None:
    """Replace the tube's gates by the strategy's and apply them again (events near a boundary settled)."""
    from cd125gate.analysis.gating import boundaries, gates, gatestep

    automatic = {s.name: s for s in tube.steps}
    steps = []
    for name, parent, gate in _in_order(strategy):
        old = automatic.get(name)
        x, y = (old.x, old.y) if old else _axes(gate)
        steps.append(gatestep.gate_step(tube, name, parent, gates.from_flowkit(gate), x, y, "",
                                        old.exclusion if old else False, among=steps))
    tube.steps = steps
    # The automatic time QC panel shades the automatic windows; the edited ones may differ.
    tube.time_qc = None
    boundaries.settle_in_place(tube, compensation)
    tube.steps = [replace(step, note=_edit_note(step, automatic.get(step.name))) for step in tube.steps]


def _edit_note(step: GateStep, old: GateStep | None) -> str:
    """The footer says which gates the reviewer changed: same events, same gate."""
    same = old is not None and old.parent == step.parent and (old.mask == step.mask).all()
    return f"unchanged ({old.note})" if same and old.note else "unchanged" if same else "edited by the reviewer"


def _in_order(strategy):
    """(name, parent, gate) of every gate, parents and Boolean operands before the gates that use them."""
    pending = []
    for name, path in strategy.get_gate_ids():
        gate = strategy.get_gate(name, path)
        needs = {path[-1]} - {"root"} | {ref["ref"] for ref in getattr(gate, "gate_refs", None) or []}
        pending.append((name, None if path[-1] == "root" else path[-1], gate, needs))
    done, ordered = set(), []
    while pending:
        ready = [p for p in pending if p[3] <= done]
        if not ready:
            raise NoFigure("the edited gates refer to gates they do not define")
        for item in ready:
            ordered.append(item[:3])
            done.add(item[0])
            pending.remove(item)
    return ordered


def _axes(gate):
    """(x, y) channels of a gate the automatic gating did not have: its own dimensions."""
    ids = [d.id for d in getattr(gate, "dimensions", [])]
    if not ids:
        raise NoFigure(f"the edited gate '{gate.gate_name}' has no axes to draw it on")
    return ids[0], ids[1] if len(ids) > 1 else None


def _same_counts(ours, theirs, problem):
    mine = {g["name"]: g["count"] for g in ours or []}
    other = {g["name"]: g["count"] for g in theirs or []}
    if mine != other:
        differ = sorted(n for n in set(mine) | set(other) if mine.get(n) != other.get(n))
        raise NoFigure(f"{problem}: {', '.join(differ)}")


def _tube_paths(result: SampleResult) -> tuple[str, str | None]:
    control = result.input_file("control")
    usable = control is not None and control.path and Path(control.path).is_file()
    return result.input_file("fcs").path, control.path if usable else None


def _compensation(result: SampleResult) -> str | None:
    """The compensation the automatic analysis was given: a matrix CSV, ``precompensated`` or None."""
    matrix = result.input_file("compensation")
    if matrix is None and result.precompensated:
        return "precompensated"
    return matrix.path if matrix else None


def _card(result: SampleResult, reason: str, folder: Path | str, stem: str) -> None:
    """A page saying why the re-gated sample has no figure, in place of ``<stem>.png``."""
    from cd125gate.figures import plots

    plots.plot_message(result, ["No figure of the re-gated gates: " + reason,
                                "The reviewed counts (FlowKit's) are in reviewed_result.json."],
                       folder, stem)
