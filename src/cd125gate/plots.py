"""QC figures: one page per tube showing which events every gate took.

The reviewer reads a tube's figure left to right, top to bottom, in gating
order. Every panel shows the parent population as a density (2-D histogram,
log colour), the gate outline drawn from the very FlowKit gate object that
counted the events, and a title with the parent count, the gate count and the
percentage. Axes are in transformed units with tick labels in raw units;
a channel the file log-amplified but the gating keeps linear (scatter of older
instruments) is drawn on a log10 axis (``_display_scale``), display only.

Drawn at raster speed: every density is one image of precomputed colours from
a 2-D histogram (never one artist per event); each channel's bin indices,
limits and ticks are computed once per figure set; tick marks are one marker
line per axis and tick labels and axis titles plain Text at fixed offsets,
instead of matplotlib Tick objects and measured label positions (which cost
more than the data); PNGs are encoded here (``_png_bytes``), not by Pillow.
All text is plain text: a ``$`` in a channel name, sample id, reason or path
is printed as is, never parsed as mathtext.

matplotlib is imported inside the functions: importing this module stays cheap.
"""

import io
import os
import sys
import textwrap
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .fileio import atomic_write_bytes
from .model import GATE_ORDER

# Panel names written into each tube figure's PNG (tEXt PANELS_KEY), in drawing order.
BLAST_GATE_PANEL, CD125_PANEL = "blast_gate", "cd125"   # CD45 / SSC-A with the blast region; CD125 on blasts
PANELS_KEY = "cd125gate panels"
CRITERION_COLOURS = {"MET": "#1a7f37", "NOT_MET": "#1f4e9c", "REVIEW": "#d97706", "FAILED": "#c62828"}
# Excluded populations: vivid colours that stand out on the grey density of the blasts.
EXCLUSION_COLOURS = ("#e6007e", "#ff8c00", "#00a651", "#00aeef", "#8e44ad", "#b5651d")
# Gate outlines in one panel: the first gate black, the blast region red, any extra population purple.
PANEL_COLOURS = ("#000000", "#c62828", "#6a1b9a", "#00695c")
STAINED_COLOUR = "#1f77b4"
CONTROL_COLOUR = "#7f7f7f"
THRESHOLD_COLOUR = "#c62828"
FORMATS = ("png", "svg", "pdf")
BINS = 200              # density resolution per axis (at most 255: bin indices are uint8)
NCOLS = 4               # panels per row
PANEL_INCHES = (4.3, 3.9)
HEADER_INCHES = 1.25
FOOTER_INCHES = 0.6     # how each gate was found, below the panels so no note covers events
DPI = 100
# Panel titles at a fixed height: no axis has ticks on top, and an automatic title
# position measures every tick label of its axes at each draw.
TITLE = {"fontsize": 8.5, "y": 1.0}
# zlib level of the PNGs: 1 encodes a page ~2.5x faster than the default 6, for a file
# ~20% larger (flat colours and text compress well at any level).
PNG_COMPRESSION = 1
# Axis limits are quantiles of at most this many events (a fixed stride through the
# tube): display only, and a full quantile of 1,000,000 events per channel is slow.
# 100,000 still leaves 50 events in each 0.05% tail.
LIMIT_EVENTS = 100_000
# No dates or software versions in the files: the same input gives the same bytes.
METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
}


def plot_sample(stained, control, threshold, result, out_dir, formats=("png",)):
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
        ``qc.<fmt>`` for the stained tube, then ``qc_control.<fmt>`` for the control.
    """
    formats = _check_formats(formats)
    contexts = {id(t): _Context(t, stained) for t in (stained, control) if t is not None}

    def draw(tube, stem):
        return _save(_tube_figure(tube, stained, control, threshold, result, contexts), out_dir, stem, formats)

    with _plain_text():
        # The control's page is drawn in a forked child beside the stained tube's (a page
        # costs ~0.3 s of CPU); should the child fail, it is drawn here after all.
        child = _beside(lambda: draw(control, "qc_control")) if control is not None else None
        paths = draw(stained, "qc")
        if control is not None:
            done = child is not None and child()
            paths += [Path(out_dir) / f"qc_control.{fmt}" for fmt in formats] if done else draw(control, "qc_control")
    return paths


def _beside(call):
    """Run ``call()`` in a forked child process; return ``wait() -> True if it succeeded``.

    None where that cannot run beside the caller (no fork, or one CPU): the
    caller then does the work itself. The child leaves by ``os._exit``, never
    through the parent's exit handlers, and reports a failure on its stderr.
    """
    if not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's own coverage is not collected
        status = 1
        try:
            call()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)

    def wait():
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

    return wait


def plot_failure(result, out_dir, formats=("png",)):
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
    formats = _check_formats(formats)
    with _plain_text():
        return _save(_failure_figure(result), out_dir, "qc", formats)


def plot_message(result, lines, out_dir, stem, formats=("png",)):
    """A page of text in place of a figure (``stem.<fmt>``): the sample, its criterion and ``lines``."""
    formats = _check_formats(formats)
    with _plain_text():
        return _save(_message_figure(result, lines), out_dir, stem, formats)


def _message_figure(result, lines):
    """A page of text: the sample's name and criterion badge above ``lines``."""
    fig = _new_figure((10, 4.5))
    fig.text(0.03, 0.86, str(result.sample_id), fontsize=18, weight="bold")
    _badge(fig, 0.97, 0.86, result.criterion, ha="right", size=18)
    fig.text(0.03, 0.74, _wrap(lines, 110), fontsize=11, va="top", family="monospace")
    return fig


