"""The panels of a QC page: time QC, one gate on its parent's density, the blasts refinement, CD125 on blasts.

Every panel shows the parent population as a density (2-D histogram, log
colour), the gate outline drawn from the very gate object that counted the
events, and a title with the parent count, the gate count and the percentage.
Each drawer takes the page's Figure, its grid cell and the tube's ``TubeView``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cd125gate.figures.gate_outlines import draw_gate
from cd125gate.figures.raster import add_axes
from cd125gate.figures.ticks import Ticks, axis_label, data_limits, raw_ticks, round_ticks, set_ticks
from cd125gate.figures.tube_view import draw_density, draw_overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.gridspec import SubplotSpec

    from cd125gate.analysis.model import GateStep, Threshold, TubeAnalysis
    from cd125gate.figures.tube_view import TubeView
    from cd125gate.results import SampleResult

# Excluded populations: vivid colours that stand out on the grey density of the blasts.
EXCLUSION_COLOURS = ("#e6007e", "#ff8c00", "#00a651", "#00aeef", "#8e44ad", "#b5651d")
# Gate outlines in one panel: the first gate black, the blast region red, any extra population purple.
PANEL_COLOURS = ("#000000", "#c62828", "#6a1b9a", "#00695c")
STAINED_COLOUR = "#1f77b4"
CONTROL_COLOUR = "#7f7f7f"
THRESHOLD_COLOUR = "#c62828"
# Panel titles at a fixed height: no axis has ticks on top, and an automatic title
# position measures every tick label of its axes at each draw.
TITLE = {"fontsize": 8.5, "y": 1.0}


def _title(step: GateStep, parent_label: str | None = None) -> str:
    parent = parent_label or step.parent or "all events"
    return f"{step.name}: {parent} {step.parent_count:,} → {step.count:,} ({step.percent_of_parent:.1f}%)"


def time_panel(fig: Figure, spec: SubplotSpec, ctx: TubeView) -> None:
    """Event rate and median signals per time bin, removed bins shaded."""
    qc = ctx.tube.time_qc
    inner = spec.subgridspec(2, 1, hspace=0.08)
    rate_ax = add_axes(fig, inner[0])
    signal_ax = add_axes(fig, inner[1])
    edges = np.asarray(qc.bin_edges, dtype=float)
    # Steps as lines, not StepPatches: adding a patch walks its outline in Python to
    # update the data limits, which at thousands of time bins cost more than the panel.
    step_x = np.repeat(edges, 2)[1:-1]
    rate_ax.plot(step_x, np.repeat(np.asarray(qc.rate, dtype=float), 2), color="black", linewidth=1)
    # Scatter (linear, ~1e5) and fluorescence (transformed, ~1) share one axis as
    # a position on each channel's plotted range, so a drift reads as on the plots.
    positions = []
    for channel in sorted(qc.signal, key=ctx.label):
        lo, hi = ctx.limits(channel)
        positions.append((ctx.shown(channel, np.asarray(qc.signal[channel], dtype=float)) - lo) / (hi - lo))
        signal_ax.plot(step_x, np.repeat(positions[-1], 2), linewidth=1, label=ctx.names.get(channel, channel))
    time_limits = (float(edges[0]), float(edges[-1])) if edges[-1] > edges[0] else data_limits(edges)
    time_ticks = round_ticks(time_limits, nbins=7)
    for ax, values, label, size in ((rate_ax, [qc.rate], "events/s", 8),
                                    (signal_ax, positions, "mean signal\n(share of plot range)", 7)):
        for start, stop in _runs(~np.asarray(qc.kept, dtype=bool)):  # one span per run of removed bins
            ax.axvspan(edges[start], edges[stop], color="#c62828", alpha=0.3, linewidth=0)
        limits = data_limits(*values)
        ticks = round_ticks(limits, nbins=4)
        set_ticks(ax, "y", ticks, limits)
        axis_label(ax, "y", label, ticks, fontsize=size)
        # the two axes share the time axis: marks on both, labels under the lower one only
        shared = time_ticks if ax is signal_ax else Ticks(time_ticks.major, (), time_ticks.minor)
        set_ticks(ax, "x", shared, time_limits)
    axis_label(signal_ax, "x", ctx.label(ctx.tube.markers.get("Time", "Time")), time_ticks)
    if qc.signal:
        signal_ax.legend(fontsize=5.5, ncol=3, loc="lower left", frameon=False, handlelength=1)
    title = f"time QC: {np.count_nonzero(~np.asarray(qc.kept, dtype=bool))} of {len(qc.kept)} bins removed"
    if "time_qc" in {s.name for s in ctx.tube.steps}:
        title = _title(ctx.tube.step("time_qc")) + f"\n{title}"
    rate_ax.set_title(title + f" ({100 * qc.removed_fraction:.1f}% of events)", **TITLE)


def _runs(flags):
    """(start, stop) index pairs of the runs of True in a boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    return list(zip(changes[::2], changes[1::2]))


