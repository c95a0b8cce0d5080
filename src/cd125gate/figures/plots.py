"""QC figures: one page per tube showing which events every gate took.

The reviewer reads a tube's figure left to right, top to bottom, in gating
order: a header (sample, criterion, CD125+ fraction, reasons, flags), the
panels (``qc_panels``) and a footer saying how each gate was found. The
stained tube's two key panels (the blast gate and CD125, which the printed
page and the sign-out record show) are also drawn as figures of their own
beside its page (``qc_key_blast_gate.png``, ``qc_key_cd125.png``). A FAILED
sample gets a card stating why instead (``plot_failure``). Axes, ticks and
densities come from ``tube_view`` and ``ticks``; creating, encoding and
writing the files from ``raster``.

matplotlib is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate import processes
from cd125gate.analysis.model import GATE_ORDER
from cd125gate.figures.qc_panels import blasts_panel, cd125_panel, gate_panel, time_panel
from cd125gate.figures.raster import check_formats, drop_spare_axes, new_figure, page_figure, plain_text, save
from cd125gate.figures.raster import make_spare_axes as _make_spare_axes
from cd125gate.figures.tube_view import TubeView

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.gridspec import SubplotSpec
    from matplotlib.patches import Rectangle

    from cd125gate.analysis.model import Threshold, TubeAnalysis
    from cd125gate.results import SampleResult

    Drawer = Callable[[Figure, SubplotSpec, TubeView], None]

# The key panels, in printed order: CD45 / SSC-A with the blast region, then CD125 on blasts.
BLAST_GATE_PANEL, CD125_PANEL = "blast_gate", "cd125"
KEY_PANELS = (BLAST_GATE_PANEL, CD125_PANEL)
KEY = "key"             # the kind of figure (`raster.page_figure`) of a key panel drawn on its own
CRITERION_COLOURS = {"MET": "#1a7f37", "NOT_MET": "#1f4e9c", "REVIEW": "#d97706", "FAILED": "#c62828"}
NCOLS = 4               # panels per row
PANEL_INCHES = (4.3, 3.9)
HEADER_INCHES = 1.25
FOOTER_INCHES = 0.6     # how each gate was found, below the panels so no note covers events
# The panel grid in the page (fractions of its width; inches above and below the grid; gaps
# between panels as a share of a panel's Axes).
GRID_LEFT, GRID_RIGHT, GRID_TOP_INCHES, GRID_BOTTOM_INCHES, WSPACE, HSPACE = 0.045, 0.99, 0.35, 0.45, 0.3, 0.5
# Room around a key panel's Axes (inches): tick labels and axis title left and below, a
# little right for the last tick label; above, the title's lines (TITLE_LINE_INCHES each).
KEY_LEFT, KEY_RIGHT, KEY_BOTTOM, KEY_TOP = 0.62, 0.2, 0.45, 0.12
TITLE_LINE_INCHES = 0.15


def make_spare_axes(count: int, enough: Callable[[], bool] = lambda: False) -> None:
    """Make up to ``count`` Axes for the next QC page ahead of time (`raster.make_spare_axes`), one row wide,
    then one for each key panel's figure."""
    _make_spare_axes(count, (PANEL_INCHES[0] * NCOLS, PANEL_INCHES[1]), enough)
    for _ in KEY_PANELS:
        if not enough():
            _make_spare_axes(1, PANEL_INCHES, enough, kind=KEY)


def plot_sample(stained: TubeAnalysis, control: TubeAnalysis | None, threshold: Threshold | None,
                result: SampleResult, out_dir: Path | str, formats: Iterable[str] = ("png",)) -> list[Path]:
    """Draw the QC figures of one analysed sample.

    Parameters
    ----------
    stained : TubeAnalysis
        The stained tube, gated.
    control : TubeAnalysis or None
        The control tube (FMO or isotype), gated; None when there is none.
    threshold : Threshold or None
        The CD125 cut-off applied to the blasts.
    result : results.SampleResult
        The sample's result: header text and criterion.
    out_dir : str or Path
        Folder to write into.
    formats : sequence of str
        Any of "png", "svg", "pdf"; PNG is always written.

    Returns
    -------
    list of Path
        ``qc.<fmt>`` for the stained tube, its key panels (``qc_key_<panel>.png``,
        `key_panel_files`), then ``qc_control.<fmt>`` for the control.
    """
    formats = check_formats(formats)
    contexts = {id(t): TubeView(t, stained) for t in (stained, control) if t is not None}

    def draw(tube: TubeAnalysis, stem: str, keys: list[str]) -> tuple[list[Path], list[Path]]:
        page = save(_tube_figure(tube, stained, control, threshold, result, contexts), out_dir, stem, formats)
        return page, _draw_key_panels(stained, control, threshold, result, contexts, out_dir, keys)

    with plain_text():
        # The control's page is drawn in a forked child beside the stained tube's (a page
        # costs ~0.3 s of CPU), and each draws one key panel (~0.03 s); should the child
        # fail, its page and panel are drawn here after all.
        beside = [CD125_PANEL] if control is not None else []
        child = processes.beside(lambda: draw(control, "qc_control", beside)) if beside else None
        page, keys = draw(stained, "qc", [name for name in KEY_PANELS if name not in beside])
        control_page = []
        if control is not None:
            if child is not None and child():
                control_page = [Path(out_dir) / f"qc_control.{fmt}" for fmt in formats]
                keys += [Path(out_dir) / _key_file(name) for name in beside]
            else:
                control_page, control_keys = draw(control, "qc_control", beside)
                keys += control_keys
    return page + keys + control_page


