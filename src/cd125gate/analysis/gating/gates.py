"""Light gate values that mean exactly what FlowKit's gate classes mean, without importing FlowKit.

``import flowkit`` costs about two seconds per process (it pulls in bokeh,
pandas and scipy.stats), more than the analysis of a 100,000-event pair. The
per-sample path only needs to *hold* gates, count events in them and write
them as Gating-ML; these frozen dataclasses do that, and convert to and from
FlowKit's objects (``to_flowkit`` / ``from_flowkit``) where FlowKit itself is
wanted (re-gating from edited gates, FlowJo export, the reproduction tests).

Membership is FlowKit's ``gate.apply`` to the event, conventions included:

- RectangleGate: ``min <= x < max`` on every dimension (min inclusive, max
  exclusive); an open bound is no bound; ``use_complement`` inverts.
- PolygonGate: flowutils' ``points_in_polygon`` (odd crossing count), the very
  C function FlowKit calls, so a point on an edge or vertex is decided the same.
- EllipsoidGate: flowutils' ``points_in_ellipsoid`` (Mahalanobis d² <= distance_square).
- BooleanGate: and / or / not of referenced gates' memberships, each reference
  optionally complemented; like FlowKit's ``apply``, the parent is not applied
  here (the caller ANDs with the parent's events).

Attribute names are FlowKit's (``gate_name``, ``dimensions``, ``vertices``,
``Dimension.id/min/max``...), so code that reads gates (plots, the settle
step) works on either kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Events a gate is applied to: dimension id -> values (a dict of arrays, or a DataFrame).
Events = Mapping[str, Any]


@dataclass(frozen=True)
class Dimension:
    """One axis of a gate: a channel ($PnN), the matrix and transform it is read through, and bounds."""

    id: str
    compensation_ref: str = "uncompensated"
    transformation_ref: str | None = None
    range_min: float | None = None
    range_max: float | None = None

    def __post_init__(self):
        # FlowKit stores float(bound); so do we, so both compare and print alike.
        for name in ("range_min", "range_max"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    @property
    def min(self) -> float | None:
        return self.range_min

    @property
    def max(self) -> float | None:
        return self.range_max

    def to_flowkit(self) -> Any:
        from flowkit import Dimension as FlowKitDimension

        return FlowKitDimension(self.id, compensation_ref=self.compensation_ref,
                                transformation_ref=self.transformation_ref,
                                range_min=self.range_min, range_max=self.range_max)


def _column(events: Events, dim_id: str) -> np.ndarray:
    """One column of ``events`` (a mapping id -> values, e.g. a dict of arrays or a DataFrame)."""
    return np.asarray(events[dim_id], dtype=np.float64)


def _points(events: Events, dimensions: tuple[Dimension, ...]) -> np.ndarray:
    return np.column_stack([_column(events, d.id) for d in dimensions])


@dataclass(frozen=True)
class RectangleGate:
    """Range (1-D) or box (n-D) gate: min inclusive, max exclusive on every dimension."""

    gate_name: str
    dimensions: tuple
    use_complement: bool = False

    def __post_init__(self):
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        if not self.dimensions:
            raise ValueError(f"RectangleGate {self.gate_name!r} needs at least one dimension")

    def apply(self, events: Events) -> np.ndarray:
        """Boolean membership of every event (``events``: id -> column)."""
        inside = None
        for d in self.dimensions:
            x = _column(events, d.id)
            if inside is None:
                inside = np.ones(x.shape[0], dtype=bool)
            if d.min is not None:
                inside &= x >= d.min
            if d.max is not None:
                inside &= x < d.max
        return ~inside if self.use_complement else inside

    def to_flowkit(self) -> Any:
        from flowkit import gates

        return gates.RectangleGate(self.gate_name, [d.to_flowkit() for d in self.dimensions],
                                   use_complement=self.use_complement)


@dataclass(frozen=True)
class PolygonGate:
    """2-D polygon; inside by FlowKit's (flowutils') point-in-polygon rule."""

    gate_name: str
    dimensions: tuple
    vertices: tuple
    use_complement: bool = False

    def __post_init__(self):
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        object.__setattr__(self, "vertices", tuple(tuple(float(c) for c in v) for v in self.vertices))
        if len(self.dimensions) != 2 or len(self.vertices) < 3 or any(len(v) != 2 for v in self.vertices):
            raise ValueError(f"PolygonGate {self.gate_name!r} needs 2 dimensions and at least 3 (x, y) vertices")

    def apply(self, events: Events) -> np.ndarray:
        x, y = (_column(events, d.id) for d in self.dimensions)
        grid = self._grid(x, y) if x.size >= GRID_MIN_EVENTS else None
        inside = grid.membership(x, y) if grid else _points_in_polygon(self.vertices, x, y)
        return ~inside if self.use_complement else inside

    def near(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each event (x, y) lies in a cell along an edge (every event, for a polygon without a grid)."""
        grid = self._grid(x, y)
        return grid.states(x, y) == 2 if grid else np.ones(x.shape[0], dtype=bool)

    def _grid(self, x, y):
        """The polygon's `PolygonGrid`, built at first use over the part of its box those events span.

        Kept with the gate (as a cached property would be): the control tube and
        the settle step reuse it. None for a polygon without area.
        """
        if "grid" not in self.__dict__:
            self.__dict__["grid"] = PolygonGrid.of(self.vertices, _extent(x, y))
        return self.__dict__["grid"]

    def to_flowkit(self) -> Any:
        from flowkit import gates

        return gates.PolygonGate(self.gate_name, [d.to_flowkit() for d in self.dimensions],
                                 [list(v) for v in self.vertices], use_complement=self.use_complement)