def gate_panel(fig: Figure, spec: SubplotSpec, ctx: TubeView, names: list[str]) -> None:
    """Density of the first gate's parent with the outlines of the named gates."""
    tube = ctx.tube
    steps = [tube.step(n) for n in names]
    x, y = _panel_axes(ctx, steps)
    ax = add_axes(fig, spec)
    draw_density(ax, ctx, tube.parent_mask(steps[0]), x, y)
    for step, colour in zip(steps, PANEL_COLOURS):
        draw_gate(ax, step.gate, x, y, colour, f"{step.name} {step.percent_of_parent:.1f}%", ctx)
    ax.set_title("\n".join(_title(s) for s in steps), **TITLE)


def blasts_panel(fig: Figure, spec: SubplotSpec, ctx: TubeView) -> None:
    """The backbone refinement: blast_region events with the excluded populations in colour."""
    from matplotlib.patches import Patch

    tube = ctx.tube
    blasts = tube.step("blasts")
    exclusions = [s for s in tube.steps if s.exclusion and s.parent == blasts.parent]
    x, y = _refinement_axes(ctx, exclusions, blasts)
    ax = add_axes(fig, spec)
    draw_density(ax, ctx, blasts.mask, x, y, cmap="Greys")
    draw_gate(ax, blasts.gate, x, y, PANEL_COLOURS[0], None, ctx)
    handles = [Patch(color="#555555", label=f"blasts {blasts.count:,}")]
    for step, colour in zip(exclusions, EXCLUSION_COLOURS * 4):
        draw_overlay(ax, ctx, step.mask, x, y, colour)
        draw_gate(ax, step.gate, x, y, colour, None, ctx)
        handles.append(Patch(color=colour, label=f"{step.name} {step.count:,} ({step.percent_of_parent:.1f}%)"))
    ax.legend(handles=handles, fontsize=6.5, loc="upper right", framealpha=0.8)
    ax.set_title(_title(blasts) + "\nexcluded populations in colour", **TITLE)


