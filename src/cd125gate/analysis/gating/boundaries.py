"""Counts to FlowKit's bit: the events a gate boundary could flip are transformed again exactly.

The tubes are transformed with `transforms.fast_logicle`, within 1e-11 of
FlowKit's logicle. An event can be counted differently from FlowKit only if
its transformed values lie that close to a gate boundary: those events
(``near_boundary_rows``) are transformed again with FlowKit's own logicle
(``exact_logicle_in_place``, which writes them into the tube's array: a copy of
a 1M x 13 array per tube would cost more than the whole search) and every gate
is applied again (``reapplied``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating import gates
from cd125gate.analysis.gating.gatestep import frame, gate_step

if TYPE_CHECKING:
    from cd125gate.analysis.compensation import Compensation
    from cd125gate.analysis.model import GateStep, TubeAnalysis
    from cd125gate.analysis.transforms import Scale

# Display-scale distance within which `transforms.fast_logicle`'s error (< 1e-11)
# could carry an event across a gate boundary; a wide margin over that error.
SETTLE_DELTA = 1e-9


def settle_in_place(tube: TubeAnalysis, comp: Compensation) -> int:
    """Make every count of ``tube`` FlowKit's; writes ``tube.data`` and ``tube.steps`` in place.

    Every event whose membership could change when its logicle coordinates
    move by SETTLE_DELTA is transformed again exactly (its rows of
    ``tube.data`` overwritten), then the steps are replaced by their gates
    applied again.

    :param comp: the Compensation the tube was compensated with
    :return: how many events were recomputed
    """
    rows = near_boundary_rows(tube)
    if rows.size:
        exact_logicle_in_place(tube.data, rows, tube.fcs.events, tube.fcs.channel_names(), tube.channels,
                               tube.scales, comp)
        tube.steps = reapplied(tube)
    return int(rows.size)


def near_boundary_rows(tube: TubeAnalysis) -> np.ndarray:
    """Indices of the events within SETTLE_DELTA of a boundary of any of the tube's gates."""
    near = np.zeros(len(tube.data), dtype=bool)
    for step in tube.steps:
        near |= _near_boundary(step, tube)
    return np.flatnonzero(near)


def exact_logicle_in_place(data: np.ndarray, rows: np.ndarray, raw: np.ndarray, raw_names: list[str],
                           channels: list[str], scales: dict[str, Scale], comp: Compensation) -> None:
    """Overwrite ``data[rows]`` on every logicle channel with FlowKit's logicle of the compensated events.

    The compensated values of those events are computed again from the ``raw``
    events (compensation solves each event on its own, so a subset gets the
    very numbers of the whole tube) rather than kept for every event.

    :param data: transformed events, columns ``channels``; written in place
    :param raw: the events as read, columns ``raw_names``
    """
    from cd125gate.analysis.compensation import compensate
    from cd125gate.analysis.transforms import forward

    compensated = compensate(raw[rows], raw_names, comp)
    for j, channel in enumerate(channels):
        if scales[channel].kind == "logicle":
            data[rows, j] = forward(scales[channel], compensated[:, raw_names.index(channel)])


def reapplied(tube: TubeAnalysis) -> list[GateStep]:
    """The tube's steps with every gate applied again, in hierarchy order (after its events changed)."""
    steps: list[GateStep] = []
    for s in tube.steps:
        steps.append(gate_step(tube, s.name, s.parent, s.gate, s.x, s.y, s.note, s.exclusion, among=steps))
    return steps


def _near_boundary(step: GateStep, tube: TubeAnalysis) -> np.ndarray:
    """Events of the step's parent within SETTLE_DELTA of the gate's boundary along a logicle axis.

    Only logicle coordinates carry the fast transform's error, so each event
    may sit anywhere in a box of half-width SETTLE_DELTA along those axes
    (zero along the others); its membership can differ from FlowKit's only if
    that box meets the boundary. For a rectangle that is a bound within reach;
    for a polygon, an edge crossing the box (separating-axis test).
    """
    near = np.zeros(len(tube.data), dtype=bool)
    gate = step.gate
    if isinstance(gate, gates.BooleanGate):
        return near
    reach = [SETTLE_DELTA if d.transformation_ref is not None and tube.scales[d.id].kind == "logicle"
             else 0.0 for d in gate.dimensions]
    if not any(reach):
        return near
    rows = np.flatnonzero(tube.parent_mask(step))
    columns = frame(gate, tube, rows)
    values = [columns[d.id] for d in gate.dimensions]
    if isinstance(gate, gates.PolygonGate):
        # Events within SETTLE_DELTA (far below a grid cell) of an edge lie in the cells along it.
        close = np.flatnonzero(gate.near(*values))
        hit = np.zeros(rows.size, dtype=bool)
        hit[close] = _box_meets_polygon([v[close] for v in values], reach, np.asarray(gate.vertices, dtype=float))
    else:
        hit = np.zeros(rows.size, dtype=bool)
        for d, x, r in zip(gate.dimensions, values, reach):
            for bound in (d.min, d.max):
                if r and bound is not None:
                    hit |= np.abs(x - bound) <= r
    near[rows] = hit
    return near


def _box_meets_polygon(values: list[np.ndarray], reach: list[float], vertices: np.ndarray) -> np.ndarray:
    """For each point, whether the box point +- reach meets an edge of the polygon."""
    (x, y), (rx, ry) = values, reach
    hit = np.zeros(x.size, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        dx, dy = x2 - x1, y2 - y1
        side = dx * (y - y1) - dy * (x - x1)  # signed distance to the edge's line, times its length
        hit |= ((np.minimum(x1, x2) <= x + rx) & (np.maximum(x1, x2) >= x - rx)
                & (np.minimum(y1, y2) <= y + ry) & (np.maximum(y1, y2) >= y - ry)
                & (np.abs(side) <= abs(dy) * rx + abs(dx) * ry))
    return hit