def _dilated(cells, reach):
    """``cells`` (a 2-D boolean grid) grown by ``reach`` cells in every direction, corners included."""
    for axis in (0, 1):
        grown = cells.copy()
        source, target = np.moveaxis(cells, axis, 0), np.moveaxis(grown, axis, 0)
        for k in range(1, reach + 1):
            target[k:] |= source[:-k]
            target[:-k] |= source[k:]
        cells = grown
    return cells


def _far_states(vertices, near, origin, size):
    """Every cell's state: 2 where ``near``, else flowutils' answer for the centre of its run.

    A run is a stretch of far cells along a row of the grid; no edge comes
    near it, so all its centres lie on the same side and one test per run
    decides them all (a few thousand tests instead of one per cell).
    """
    n = near.shape[0]
    far = ~near.ravel()
    start = far.copy()
    start[1:] &= near.ravel()[:-1]
    start[::n] = far[::n]  # each row begins a run
    first = np.flatnonzero(start)
    if first.size == 0:
        return np.full(near.shape, 2, dtype=np.int8)
    ix, iy = np.divmod(first, n)
    inside = _points_in_polygon(vertices, origin[0] + (ix + 0.5) * size[0], origin[1] + (iy + 0.5) * size[1])
    run = np.cumsum(start, dtype=np.int32) - 1
    return np.where(far, inside[run], 2).astype(np.int8).reshape(near.shape)


def _extent(x, y):
    """((x min, y min), (x max, y max)) of the events, or None when empty or not all finite."""
    if x.size == 0:
        return None
    extent = np.array([[x.min(), y.min()], [x.max(), y.max()]])
    return extent if np.isfinite(extent).all() else None


def _points_in_polygon(vertices, x, y):
    from flowutils.gating import points_in_polygon

    return points_in_polygon(np.array(vertices, dtype=np.float64), np.column_stack([x, y]))


# Below this many events flowutils alone is faster than building a polygon's grid (~4 ms).
GRID_MIN_EVENTS = 100_000