def cd125_panel(fig: Figure, spec: SubplotSpec, ctx: TubeView, contexts: list[TubeView],
                threshold: Threshold | None, result: SampleResult) -> None:
    """CD125 of the stained blasts against the control blasts, with the cut-off.

    ``contexts``: the stained tube's TubeView, then the control's (if any).
    """
    from matplotlib.patches import StepPatch

    stained = contexts[0].tube
    channel = stained.markers["CD125"]
    ax = add_axes(fig, spec)
    # one x range for both tubes, so neither tube's blasts are piled on the edge
    ranges = [c.limits(c.tube.markers["CD125"]) for c in contexts]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    labels = ("stained", "control")
    colours = (STAINED_COLOUR, CONTROL_COLOUR)
    # Coarser bins for small populations: a control of ~1,000 blasts in 200 bins is noise.
    fewest = min(int(_blast_mask(c.tube).sum()) for c in contexts)
    edges = np.linspace(lo, hi, int(np.clip(fewest // 15, 30, 120)) + 1)
    texts, handles, highest = [], [], 0.0
    for c, colour, label in zip(contexts, colours, labels):
        tube = c.tube
        values = tube.column(tube.markers["CD125"])[_blast_mask(tube)]
        percent = _percent_histogram(c.shown(channel, values), edges)
        highest = max(highest, float(percent.max(initial=0.0)))
        # added as an artist with the limits set by hand: ax.stairs walks the outline in Python
        handles.append(ax.add_artist(StepPatch(
            percent, edges, baseline=0, fill=label == "stained", color=colour,
            alpha=0.45 if label == "stained" else 1, linewidth=1.2, label=f"{label} blasts ({values.size:,})")))
        if threshold is not None and values.size:
            texts.append(f"{label}: {100 * np.mean(values >= threshold.value):.1f}% above")
    overlap = (result.threshold or {}).get("overlap")
    if overlap:  # the dim-CD125 guard: at least this share is brighter than the control
        texts.append(f"cumulative subtraction: {100 * overlap['cumulative_subtraction']:.1f}%")
    texts += _clone_lines(result.clones)
    texts += _internal_control_lines(result.internal_controls)
    x_ticks = raw_ticks(ax, "x", contexts[0].scales[channel], (lo, hi))
    axis_label(ax, "x", ctx.label(channel), x_ticks)
    y_limits = (0.0, 1.05 * highest if highest > 0 else 1.0)
    y_ticks = round_ticks(y_limits, nbins=5)
    set_ticks(ax, "y", y_ticks, y_limits)
    axis_label(ax, "y", "% of blasts per bin", y_ticks)
    if threshold is not None:
        cut = contexts[0].shown(channel, threshold.value)
        handles.append(ax.axvline(cut, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5,
                                  label=f"threshold {threshold.value_raw:,.4g} raw"))
        ax.axvspan(cut, hi, color=THRESHOLD_COLOUR, alpha=0.06, linewidth=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(*y_limits)
    ax.legend(handles=handles, fontsize=6.5, loc="upper left", framealpha=0.8)
    ax.text(0.98, 0.97, "\n".join([_fraction_short(result)] + texts), transform=ax.transAxes, ha="right",
            va="top", fontsize=7, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#bbbbbb"})
    step = _maybe_step(stained, "cd125_pos")
    ax.set_title(_title(step) if step else "CD125 on blasts", **TITLE)


def _clone_lines(clones):
    """One line per blast clone when there are several: its CD125+ fraction and the levels that set it apart."""
    if not clones or len(clones) < 2:
        return []
    levels = [dict(p.split(" ", 1) for p in c["phenotype"].split(", ")) for c in clones]
    differ = [m for m in levels[0] if len({lv.get(m) for lv in levels}) > 1]
    lines = ["blast clones:"]
    for c, lv in zip(clones, levels):
        shown = f"{100 * c['cd125_pos_fraction']:.0f}%" if c["cd125_pos_fraction"] is not None else "n/a"
        apart = ", ".join(f"{m} {lv[m]}" for m in differ[:2])
        lines.append(f"{c['clone']}: {shown} of {c['blast_events']:,}" + (f" ({apart})" if apart else ""))
    return lines


def _internal_control_lines(controls):
    """The stained tube's internal controls against the same cut-off, one line each (+ CD125+ by nature)."""
    lines = [f"{name} ({'+' if c['role'] == 'positive' else '-'}): {100 * c['cd125_pos_share']:.0f}% above"
             for name, c in (controls or {}).items() if c["events"] and c["cd125_pos_share"] is not None]
    return ["internal controls, fitted events:"] + lines if lines else []


def _fraction_short(result):
    fraction = result.cd125_pos_fraction
    if fraction is None:
        return "CD125+: n/a"
    if result.ci_low is None:
        return f"CD125+ {100 * fraction:.1f}%"
    return f"CD125+ {100 * fraction:.1f}% [{100 * result.ci_low:.1f}–{100 * result.ci_high:.1f}]"


# --- events and axes ---------------------------------------------------------


def _maybe_step(tube: TubeAnalysis, name: str) -> GateStep | None:
    return next((s for s in tube.steps if s.name == name), None)


def _blast_mask(tube):
    step = _maybe_step(tube, "blasts")
    return step.mask if step is not None else np.zeros(tube.data.shape[0], dtype=bool)


def _panel_axes(ctx, steps):
    """The (x, y) channels of a panel: the first 2-D step's, else the 1-D gate against SSC-A."""
    for step in steps:
        if step.y is not None:
            return step.x, step.y
    return steps[0].x, ctx.tube.markers.get("SSC-A", steps[0].x)


def _refinement_axes(ctx, exclusions, blasts):
    """The blasts gate's own axes, else the first exclusion's, else CD123 vs HLA-DR, else the region's."""
    for step in [blasts] + exclusions:
        if step.y is not None:
            return step.x, step.y
    markers = ctx.tube.markers
    if "CD123" in markers and "HLA-DR" in markers:
        return markers["HLA-DR"], markers["CD123"]
    return _panel_axes(ctx, [ctx.tube.step("blast_region")])

def _percent_histogram(values, edges):
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    return 100.0 * counts / max(values.size, 1)
