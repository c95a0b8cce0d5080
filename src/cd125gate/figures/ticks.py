"""The tick engine: where an axis's ticks go, what they say, and drawing them as plain artists.

Axes are in transformed units with tick labels in raw units: decades with
Unicode superscripts on logicle/arcsinh axes, powers of ten on a display-only
log axis, round numbers on linear ones. Tick marks are one marker line per
axis, tick labels and axis titles plain Text at fixed offsets, instead of
matplotlib Tick objects and measured label positions (which cost more than
the data).

matplotlib is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.transforms import Transform

Which = Literal["x", "y"]
Limits = tuple[float, float]


class AxisScale(Protocol):
    """What the ticks need of a scale: a ``transforms.Scale`` or a display-only ``tube_view.LogAxis``."""

    kind: str

    def forward(self, raw: np.ndarray) -> np.ndarray: ...

    def inverse(self, shown: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Ticks:
    """Where one axis's ticks go (transformed units) and what the major ones say (raw units)."""

    major: np.ndarray
    labels: tuple
    minor: np.ndarray


def raw_ticks(ax: Axes, which: Which, scale: AxisScale, limits: Limits) -> Ticks:
    """Ticks at ``scale.forward(raw)`` labelled in raw units; returns the Ticks drawn."""
    ticks = tick_values(scale, limits)
    set_ticks(ax, which, ticks, limits)
    return ticks


def tick_values(scale: AxisScale, limits: Limits) -> Ticks:
    """The Ticks of ``scale`` over ``limits``: raw decades (or round numbers) at their forward positions."""
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
    return Ticks(positions[keep], tuple(labels[i] for i in keep), minor_pos)


# Tick geometry in points, as matplotlib's defaults draw it: mark length, gap to the label, gap to the axis title.
MAJOR_TICK, MINOR_TICK, TICK_PAD, LABEL_PAD = 3.5, 2.0, 3.5, 4.0
TICK_FONT = 7
# Widest glyph of a tick label (digits, K, M, minus) in ems of DejaVu Sans: an upper bound that
# places a y axis title clear of its tick labels without measuring any text.
TICK_EM = 0.64


def set_ticks(ax: Axes, which: Which, ticks: Ticks, limits: Limits) -> None:
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


def axis_label(ax: Axes, which: Which, text: str, ticks: Ticks | None = None, fontsize: float = 8) -> None:
    """The axis title, beyond the labels of ``ticks`` (as ``set_ticks`` drew them; None: no labels)."""
    if which == "x":
        depth = MAJOR_TICK + TICK_PAD + 1.2 * TICK_FONT if ticks is not None and len(ticks.labels) else MAJOR_TICK
        ax.text(0.5, 0, text, transform=_shifted(ax, ax.transAxes, 0, -(depth + LABEL_PAD) / 72), fontsize=fontsize,
                ha="center", va="top", clip_on=False)
    else:
        widest = max((len(label) for label in ticks.labels), default=0) if ticks is not None else 0
        depth = MAJOR_TICK + TICK_PAD + TICK_EM * TICK_FONT * widest if widest else MAJOR_TICK
        ax.text(0, 0.5, text, transform=_shifted(ax, ax.transAxes, -(depth + LABEL_PAD) / 72, 0),
                fontsize=fontsize, ha="right", va="center", rotation=90, rotation_mode="default", clip_on=False)


def _shifted(ax: Axes, transform: Transform, dx: float, dy: float) -> Transform:
    """``transform`` then a shift of (dx, dy) inches on the page."""
    from matplotlib.transforms import ScaledTranslation

    return transform + ScaledTranslation(dx, dy, ax.figure.dpi_scale_trans)


def round_ticks(limits: Limits, nbins: int) -> Ticks:
    """Round-number Ticks over ``limits`` (linear data axes: event rate, signal, % per bin)."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = limits
    values = [t for t in MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    return Ticks(np.asarray(values, dtype=float), tuple(short_number(t) for t in values), np.zeros(0))


def data_limits(*arrays: np.ndarray, margin: float = 0.05) -> Limits:
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
    return raw, [short_number(t) for t in raw]


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
    """Powers of ten on a LogAxis (10⁰, 10¹, ... as the decades of the other axes), 2..9 between."""
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


def short_number(value: float) -> str:
    """50000 -> '50K', 1.5e6 -> '1.5M': scatter axes in the units cytometrists read."""
    for size, suffix in ((1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