@dataclass(frozen=True)
class PolygonGrid:
    """A polygon's bounding box cut into cells, each known inside, outside or near an edge.

    flowutils tests every event against every edge (~30-50 ns an event, the
    largest share of applying a tube's gates). Most events lie far from any
    edge, where the answer is the same for a whole cell: a cell is "near"
    when an edge passes through it or one of its eight neighbours, and every
    other cell takes flowutils' answer for its centre. Only events in near
    cells go to flowutils, so every answer is flowutils' own:

    - an event in a far cell is at least a cell from every edge, so the
      segment to the cell's centre crosses no edge (same winding number), and
      flowutils' is-left products, whose exact values are then a cell's width
      times the edge's height or more, cannot change sign by rounding;
    - events beyond the grid (a margin of ``PAD`` cells around the box), NaN
      and infinite values fall on a ring of outside cells: outside, as
      flowutils decides them (or a ring of near cells, for a grid cut to
      the events' extent: flowutils decides them).
    """

    CELLS = 512
    PAD = 2

    vertices: tuple
    origin: np.ndarray  # (x, y) of the lower corner of the ring's first cell
    inverse: np.ndarray  # cells per unit along x and y
    state: np.ndarray  # int8 per cell: 0 outside, 1 inside, 2 near an edge

    @classmethod
    def of(cls, vertices: tuple, extent: np.ndarray | None = None) -> PolygonGrid | None:
        """The grid of the polygon's box, or of its part within ``extent`` (where the events are).

        A polygon reaching far beyond the events (the open sides of a marker gate)
        would otherwise spend most of its cells where no event is, and put most
        events in cells along an edge. Cut to the events' extent, the ring around
        the grid is "near": the events beyond it are decided by flowutils.
        """
        v = np.array(vertices, dtype=np.float64)
        lo, hi = v.min(axis=0), v.max(axis=0)
        size = (hi - lo) / cls.CELLS
        if not (np.all(size > 0) and np.all(np.isfinite(size))):
            return None
        cut = extent is not None and bool(np.any(extent[0] > lo) or np.any(extent[1] < hi))
        if cut:
            # Cells at most 16 times finer than the box's: the edges' points stay a few thousand.
            lo = np.maximum(lo, extent[0])
            size = np.maximum((np.minimum(hi, extent[1]) - lo) / cls.CELLS, size / 16)
        n = cls.CELLS + 2 * cls.PAD
        origin = lo - cls.PAD * size
        # Points of every edge half a cell apart: each cell an edge passes through holds one or
        # touches a cell that does, so two cells of dilation cover its cells and their neighbours.
        points = []
        for a, b in zip(v, np.roll(v, -1, axis=0)):
            steps = int(np.ceil(np.max(np.abs(b - a) / size) * 2)) + 1
            points.append(a + np.linspace(0.0, 1.0, steps + 1)[:, None] * (b - a))
        cell = np.floor((np.concatenate(points) - origin) / size).astype(int)
        visited = np.zeros((n, n), dtype=bool)
        visited[np.clip(cell[:, 0], 0, n - 1), np.clip(cell[:, 1], 0, n - 1)] = True
        state = np.full((n + 2, n + 2), 2 if cut else 0, dtype=np.int8)  # the ring around the grid
        state[1:-1, 1:-1] = _far_states(v, _dilated(visited, 2), origin, size)
        return cls(tuple(vertices), origin - size, 1.0 / size, state)

    def states(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The state of the cell of every event (x, y): 0 outside, 1 inside, 2 near an edge."""
        return self.state[self._cell(x, 0), self._cell(y, 1)]

    def membership(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """flowutils' membership of the events (x, y) (float64 arrays)."""
        state = self.states(x, y)
        inside = state == 1
        near = np.flatnonzero(state == 2)
        inside[near] = _points_in_polygon(self.vertices, x[near], y[near])
        return inside

    def _cell(self, values, axis):
        """The cell index of every value along ``axis`` (in place: no temporary arrays beyond one)."""
        position = values - self.origin[axis]
        position *= self.inverse[axis]
        # fmax/fmin send NaN to the ring around the grid (cell 0) and clip everything beyond the grid onto it.
        np.fmax(position, 0.0, out=position)
        np.fmin(position, self.state.shape[axis] - 1, out=position)
        return position.astype(np.intp)


@dataclass(frozen=True)
class EllipsoidGate:
    """n-D ellipsoid: Mahalanobis distance² from ``coordinates`` at most ``distance_square`` (edge inclusive)."""

    gate_name: str
    dimensions: tuple
    coordinates: tuple
    covariance_matrix: tuple
    distance_square: float

    def __post_init__(self):
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        object.__setattr__(self, "coordinates", tuple(float(c) for c in self.coordinates))
        object.__setattr__(self, "covariance_matrix",
                           tuple(tuple(float(c) for c in row) for row in self.covariance_matrix))
        object.__setattr__(self, "distance_square", float(self.distance_square))
        n = len(self.dimensions)
        if n < 2 or len(self.coordinates) != n or any(len(r) != n for r in self.covariance_matrix) \
                or len(self.covariance_matrix) != n:
            raise ValueError(f"EllipsoidGate {self.gate_name!r} needs >= 2 dimensions, "
                             "a mean and an n x n covariance matrix")

    def apply(self, events: Events) -> np.ndarray:
        from flowutils.gating import points_in_ellipsoid

        return points_in_ellipsoid(np.array(self.covariance_matrix), np.array(self.coordinates),
                                   self.distance_square, _points(events, self.dimensions))

    def to_flowkit(self) -> Any:
        from flowkit import gates

        return gates.EllipsoidGate(self.gate_name, [d.to_flowkit() for d in self.dimensions],
                                   list(self.coordinates), [list(r) for r in self.covariance_matrix],
                                   self.distance_square)


@dataclass(frozen=True)
class GateRef:
    """A reference of a BooleanGate to another gate: its name, FlowKit path and whether it is complemented."""

    ref: str
    path: tuple = ("root",)
    complement: bool = False

    def __post_init__(self):
        object.__setattr__(self, "path", tuple(self.path))

    def to_flowkit(self) -> Any:
        return {"ref": self.ref, "path": self.path, "complement": self.complement}


@dataclass(frozen=True)
class BooleanGate:
    """AND / OR of two or more references, or NOT of exactly one (Gating-ML 2.0)."""

    gate_name: str
    type: str
    gate_refs: tuple
    dimensions: tuple = field(default=(), init=False)  # FlowKit: None; empty here, so loops over it just skip

    def __post_init__(self):
        kind = self.type.lower()
        refs = tuple(r if isinstance(r, GateRef) else GateRef(r["ref"], tuple(r.get("path", ("root",))),
                                                               bool(r.get("complement", False)))
                     for r in self.gate_refs)
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "gate_refs", refs)
        if kind not in ("and", "or", "not"):
            raise ValueError(f"BooleanGate {self.gate_name!r}: type must be 'and', 'or' or 'not', not {self.type!r}")
        if (kind == "not") != (len(refs) == 1) or not refs:
            raise ValueError(f"BooleanGate {self.gate_name!r}: 'not' takes exactly one reference, "
                             "'and'/'or' two or more")

    def apply(self, memberships: Mapping[str, np.ndarray]) -> np.ndarray:
        """Membership from the referenced gates' memberships (``memberships``: ref name -> bool array)."""
        members = [np.asarray(memberships[r.ref], dtype=bool) ^ r.complement for r in self.gate_refs]
        if self.type == "not":
            return ~members[0]
        return (np.logical_and if self.type == "and" else np.logical_or).reduce(members)

    def to_flowkit(self) -> Any:
        from flowkit import gates

        return gates.BooleanGate(self.gate_name, self.type, [r.to_flowkit() for r in self.gate_refs])


