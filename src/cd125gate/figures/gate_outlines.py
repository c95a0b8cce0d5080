"""Gate outlines on a QC panel, drawn from the very gate object that counted the events.

A gate is one of ``gates``' values or FlowKit's own (same attribute names);
BooleanGates have no outline. On a display-only log axis a straight edge is a
curve, so the outline is drawn through the axis's mapping (``_shown_outline``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from cd125gate.figures.tube_view import TubeView

def draw_gate(ax: Axes, gate: object, x: str, y: str, colour: str, label: str | None,
              ctx: TubeView | None = None) -> None:
    """Outline a FlowKit gate on the (x, y) axes; gates without geometry draw nothing.

    BooleanGates (NOT / OR of other gates) have no outline: their events are
    shown instead by the caller. ``ctx`` (a TubeView): the gate is drawn
    through its axes' display mapping (a log axis: see ``display_scale``).
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