def key_panel_files(stem: str) -> list[str]:
    """The files of the key panels drawn beside ``<stem>.png``, in `KEY_PANELS` order: ``<stem>_key_<panel>.png``."""
    return [_key_file(name, stem) for name in KEY_PANELS]


def _key_file(name: str, stem: str = "qc") -> str:
    return f"{stem}_key_{name}.png"


def plot_failure(result: SampleResult, out_dir: Path | str, formats: Iterable[str] = ("png",)) -> list[Path]:
    """Draw the FAILED card of a sample that could not be analysed.

    Parameters
    ----------
    result : results.SampleResult
        The sample's result; its ``reasons`` and ``warnings`` are printed.
    out_dir : str or Path
        Folder to write ``qc.<fmt>`` into.
    formats : sequence of str
        Any of "png", "svg", "pdf"; PNG is always written.

    Returns
    -------
    list of Path
    """
    formats = check_formats(formats)
    with plain_text():
        return save(_failure_figure(result), out_dir, "qc", formats)


def plot_message(result: SampleResult, lines: list[str], out_dir: Path | str, stem: str,
                 formats: Iterable[str] = ("png",)) -> list[Path]:
    """A page of text in place of a figure (``stem.<fmt>``): the sample, its criterion and ``lines``."""
    formats = check_formats(formats)
    with plain_text():
        return save(_message_figure(result, lines), out_dir, stem, formats)


def _message_figure(result: SampleResult, lines: list[str]) -> Figure:
    """A page of text: the sample's name and criterion badge above ``lines``."""
    fig = new_figure((10, 4.5))
    fig.text(0.03, 0.86, str(result.sample_id), fontsize=18, weight="bold")
    _badge(fig, 0.97, 0.86, result.criterion, ha="right", size=18)
    fig.text(0.03, 0.74, _wrap(lines, 110), fontsize=11, va="top", family="monospace")
    return fig


def _failure_figure(result: SampleResult) -> Figure:
    lines = ["This tube could not be analysed; no CD125 result exists for it.", ""]
    lines += [f"Reason: {r}" for r in result.reasons or ["(no reason recorded)"]]
    lines += [f"Warning: {w}" for w in result.warnings]
    fcs = result.inputs.get("fcs") or {}
    if fcs.get("path"):
        lines += ["", f"Input: {fcs['path']}"]
    fig = _message_figure(result, lines)
    fig.patches.append(_frame(fig, CRITERION_COLOURS.get(result.criterion, "#c62828")))
    return fig