GATE_TYPES = (RectangleGate, PolygonGate, EllipsoidGate, BooleanGate)
# Any gate of this module (for type hints).
Gate = RectangleGate | PolygonGate | EllipsoidGate | BooleanGate


def _dimension_from_flowkit(d):
    if type(d).__name__ != "Dimension":
        raise ValueError(f"{type(d).__name__} dimensions (ratio, quadrant) are not supported")
    return Dimension(d.id, d.compensation_ref, d.transformation_ref, d.min, d.max)


def from_flowkit(gate: Any) -> Gate:
    """The light gate equal to a FlowKit gate (flowkit.gates.*); a light gate is returned as is.

    Read by attribute, so FlowKit is not imported here.
    """
    if isinstance(gate, GATE_TYPES):
        return gate
    kind = type(gate).__name__
    if kind == "RectangleGate":
        return RectangleGate(gate.gate_name, [_dimension_from_flowkit(d) for d in gate.dimensions],
                             bool(getattr(gate, "use_complement", False)))
    if kind == "PolygonGate":
        return PolygonGate(gate.gate_name, [_dimension_from_flowkit(d) for d in gate.dimensions], gate.vertices,
                           bool(getattr(gate, "use_complement", False)))
    if kind == "EllipsoidGate":
        return EllipsoidGate(gate.gate_name, [_dimension_from_flowkit(d) for d in gate.dimensions],
                             gate.coordinates, gate.covariance_matrix, gate.distance_square)
    if kind == "BooleanGate":
        return BooleanGate(gate.gate_name, gate.type, gate.gate_refs)
    raise ValueError(f"gate {getattr(gate, 'gate_name', '?')!r}: {kind} is not supported")
