"""Shapes drawn around fitted populations: their moments, crossings, ellipses, hulls and separating lines.

Units are the populations' features (decades of a marker, log10 SSC-A); ``to_display``
turns a CD45/SSC polygon into the gate's display units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from cd125gate.analysis.gating.populations import Populations
    from cd125gate.analysis.numeric.density import Component

# (mean, covariance, weight) of a population in a plane of two features.
PlaneNormal = tuple[np.ndarray, np.ndarray, float]


def moments(pops: Populations, comps: Sequence[int], j: int) -> Component:
    """(mean, sd, weight) of the mixture of components ``comps`` along feature ``j`` (decades)."""
    w = pops.weights[comps]
    means = pops.means[comps, j]
    var = pops.covariances[comps, j, j]
    total = float(w.sum())
    mean = float((w * means).sum() / total)
    second = float((w * (var + means ** 2)).sum() / total)
    return mean, math.sqrt(max(second - mean ** 2, 1e-12)), total


def ellipse_points(mean: ArrayLike, cov: ArrayLike, radius: float, n: int = 12) -> np.ndarray:
    """``n`` points of the ellipse at Mahalanobis ``radius`` around a 2-D Gaussian."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    circle = np.stack([np.cos(angles), np.sin(angles)])
    chol = np.linalg.cholesky(np.asarray(cov) + 1e-9 * np.eye(2))
    return (np.asarray(mean)[:, None] + radius * chol @ circle).T


def hull(points: ArrayLike) -> np.ndarray:
    """Vertices of the convex hull of 2-D ``points``, counter-clockwise (monotone chain)."""
    pts = sorted(map(tuple, np.asarray(points, dtype=float)))
    if len(pts) < 3:
        return np.array(pts)

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def clip(polygon: ArrayLike, normal: ArrayLike, offset: float) -> np.ndarray:
    """The part of a convex polygon where ``normal . p <= offset`` (Sutherland-Hodgman)."""
    normal = np.asarray(normal, dtype=float)
    polygon = np.asarray(polygon, dtype=float)
    side = polygon @ normal - offset
    out = []
    for i, p in enumerate(polygon):
        j = (i + 1) % len(polygon)
        if side[i] <= 0:
            out.append(p)
        if (side[i] <= 0) != (side[j] <= 0):
            t = side[i] / (side[i] - side[j])
            out.append(p + t * (polygon[j] - p))
    return np.array(out).reshape(-1, 2)


def separating_line(own: PlaneNormal, other: PlaneNormal, odds: float) -> tuple[np.ndarray, float]:
    """(normal, offset): the half-plane where ``own`` is ``odds`` times as likely as ``other``.

    ``own`` and ``other`` are (mean, covariance, weight) of two populations in
    a plane; with their pooled covariance the log-likelihood ratio is linear
    (Fisher's discriminant), so the boundary is a straight line that a polygon
    can be clipped by. The weights move the line towards the smaller
    population, and ``odds`` > 1 moves it further into ``own``: what is left
    in the gate is at least ``odds`` times more likely ``own`` than ``other``.
    """
    (m1, s1, w1), (m2, s2, w2) = own, other
    inv = np.linalg.inv((np.asarray(s1) + np.asarray(s2)) / 2.0)
    m1, m2 = np.asarray(m1, dtype=float), np.asarray(m2, dtype=float)
    normal = inv @ (m2 - m1)
    offset = 0.5 * (m2 @ inv @ m2 - m1 @ inv @ m1) + math.log(w1 / w2) - math.log(odds)
    return normal, offset


def plane(pops: Populations, comps: Sequence[int], axes: tuple[str, str] = ("CD45", "SSC")) -> PlaneNormal:
    """(mean, covariance, weight) of the mixture of ``comps`` in two features."""
    idx = [pops.feature(a) for a in axes]
    w = pops.weights[comps]
    means = pops.means[np.ix_(comps, idx)]
    mean = (w[:, None] * means).sum(0) / w.sum()
    cov = sum(wi * (pops.covariances[i][np.ix_(idx, idx)] + np.outer(mi - mean, mi - mean))
              for i, wi, mi in zip(comps, w, means)) / w.sum()
    return mean, cov, float(w.sum())


def robust_plane(pops: Populations, i: int, idx: list[int], seed: int = 0, limit: int = 2000,
                 least: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of component ``i`` in features ``idx``: robust (MCD) from its own events.

    A mixture component can take in part of a small neighbouring population
    (a few monocytes among the blasts) and stretch its covariance towards it;
    the minimum covariance determinant estimate of the events assigned to it
    follows the component's core instead. With fewer than ``least`` events,
    the mixture's own estimate.
    """
    from cd125gate.analysis.numeric.mixture import min_cov_det

    mean, cov = pops.means[i, idx], pops.covariances[i][np.ix_(idx, idx)]
    if pops.x is None:
        return mean, cov
    points = pops.x[pops.assigned == i][:limit][:, idx]
    if len(points) < least or np.ptp(points, axis=0).min() == 0:
        return mean, cov
    return min_cov_det(points, seed=seed)


def population_polygon(pops: Populations, comps: Sequence[int], radius: float,
                       axes: tuple[str, str] = ("CD45", "SSC")) -> np.ndarray:
    """Convex hull of the components' robust ellipses at ``radius`` in two features (decades)."""
    idx = [pops.feature(a) for a in axes]
    points = [ellipse_points(*robust_plane(pops, i, idx), radius) for i in comps]
    return hull(np.concatenate(points))


def to_display(pops: Populations, polygon: np.ndarray) -> list[tuple[float, float]]:
    """CD45 decades -> display units, log10 SSC -> linear SSC-A."""
    j = pops.feature("CD45")
    return [(float(x / pops.scale[j]), float(10.0 ** y)) for x, y in polygon]