def _tube_figure(tube: TubeAnalysis, stained: TubeAnalysis, control: TubeAnalysis | None,
                 threshold: Threshold | None, result: SampleResult,
                 contexts: dict[int, TubeView] | None = None) -> Figure:
    """One page of panels for ``tube``, in gating order.

    ``contexts`` (id(tube) -> TubeView) lets the two figures of a sample share
    each tube's limits, ticks and bin indices; missing ones are made here.
    """
    contexts = _with_contexts(contexts, tube, stained, control)
    panels = [draw for _, draw in _named_panels(tube, stained, control, threshold, result, contexts)]
    nrows, width, height = _page_inches(len(panels))
    fig = page_figure((width, height))
    grid = fig.add_gridspec(nrows, NCOLS, left=GRID_LEFT, right=GRID_RIGHT,
                            bottom=(FOOTER_INCHES + GRID_BOTTOM_INCHES) / height,
                            top=1 - (HEADER_INCHES + GRID_TOP_INCHES) / height, wspace=WSPACE, hspace=HSPACE)
    ctx = contexts[id(tube)]
    with plain_text():
        for i, draw in enumerate(panels):
            draw(fig, grid[i // NCOLS, i % NCOLS], ctx)
        _header(fig, tube, result, threshold, height)
        _footer(fig, tube, height)
    drop_spare_axes(fig)
    return fig


def _with_contexts(contexts: dict[int, TubeView] | None, tube: TubeAnalysis, stained: TubeAnalysis,
                   control: TubeAnalysis | None) -> dict[int, TubeView]:
    """``contexts`` with a TubeView for each tube that has none yet."""
    contexts = dict(contexts or {})
    for t in (tube, stained, control):
        if t is not None and id(t) not in contexts:
            contexts[id(t)] = TubeView(t, stained)
    return contexts


def _named_panels(tube: TubeAnalysis, stained: TubeAnalysis, control: TubeAnalysis | None,
                  threshold: Threshold | None, result: SampleResult,
                  contexts: dict[int, TubeView]) -> list[tuple[str, Drawer]]:
    """(name, drawer) of every panel of ``tube``'s page, in drawing order: its gates', then CD125."""
    others = [contexts[id(t)] for t in (stained, control) if t is not None]
    cd125 = (CD125_PANEL, lambda fig, spec, ctx: cd125_panel(fig, spec, ctx, others, threshold, result))
    return _panels(tube) + [cd125]


def _page_inches(count: int) -> tuple[int, float, float]:
    """(rows, width, height in inches) of a page of ``count`` panels."""
    nrows = -(-count // NCOLS)
    return nrows, PANEL_INCHES[0] * NCOLS, PANEL_INCHES[1] * nrows + HEADER_INCHES + FOOTER_INCHES


def _panel_inches(count: int) -> tuple[float, float]:
    """(width, height) in inches of a panel's Axes on a page of ``count`` panels."""
    nrows, width, height = _page_inches(count)
    grid_width = width * (GRID_RIGHT - GRID_LEFT)
    grid_height = height - HEADER_INCHES - GRID_TOP_INCHES - FOOTER_INCHES - GRID_BOTTOM_INCHES
    return grid_width / (NCOLS + (NCOLS - 1) * WSPACE), grid_height / (nrows + (nrows - 1) * HSPACE)


def _draw_key_panels(stained: TubeAnalysis, control: TubeAnalysis | None, threshold: Threshold | None,
                     result: SampleResult, contexts: dict[int, TubeView], out_dir: Path | str,
                     keys: Iterable[str]) -> list[Path]:
    """Write the stained tube's key panels named in ``keys`` (those its page has) beside qc.png, each a PNG.

    Each is the page's panel drawn again with the page's drawer and TubeView
    (limits, ticks and bin indices already made), its Axes the page's size.
    """
    named = _named_panels(stained, stained, control, threshold, result, contexts)
    axes_inches = _panel_inches(len(named))
    drawers = dict(named)
    paths = []
    for name in keys:
        if name in drawers:
            fig = _key_figure(drawers[name], contexts[id(stained)], axes_inches)
            paths += save(fig, out_dir, Path(_key_file(name)).stem, ["png"])
    return paths


def _key_figure(draw: Drawer, ctx: TubeView, axes_inches: tuple[float, float]) -> Figure:
    """One panel on a figure of its own, its Axes ``axes_inches`` in size, the margins just holding its text."""
    width, height = axes_inches
    fig = page_figure((KEY_LEFT + width + KEY_RIGHT, KEY_BOTTOM + height + KEY_TOP), kind=KEY)
    draw(fig, fig.add_gridspec(1, 1)[0, 0], ctx)
    drop_spare_axes(fig)
    # The title's height is known once drawn: the CD45 panel's names a line per gate.
    lines = max(ax.get_title().count("\n") + 1 for ax in fig.axes)
    top = KEY_TOP + TITLE_LINE_INCHES * lines
    fig_width, fig_height = KEY_LEFT + width + KEY_RIGHT, KEY_BOTTOM + height + top
    fig.set_size_inches(fig_width, fig_height)
    box = [KEY_LEFT / fig_width, KEY_BOTTOM / fig_height, width / fig_width, height / fig_height]
    for ax in fig.axes:
        ax.set_position(box)
    return fig


def _panels(tube: TubeAnalysis) -> list[tuple[str, Drawer]]:
    """(name, drawer) of the panels for the gates present in ``tube``, in hierarchy order."""
    names = {s.name for s in tube.steps}
    panels = []
    if tube.time_qc is not None:
        panels.append(("time", time_panel))
    for name in ("cells", "singlets", "viable"):
        if name in names:
            panels.append((name, lambda fig, spec, ctx, name=name: gate_panel(fig, spec, ctx, [name])))
    cd45_panel = [n for n in ("leukocytes", "blast_region") if n in names]
    extras = [s for s in tube.steps if s.name not in GATE_ORDER and not s.exclusion]
    if cd45_panel:
        # Extra populations on the same axes (the lymphocytes used as an internal
        # CD125-negative reference) are drawn with the gates they derive from.
        axes = (tube.step(cd45_panel[-1]).x, tube.step(cd45_panel[-1]).y)
        cd45_panel += [s.name for s in extras if (s.x, s.y) == axes]
        panels.append((BLAST_GATE_PANEL, lambda fig, spec, ctx: gate_panel(fig, spec, ctx, cd45_panel)))
    for name in ("blast_markers", "myeloid", "intact"):
        if name in names:
            panels.append((name, lambda fig, spec, ctx, name=name: gate_panel(fig, spec, ctx, [name])))
    for step in extras:
        if step.name not in cd45_panel:
            panels.append((step.name, lambda fig, spec, ctx, name=step.name: gate_panel(fig, spec, ctx, [name])))
    if "blasts" in names:
        panels.append(("blasts", blasts_panel))
    return panels


def _header(fig: Figure, tube: TubeAnalysis, result: SampleResult, threshold: Threshold | None,
            height: float) -> None:
    """Sample id, tube, criterion badge, fraction with CI, reasons and flags."""
    top = 1 - 0.18 / height
    role = "stained tube" if tube.role == "stained" else "control tube (FMO / isotype)"
    if getattr(result, "review", None):
        role += ", re-gated by the reviewer"
    fig.text(0.01, top, f"{result.sample_id}  —  {role}", fontsize=15, weight="bold", va="top")
    criterion = result.criterion
    _badge(fig, 0.99, top, criterion, ha="right", size=15)
    lines = [_fraction_text(result)]
    if threshold is not None:
        lines.append(f"Threshold ({threshold.method}): {threshold.description}")
    lines += [f"Reason: {r}" for r in result.reasons]
    flags = list(result.flags) + [f for f in tube.flags if f not in result.flags]
    if flags:
        lines.append("Flags: " + "; ".join(flags))
    fig.text(0.01, top - 0.33 / height, _wrap(lines, 190, max_lines=5), fontsize=9, va="top")


def _footer(fig: Figure, tube: TubeAnalysis, height: float) -> None:
    """The note of every gate, in hierarchy order."""
    notes = [f"{s.name}: {s.note}" for s in tube.steps if s.note]
    if notes:
        text = _wrap(["How each gate was found — " + " · ".join(notes)], 250, max_lines=4)
        fig.text(0.01, (FOOTER_INCHES - 0.05) / height, text, fontsize=7, va="top", color="#333333")


def _fraction_text(result: SampleResult) -> str:
    fraction = result.cd125_pos_fraction
    if fraction is None:
        return "CD125+ fraction of blasts: not available"
    ci = ""
    if result.ci_low is not None and result.ci_high is not None:
        ci = f" (95% CI {100 * result.ci_low:.1f}–{100 * result.ci_high:.1f}%)"
    settings = result.criterion_settings
    cut = settings.get("positive_fraction")
    need = f"; criterion: ≥ {100 * cut:.0f}%" if cut is not None else ""
    return (f"CD125+ {100 * fraction:.1f}%{ci} of {result.blast_events or 0:,} blasts"
            f" ({result.cd125_pos_events or 0:,} positive){need}")


def _badge(fig: Figure, x: float, y: float, criterion: str, ha: str, size: float) -> None:
    fig.text(x, y, f" {criterion.replace('_', ' ')} ", fontsize=size, weight="bold", color="white", ha=ha, va="top",
             bbox={"boxstyle": "round,pad=0.3", "facecolor": CRITERION_COLOURS.get(criterion, "#555555"),
                   "edgecolor": "none"})


def _frame(fig: Figure, colour: str) -> Rectangle:
    from matplotlib.patches import Rectangle

    return Rectangle((0.005, 0.005), 0.99, 0.99, transform=fig.transFigure, fill=False,
                     edgecolor=colour, linewidth=6)


def _wrap(lines: list[str], width: int, max_lines: int | None = None) -> str:
    wrapped = [part for line in lines for part in (textwrap.wrap(line, width) or [""])]
    if max_lines is not None and len(wrapped) > max_lines:
        wrapped = wrapped[: max_lines - 1] + ["… (see the result for the full text)"]
    return "\n".join(wrapped)