def _failure_figure(result):
    lines = ["This tube could not be analysed; no CD125 result exists for it.", ""]
    lines += [f"Reason: {r}" for r in result.reasons or ["(no reason recorded)"]]
    lines += [f"Warning: {w}" for w in result.warnings]
    fcs = result.inputs.get("fcs") or {}
    if fcs.get("path"):
        lines += ["", f"Input: {fcs['path']}"]
    fig = _message_figure(result, lines)
    fig.patches.append(_frame(fig, CRITERION_COLOURS.get(result.criterion, "#c62828")))
    return fig


@contextmanager
def _plain_text():
    """Every Text made (and drawn) inside is plain text, not mathtext, and not hinted.

    User text (channel names, sample ids, reasons, folder names, FCS keywords)
    may hold ``$...^...$``, which mathtext would typeset or refuse with an
    exception; nothing here is meant as mathtext (decade labels are Unicode
    superscripts). Text reads this setting when it is created, so both the
    building and the saving of a figure run inside.

    Hinting (fitting glyphs to the pixel grid, at matplotlib's default eight
    times the horizontal resolution) took a third of a QC page's time in the
    raster backend (~0.15 s of ~0.45 s per page); unhinted text is as legible
    at the pages' 100 dpi, and vector formats never hint.
    """
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.hinting": "no_hinting"}):
        yield


# --- figure layout -----------------------------------------------------------


def _tube_figure(tube, stained, control, threshold, result, contexts=None):
    """One page of panels for ``tube``, in gating order.

    ``contexts`` (id(tube) -> _Context) lets the two figures of a sample share
    each tube's limits, ticks and bin indices; missing ones are made here.
    """
    contexts = dict(contexts or {})
    for t in (tube, stained, control):
        if t is not None and id(t) not in contexts:
            contexts[id(t)] = _Context(t, stained)
    named = _panels(tube)
    others = [contexts[id(t)] for t in (stained, control) if t is not None]
    named.append((CD125_PANEL, lambda fig, spec, ctx: _cd125_panel(fig, spec, ctx, others, threshold, result)))
    panels = [draw for _, draw in named]
    nrows = -(-len(panels) // NCOLS)
    width = PANEL_INCHES[0] * NCOLS
    height = PANEL_INCHES[1] * nrows + HEADER_INCHES + FOOTER_INCHES
    fig = _page_figure((width, height))
    grid = fig.add_gridspec(nrows, NCOLS, left=0.045, right=0.99, bottom=(FOOTER_INCHES + 0.45) / height,
                            top=1 - (HEADER_INCHES + 0.35) / height, wspace=0.3, hspace=0.5)
    ctx = contexts[id(tube)]
    with _plain_text():
        for i, draw in enumerate(panels):
            draw(fig, grid[i // NCOLS, i % NCOLS], ctx)
        _header(fig, tube, result, threshold, height)
        _footer(fig, tube, height)
    for ax in fig.cd125gate_spare_axes:  # made ahead, not needed by this page
        fig.delaxes(ax)
    fig.cd125gate_spare_axes = []
    # Which panel is where, for the printed pages that cut the key panels out of the PNG.
    fig.cd125gate_panels = ",".join(name for name, _ in named)
    return fig


def _panels(tube):
    """(name, drawer) of the panels for the gates present in ``tube``, in hierarchy order."""
    names = {s.name for s in tube.steps}
    panels = []
    if tube.time_qc is not None:
        panels.append(("time", _time_panel))
    for name in ("cells", "singlets", "viable"):
        if name in names:
            panels.append((name, lambda fig, spec, ctx, name=name: _gate_panel(fig, spec, ctx, [name])))
    cd45_panel = [n for n in ("leukocytes", "blast_region") if n in names]
    extras = [s for s in tube.steps if s.name not in GATE_ORDER and not s.exclusion]
    if cd45_panel:
        # Extra populations on the same axes (the lymphocytes used as an internal
        # CD125-negative reference) are drawn with the gates they derive from.
        axes = (tube.step(cd45_panel[-1]).x, tube.step(cd45_panel[-1]).y)
        cd45_panel += [s.name for s in extras if (s.x, s.y) == axes]
        panels.append((BLAST_GATE_PANEL, lambda fig, spec, ctx: _gate_panel(fig, spec, ctx, cd45_panel)))
    for name in ("blast_markers", "myeloid", "intact"):
        if name in names:
            panels.append((name, lambda fig, spec, ctx, name=name: _gate_panel(fig, spec, ctx, [name])))
    for step in extras:
        if step.name not in cd45_panel:
            panels.append((step.name, lambda fig, spec, ctx, name=step.name: _gate_panel(fig, spec, ctx, [name])))
    if "blasts" in names:
        panels.append(("blasts", _blasts_panel))
    return panels


class _Context:
    """Per-tube caches shared by the panels: limits, ticks, bin indices and labels of each channel.

    ``stained``: the tube whose file decides which channels are drawn on a log axis
    (``_display_scale``), so that the control's page draws every channel as the
    stained tube's does (as both share the stained tube's scales); default ``tube``.
    """

    def __init__(self, tube, stained=None):
        self.tube = tube
        self.names = {channel: marker for marker, channel in tube.markers.items()}
        fcs = (stained if stained is not None else tube).fcs
        self.scales = {channel: _display_scale(fcs, channel, scale) for channel, scale in tube.scales.items()}
        self._limits = {}
        self._ticks = {}
        self._bins = {}

    def values(self, channel):
        """The channel's events in the units its axis is drawn in."""
        return self.shown(channel, self.tube.column(channel))

    def shown(self, channel, values):
        """``values`` of the channel (the gating's units) where its axis draws them."""
        scale = self.scales.get(channel)
        return scale.forward(values) if scale is not None and scale.kind == "log" else values

    def limits(self, channel):
        if channel not in self._limits:
            self._limits[channel] = _limits(self.values(channel), self.scales[channel])
        return self._limits[channel]

    def ticks(self, channel):
        """Ticks of the channel's scale over its limits: computed once, used by every panel."""
        if channel not in self._ticks:
            self._ticks[channel] = _tick_values(self.scales[channel], self.limits(channel))
        return self._ticks[channel]

    def bins(self, channel):
        """Histogram bin (0..BINS-1) of every event on the channel's limits, off-scale events on the edge."""
        if channel not in self._bins:
            self._bins[channel] = _bin_index(self.values(channel), self.limits(channel))
        return self._bins[channel]

    def label(self, channel):
        marker = self.names.get(channel)
        return f"{marker} ({channel})" if marker and marker != channel else channel

    def axis(self, ax, which, channel):
        _set_ticks(ax, which, self.ticks(channel), self.limits(channel))
        _axis_label(ax, which, self.label(channel), self.ticks(channel))


def _header(fig, tube, result, threshold, height):
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


def _footer(fig, tube, height):
    """The note of every gate, in hierarchy order."""
    notes = [f"{s.name}: {s.note}" for s in tube.steps if s.note]
    if notes:
        text = _wrap(["How each gate was found — " + " · ".join(notes)], 250, max_lines=4)
        fig.text(0.01, (FOOTER_INCHES - 0.05) / height, text, fontsize=7, va="top", color="#333333")


def _fraction_text(result):
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


def _badge(fig, x, y, criterion, ha, size):
    fig.text(x, y, f" {criterion.replace('_', ' ')} ", fontsize=size, weight="bold", color="white", ha=ha, va="top",
             bbox={"boxstyle": "round,pad=0.3", "facecolor": CRITERION_COLOURS.get(criterion, "#555555"),
                   "edgecolor": "none"})


def _frame(fig, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((0.005, 0.005), 0.99, 0.99, transform=fig.transFigure, fill=False,
                     edgecolor=colour, linewidth=6)


def _wrap(lines, width, max_lines=None):
    wrapped = [part for line in lines for part in (textwrap.wrap(line, width) or [""])]
    if max_lines is not None and len(wrapped) > max_lines:
        wrapped = wrapped[: max_lines - 1] + ["… (see the result for the full text)"]
    return "\n".join(wrapped)


def _title(step, parent_label=None):
    parent = parent_label or step.parent or "all events"
    return f"{step.name}: {parent} {step.parent_count:,} → {step.count:,} ({step.percent_of_parent:.1f}%)"


# --- panels ------------------------------------------------------------------


def _time_panel(fig, spec, ctx):
    """Event rate and median signals per time bin, removed bins shaded."""
    qc = ctx.tube.time_qc
    inner = spec.subgridspec(2, 1, hspace=0.08)
    rate_ax = _add_axes(fig, inner[0])
    signal_ax = _add_axes(fig, inner[1])
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
    time_limits = (float(edges[0]), float(edges[-1])) if edges[-1] > edges[0] else _data_limits(edges)
    time_ticks = _round_ticks(time_limits, nbins=7)
    for ax, values, label, size in ((rate_ax, [qc.rate], "events/s", 8),
                                    (signal_ax, positions, "mean signal\n(share of plot range)", 7)):
        for start, stop in _runs(~np.asarray(qc.kept, dtype=bool)):  # one span per run of removed bins
            ax.axvspan(edges[start], edges[stop], color="#c62828", alpha=0.3, linewidth=0)
        limits = _data_limits(*values)
        ticks = _round_ticks(limits, nbins=4)
        _set_ticks(ax, "y", ticks, limits)
        _axis_label(ax, "y", label, ticks, fontsize=size)
        # the two axes share the time axis: marks on both, labels under the lower one only
        shared = time_ticks if ax is signal_ax else _Ticks(time_ticks.major, (), time_ticks.minor)
        _set_ticks(ax, "x", shared, time_limits)
    _axis_label(signal_ax, "x", ctx.label(ctx.tube.markers.get("Time", "Time")), time_ticks)
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


def _gate_panel(fig, spec, ctx, names):
    """Density of the first gate's parent with the outlines of the named gates."""
    tube = ctx.tube
    steps = [tube.step(n) for n in names]
    x, y = _panel_axes(ctx, steps)
    ax = _add_axes(fig, spec)
    _density(ax, ctx, tube.parent_mask(steps[0]), x, y)
    for step, colour in zip(steps, PANEL_COLOURS):
        _draw_gate(ax, step.gate, x, y, colour, f"{step.name} {step.percent_of_parent:.1f}%", ctx)
    ax.set_title("\n".join(_title(s) for s in steps), **TITLE)


def _blasts_panel(fig, spec, ctx):
    """The backbone refinement: blast_region events with the excluded populations in colour."""
    from matplotlib.patches import Patch

    tube = ctx.tube
    blasts = tube.step("blasts")
    exclusions = [s for s in tube.steps if s.exclusion and s.parent == blasts.parent]
    x, y = _refinement_axes(ctx, exclusions, blasts)
    ax = _add_axes(fig, spec)
    _density(ax, ctx, blasts.mask, x, y, cmap="Greys")
    _draw_gate(ax, blasts.gate, x, y, PANEL_COLOURS[0], None, ctx)
    handles = [Patch(color="#555555", label=f"blasts {blasts.count:,}")]
    for step, colour in zip(exclusions, EXCLUSION_COLOURS * 4):
        _overlay(ax, ctx, step.mask, x, y, colour)
        _draw_gate(ax, step.gate, x, y, colour, None, ctx)
        handles.append(Patch(color=colour, label=f"{step.name} {step.count:,} ({step.percent_of_parent:.1f}%)"))
    ax.legend(handles=handles, fontsize=6.5, loc="upper right", framealpha=0.8)
    ax.set_title(_title(blasts) + "\nexcluded populations in colour", **TITLE)


def _cd125_panel(fig, spec, ctx, contexts, threshold, result):
    """CD125 of the stained blasts against the control blasts, with the cut-off.

    ``contexts``: the stained tube's _Context, then the control's (if any).
    """
    from matplotlib.patches import StepPatch

    stained = contexts[0].tube
    channel = stained.markers["CD125"]
    ax = _add_axes(fig, spec)
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
    x_ticks = _raw_ticks(ax, "x", contexts[0].scales[channel], (lo, hi))
    _axis_label(ax, "x", ctx.label(channel), x_ticks)
    y_limits = (0.0, 1.05 * highest if highest > 0 else 1.0)
    y_ticks = _round_ticks(y_limits, nbins=5)
    _set_ticks(ax, "y", y_ticks, y_limits)
    _axis_label(ax, "y", "% of blasts per bin", y_ticks)
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


def _maybe_step(tube, name):
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


@dataclass(frozen=True)
class _LogAxis:
    """Display-only log10 axis of a channel the gating keeps linear; values below ``floor`` are drawn at it."""

    channel: str
    floor: float            # the channel's lowest decoded value (> 0)
    kind: str = "log"

    def forward(self, raw):
        return np.log10(np.maximum(raw, self.floor))

    def inverse(self, shown):
        return 10.0 ** np.asarray(shown, dtype=float)


def _display_scale(fcs, channel, scale):
    """The scale ``channel`` is drawn on: ``scale`` itself, or a _LogAxis (issue 17).

    Why: an instrument that log-amplified a channel ($PnE = decades,offset, as the
    FC500's "SS Log") stored it in decades; the reader decodes it to linear
    values (offset..offset·10^decades) and scatter stays linear for the gating,
    so on a linear axis every event sits on the bottom few pixels. Such a
    channel is drawn on a log10 axis instead, floored at its lowest decoded value
    (offset / gain): display only, the gating, its checks and the exported gates
    never see it. Only integer data are decoded (float data are linear whatever
    $PnE says), and a channel already on a logicle/arcsinh scale keeps it.
    """
    if scale.kind != "linear" or fcs is None:
        return scale
    found = next((c for c in getattr(fcs, "channels", ()) if c.name == channel), None)
    if found is None:
        return scale
    decades, offset = found.amplification
    datatype = fcs.keywords.get(f"$P{found.index}DATATYPE", fcs.datatype).strip().upper()
    floor = offset / found.gain if found.gain not in (None, 0.0, 1.0) else offset
    if decades <= 0 or datatype != "I" or not floor > 0:
        return scale
    return _LogAxis(channel, float(floor))


def _limits(values, scale):
    """Axis range covering all but the most extreme 0.05% of events on each side.

    Events beyond it are piled on the edge of the plot (as cytometry software
    does), so nothing is hidden and one stray event does not squash the plot.
    """
    if values.size > LIMIT_EVENTS:
        values = values[:: -(-values.size // LIMIT_EVENTS)]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.quantile(finite, [0.0005, 0.9995])
    if scale.kind == "linear":
        lo = min(lo, 0.0)
    pad = 0.03 * (hi - lo) if hi > lo else 1.0
    return (float(lo - pad), float(hi + pad))


def _bin_index(values, limits):
    """Bin (0..BINS-1, uint8) of each value on ``limits``; off-scale values go to the edge bins."""
    scaled = np.subtract(values, limits[0])  # one new array, then in place: ~2x faster on 1e6 events
    scaled *= BINS / (limits[1] - limits[0])
    np.fmax(scaled, 0, out=scaled)  # fmax takes the 0 over NaN: NaN lands in bin 0, as a value below would
    np.minimum(scaled, BINS - 1, out=scaled)
    return scaled.astype(np.uint8)


def _counts(ix, iy, mask=None):
    """BINS x BINS counts (rows y, columns x) of the events (``mask``: those selected) with bin indices ``ix``, ``iy``.

    Binning by hand with bincount: np.histogram2d drops out-of-range events and
    is several times slower on a million events. The flat bin fits in uint16
    (BINS² < 65536), which halves the time against intp.
    """
    flat = iy.astype(np.uint16)
    flat *= BINS
    flat += ix
    if mask is not None:
        flat = flat[mask]
    return np.bincount(flat, minlength=BINS * BINS).reshape(BINS, BINS)


def _histogram2d(x, y, xlim, ylim):
    """Counts on a BINS x BINS grid, off-scale events piled on the edges."""
    return _counts(_bin_index(x, xlim), _bin_index(y, ylim))


def _density(ax, ctx, mask, x, y, cmap="turbo"):
    """Pseudo-colour density (log colour) of the masked events: one image of precomputed RGBA."""
    xlim, ylim = ctx.limits(x), ctx.limits(y)
    counts = _counts(ctx.bins(x), ctx.bins(y), mask)
    ax.imshow(_density_rgba(counts, cmap), origin="lower", extent=(*xlim, *ylim), aspect="auto",
              interpolation="nearest")
    ctx.axis(ax, "x", x)
    ctx.axis(ax, "y", y)
    ax.text(0.99, 0.01, f"{int(mask.sum()):,} events", transform=ax.transAxes, ha="right", va="bottom",
            fontsize=6.5, color="#333333")


def _density_rgba(counts, cmap):
    """(BINS, BINS, 4) uint8 colours of ``counts``: log scale from 1 to the maximum, empty bins white.

    The same colours as imshow with LogNorm(1, max) and the colormap's 256 entries,
    computed with one table look-up instead of matplotlib's masked-array path.
    """
    table = _colour_table(cmap)
    top = max(int(counts.max()), 2)
    # LogNorm's arithmetic, in its order (log10, divide, then times the table size)
    scaled = np.log10(np.maximum(counts, 1)) / np.log10(top) * len(table)
    rgba = table[np.minimum(scaled.astype(np.intp), len(table) - 1)]
    rgba[counts == 0] = 255  # white, opaque: as the plot background
    return rgba


@cache
def _colour_table(cmap):
    """The colormap's 256 colours as uint8 RGBA rows."""
    import matplotlib

    colours = matplotlib.colormaps[cmap]
    if cmap == "Greys":
        # keep the faintest blasts visible against the white background
        colours = matplotlib.colors.ListedColormap(colours(np.linspace(0.3, 1.0, 256)))
    return colours(np.arange(colours.N), bytes=True)


def _overlay(ax, ctx, mask, x, y, colour):
    """Events of one population in a single colour, opacity by log density."""
    from matplotlib.colors import to_rgb

    xlim, ylim = ctx.limits(x), ctx.limits(y)
    counts = _counts(ctx.bins(x), ctx.bins(y), mask)
    rgba = np.zeros((BINS, BINS, 4))
    rgba[..., :3] = to_rgb(colour)
    if counts.max() > 0:
        rgba[..., 3] = np.where(counts > 0, 0.45 + 0.55 * np.log1p(counts) / np.log1p(counts.max()), 0.0)
    ax.imshow(rgba, origin="lower", extent=(*xlim, *ylim), aspect="auto", interpolation="nearest")


@dataclass(frozen=True)
class _Ticks:
    """Where one axis's ticks go (transformed units) and what the major ones say (raw units)."""

    major: np.ndarray
    labels: tuple
    minor: np.ndarray


def _raw_ticks(ax, which, scale, limits):
    """Ticks at ``scale.forward(raw)`` labelled in raw units; returns the _Ticks drawn."""
    ticks = _tick_values(scale, limits)
    _set_ticks(ax, which, ticks, limits)
    return ticks


def _tick_values(scale, limits):
    """The _Ticks of ``scale`` over ``limits``: raw decades (or round numbers) at their forward positions."""
    if scale.kind == "linear":
        raw, labels = _linear_ticks(scale, limits)
        minor = []
    elif scale.kind == "log":
        raw, labels, minor = _log_ticks(scale, limits)
    else:
        raw, labels, minor = _decade_ticks(scale, limits)
    positions = np.asarray(scale.forward(np.asarray(raw, dtype=float)), dtype=float)
    keep = _spaced(positions, limits)
    minor_pos = np.asarray(scale.forward(np.asarray(minor, dtype=float)), dtype=float)
    minor_pos = minor_pos[(minor_pos >= limits[0]) & (minor_pos <= limits[1])]
    return _Ticks(positions[keep], tuple(labels[i] for i in keep), minor_pos)


# Tick geometry in points, as matplotlib's defaults draw it: mark length, gap to the label, gap to the axis title.
MAJOR_TICK, MINOR_TICK, TICK_PAD, LABEL_PAD = 3.5, 2.0, 3.5, 4.0
TICK_FONT = 7
# Widest glyph of a tick label (digits, K, M, minus) in ems of DejaVu Sans: an upper bound that
# places a y axis title clear of its tick labels without measuring any text.
TICK_EM = 0.64


def _set_ticks(ax, which, ticks, limits):
    """Limits, tick marks and tick labels of one axis, drawn as plain artists.

    A matplotlib Tick is five artists, re-laid out and measured at every draw,
    and the axis title is then placed by measuring every tick label: together
    they cost more than the data. Here the marks of each axis are one marker
    line (major, and minor when the scale has them) and each label one Text
    at a fixed offset in points, exactly where matplotlib would put them; the
    axis's own Ticks are switched off.
    """
    from matplotlib.lines import Line2D
    from matplotlib.markers import TICKDOWN, TICKLEFT
    from matplotlib.ticker import NullLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(NullLocator())
    axis.set_minor_locator(NullLocator())
    (ax.set_xlim if which == "x" else ax.set_ylim)(*limits)
    transform = ax.get_xaxis_transform() if which == "x" else ax.get_yaxis_transform()
    for positions, size, width in ((ticks.major, MAJOR_TICK, 0.8), (ticks.minor, MINOR_TICK, 0.6)):
        if len(positions):
            zeros = np.zeros(len(positions))
            points, marker = ((positions, zeros), TICKDOWN) if which == "x" else ((zeros, positions), TICKLEFT)
            ax.add_artist(Line2D(*points, linestyle="none", marker=marker, markersize=size, markeredgewidth=width,
                                 color="black", transform=transform, clip_on=False))
    gap = (MAJOR_TICK + TICK_PAD) / 72
    if which == "x":
        shifted, align = _shifted(ax, transform, 0, -gap), {"ha": "center", "va": "top"}
    else:
        shifted, align = _shifted(ax, transform, -gap, 0), {"ha": "right", "va": "center_baseline"}
    for position, label in zip(ticks.major, ticks.labels):
        xy = (position, 0) if which == "x" else (0, position)
        ax.text(*xy, label, transform=shifted, fontsize=TICK_FONT, clip_on=False, **align)


def _axis_label(ax, which, text, ticks=None, fontsize=8):
    """The axis title, beyond the labels of ``ticks`` (as ``_set_ticks`` drew them; None: no labels)."""
    if which == "x":
        depth = MAJOR_TICK + TICK_PAD + 1.2 * TICK_FONT if ticks is not None and len(ticks.labels) else MAJOR_TICK
        ax.text(0.5, 0, text, transform=_shifted(ax, ax.transAxes, 0, -(depth + LABEL_PAD) / 72), fontsize=fontsize,
                ha="center", va="top", clip_on=False)
    else:
        widest = max((len(label) for label in ticks.labels), default=0) if ticks is not None else 0
        depth = MAJOR_TICK + TICK_PAD + TICK_EM * TICK_FONT * widest if widest else MAJOR_TICK
        ax.text(0, 0.5, text, transform=_shifted(ax, ax.transAxes, -(depth + LABEL_PAD) / 72, 0),
                fontsize=fontsize, ha="right", va="center", rotation=90, rotation_mode="default", clip_on=False)


def _shifted(ax, transform, dx, dy):
    """``transform`` then a shift of (dx, dy) inches on the page."""
    from matplotlib.transforms import ScaledTranslation

    return transform + ScaledTranslation(dx, dy, ax.figure.dpi_scale_trans)


def _round_ticks(limits, nbins):
    """Round-number _Ticks over ``limits`` (linear data axes: event rate, signal, % per bin)."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = limits
    values = [t for t in MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    return _Ticks(np.asarray(values, dtype=float), tuple(_short_number(t) for t in values), np.zeros(0))


def _data_limits(*arrays, margin=0.05):
    """(lo, hi) of the finite values with matplotlib's 5% margins."""
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays] + [np.zeros(0)])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = margin * (hi - lo)
    return (lo - pad, hi + pad)


def _linear_ticks(scale, limits):
    from matplotlib.ticker import MaxNLocator

    lo, hi = np.asarray(scale.inverse(np.asarray(limits, dtype=float)), dtype=float)
    raw = [t for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    return raw, [_short_number(t) for t in raw]


SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _decade_ticks(scale, limits):
    """Decades -10^7..10^7 and 0, labelled with Unicode superscripts (plain text, no mathtext)."""
    decades = range(1, 8)
    raw = [-(10.0**d) for d in reversed(decades)] + [0.0] + [10.0**d for d in decades]
    labels = ([f"−10{str(d).translate(SUPERSCRIPTS)}" for d in reversed(decades)] + ["0"]
              + [f"10{str(d).translate(SUPERSCRIPTS)}" for d in decades])
    minor = [sign * m * 10.0**d for d in range(1, 7) for m in range(2, 10) for sign in (-1, 1)]
    return raw, labels, sorted(minor)


def _log_ticks(scale, limits):
    """Powers of ten on a _LogAxis (10⁰, 10¹, ... as the decades of the other axes), 2..9 between."""
    lo, hi = np.asarray(scale.inverse(np.asarray(limits, dtype=float)), dtype=float)
    lo = max(lo, scale.floor)  # below the floor every value is drawn at the floor
    decades = range(int(np.ceil(np.log10(lo))), int(np.floor(np.log10(hi))) + 1)
    raw = [10.0**d for d in decades]
    labels = [f"10{str(d).translate(SUPERSCRIPTS)}" for d in decades]
    if not raw:  # less than a decade shown (a nearly constant channel): round numbers instead
        raw, labels = _linear_ticks(scale, limits)
        return raw, labels, []
    minor = [m * 10.0**d for d in range(decades.start - 1, decades.stop) for m in range(2, 10)]
    return raw, labels, [v for v in minor if lo <= v <= hi]


def _spaced(positions, limits, min_gap=0.06):
    """Indices of in-range ticks far enough apart to read: 0 first, then the largest magnitudes.

    Near zero a logicle/arcsinh scale is linear, so 10^1, 10^2 and 0 all land
    on top of each other; keep the one that matters.
    """
    span = limits[1] - limits[0]
    inside = [i for i, p in enumerate(positions) if limits[0] <= p <= limits[1] and np.isfinite(p)]
    centre = int(np.argmin(np.abs(positions)))  # the tick at raw 0 (or the closest one)
    order = sorted(inside, key=lambda i: (i != centre, -abs(i - centre)))
    kept = []
    for i in order:
        if all(abs(positions[i] - positions[k]) >= min_gap * span for k in kept):
            kept.append(i)
    return sorted(kept)


def _short_number(value):
    """50000 -> '50K', 1.5e6 -> '1.5M': scatter axes in the units cytometrists read."""
    for size, suffix in ((1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _percent_histogram(values, edges):
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    return 100.0 * counts / max(values.size, 1)


# --- gate outlines -----------------------------------------------------------


def _draw_gate(ax, gate, x, y, colour, label, ctx=None):
    """Outline a FlowKit gate on the (x, y) axes; gates without geometry draw nothing.

    BooleanGates (NOT / OR of other gates) have no outline: their events are
    shown instead by the caller. ``ctx`` (a _Context): the gate is drawn
    through its axes' display mapping (a log axis: see ``_display_scale``).
    """
    kind = type(gate).__name__
    if kind == "PolygonGate":
        vertices = _shown_outline(ctx, _oriented(gate, np.asarray(gate.vertices, dtype=float), x, y), x, y)
    elif kind == "RectangleGate":
        vertices = _rectangle(gate, ax, x, y, ctx)
    elif kind == "EllipsoidGate":
        vertices = _shown_outline(ctx, _ellipse(gate, x, y), x, y)
    else:
        return
    if vertices is None:
        return
    from matplotlib.patches import Polygon

    ax.add_patch(Polygon(vertices, closed=True, fill=False, edgecolor=colour, linewidth=1.4))
    if label:
        ax.text(*_label_anchor(ax, vertices), label, ha="center", va="bottom", fontsize=7, color=colour,
                weight="bold", bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.5})


def _label_anchor(ax, vertices):
    """Above the gate's top edge, kept inside the plot so it never covers the title."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xs = np.clip(vertices[:, 0], x0, x1)
    x = np.clip((xs.min() + xs.max()) / 2, x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0))
    y = min(vertices[:, 1].max(), y1 - 0.09 * (y1 - y0))
    return x, y


def _dimension_ids(gate):
    return [getattr(d, "id", None) for d in gate.dimensions]


def _oriented(gate, points, x, y):
    """Points (n, 2) in the gate's dimension order, swapped when the panel's axes are reversed."""
    ids = _dimension_ids(gate)
    if ids == [y, x]:
        return points[:, ::-1]
    if ids == [x, y]:
        return points
    return None  # drawn on other axes than this panel's


def _shown_outline(ctx, points, x, y):
    """A closed outline (n, 2) in gating units, where the panel's axes draw it.

    On a log axis a straight edge is a curve: each edge is then drawn through
    EDGE_POINTS points, so the outline is the gate's true boundary.
    """
    if points is None or ctx is None or not any(getattr(ctx.scales.get(c), "kind", None) == "log" for c in (x, y)):
        return points
    ends = np.vstack([points, points[:1]])
    steps = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)[None, :, None]
    dense = (ends[:-1, None, :] + steps * np.diff(ends, axis=0)[:, None, :]).reshape(-1, 2)
    return np.column_stack([ctx.shown(x, dense[:, 0]), ctx.shown(y, dense[:, 1])])


# Points per gate edge on a log axis (``_shown_outline``).
EDGE_POINTS = 64


def _rectangle(gate, ax, x, y, ctx=None):
    """Corners of a RectangleGate; open bounds reach the plot edges (bounds drawn through ``ctx``'s axes)."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    bounds = {"x": list(xlim), "y": list(ylim)}
    shown = ctx.shown if ctx is not None else (lambda channel, value: value)
    matched = False
    for dim in gate.dimensions:
        which = "x" if dim.id == x else "y" if dim.id == y else None
        if which is None:
            continue
        matched = True
        if dim.min is not None:
            bounds[which][0] = shown(dim.id, dim.min)
        if dim.max is not None:
            bounds[which][1] = shown(dim.id, dim.max)
    if not matched:
        return None
    (x0, x1), (y0, y1) = bounds["x"], bounds["y"]
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float)


def _ellipse(gate, x, y):
    """Boundary of a 2-D EllipsoidGate: mean + sqrt(d²) * chol(cov) @ unit circle."""
    if len(gate.dimensions) != 2:
        return None
    angles = np.linspace(0, 2 * np.pi, 121)
    circle = np.stack([np.cos(angles), np.sin(angles)])
    cholesky = np.linalg.cholesky(np.asarray(gate.covariance_matrix, dtype=float))
    points = (np.asarray(gate.coordinates, dtype=float)[:, None]
              + np.sqrt(gate.distance_square) * cholesky @ circle).T
    return _oriented(gate, points, x, y)


# --- writing -----------------------------------------------------------------


def _check_formats(formats):
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown figure format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return ["png"] + [f for f in FORMATS[1:] if f in formats]


def _save(fig, out_dir, stem, formats):
    """Write ``stem.<fmt>`` atomically for each format, with no dates in the files."""
    import matplotlib

    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "cd125gate", "pdf.compression": 6, "text.parse_math": False}):
            fig.savefig(buffer, format=fmt, dpi=DPI, metadata=METADATA[fmt])
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


# Axes made ahead for the next QC page (see `make_spare_axes`); each process has its own.
_SPARE_PAGES = []


def make_spare_axes(count, enough=lambda: False):
    """Make up to ``count`` Axes for the next QC page, before its sample is known.

    Making an Axes (its spines, ticks and texts) costs ~14 ms: ~0.15 s of a
    page's ~0.4 s. `figure_worker` makes them while the sample is analysed,
    stopping as soon as ``enough()`` says the page is wanted now; the page
    then takes them in order, placed where it puts its panels (`_add_axes`),
    and drops the ones it does not need. They are made with the page's text
    settings, so the page is the same as one made from nothing.
    """
    with _plain_text():
        fig = _new_figure((PANEL_INCHES[0] * NCOLS, PANEL_INCHES[1]))
        spec = fig.add_gridspec(1, 1)[0, 0]
        axes = []
        while len(axes) < count and not enough():
            axes.append(fig.add_subplot(spec))
    _SPARE_PAGES.append((fig, axes))


def _page_figure(figsize):
    """A Figure for a QC page: the one made ahead if any (its spare Axes in ``cd125gate_spare_axes``)."""
    if _SPARE_PAGES:
        fig, axes = _SPARE_PAGES.pop()
        fig.set_size_inches(figsize)
    else:
        fig, axes = _new_figure(figsize), []
    fig.cd125gate_spare_axes = axes
    return fig


def _add_axes(fig, spec):
    """An Axes at ``spec``: the page's next spare one if it has any left, else a new one."""
    spares = getattr(fig, "cd125gate_spare_axes", [])
    if not spares:
        return fig.add_subplot(spec)
    ax = spares.pop(0)
    ax.set_subplotspec(spec)
    return ax


def _new_figure(figsize):
    """A Figure at DPI whose PNGs are written by ``_png_bytes`` (SVG and PDF as matplotlib writes them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    _png_canvas()(fig)
    return fig


@cache
def _png_canvas():
    """The Agg canvas class whose ``print_png`` encodes with ``_png_bytes``, not Pillow."""
    import threading

    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    renderers = {}

    class PngCanvas(FigureCanvasAgg):
        def get_renderer(self):
            # One renderer per page size (and thread: two figures drawn at once must not
            # share pixels) for the whole process: matplotlib caches text measurements per
            # renderer, and the tick labels, axis titles and legends repeat from one figure
            # to the next. Each draw clears it first.
            w, h = self.figure.bbox.size
            key = (threading.get_ident(), w, h, self.figure.dpi)
            if key not in renderers:
                renderers[key] = RendererAgg(w, h, self.figure.dpi)
            self.renderer = renderers[key]
            return self.renderer

        # savefig passes dpi, facecolor, ... to a print method outside matplotlib; it has
        # already applied them to the figure, as it does for Agg's own print_png.
        def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None, **_applied_by_savefig):
            self.draw()
            if getattr(self.figure, "cd125gate_panels", None):
                # A tEXt chunk: the printed pages find the key panels by name.
                metadata = dict(metadata or {}, **{PANELS_KEY: self.figure.cd125gate_panels})
            data = _png_bytes(np.asarray(self.buffer_rgba()), self.figure.dpi, metadata)
            if hasattr(filename_or_obj, "write"):
                filename_or_obj.write(data)
            else:
                Path(filename_or_obj).write_bytes(data)

    return PngCanvas


def _png_bytes(rgba, dpi, metadata=None):
    """PNG of an (h, w, 4) uint8 image: RGB when fully opaque, no row filter, zlib at PNG_COMPRESSION.

    Pillow picks a filter for every row (adaptive filtering) whatever the zlib
    level: on a page of flat colours and text that costs more than it saves
    (measured on a 1720 x 965 page: Pillow at level 1, 55 ms and 273 kB; this,
    20 ms and 245 kB). ``metadata`` entries that are not None become tEXt chunks.
    """
    import struct
    import zlib

    height, width = rgba.shape[:2]
    opaque = bool((rgba[..., 3] == 255).all())
    pixels = rgba[..., :3] if opaque else rgba
    rows = np.empty((height, 1 + width * pixels.shape[2]), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None on every row
    rows[:, 1:] = pixels.reshape(height, -1)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    per_metre = int(dpi / 0.0254 + 0.5)
    parts = [b"\x89PNG\r\n\x1a\n",
             chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2 if opaque else 6, 0, 0, 0)),
             chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))]
    for key, value in (metadata or {}).items():
        if value is not None:
            parts.append(chunk(b"tEXt", key.encode("latin-1") + b"\0" + str(value).encode("latin-1", "replace")))
    parts += [chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESSION)), chunk(b"IEND", b"")]
    return b"".join(parts)
