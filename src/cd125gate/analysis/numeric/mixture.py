"""Gaussian mixture (EM) and minimum covariance determinant in plain numpy.

scikit-learn's ``GaussianMixture`` and ``MinCovDet`` do these jobs well, but
``import sklearn`` costs about two seconds per process (``sklearn.utils.fixes``
imports scipy.stats and pandas), more than the whole analysis of a
100,000-event pair, and every Snakemake job is a new process. The per-sample
path needs only the two estimators below, in the few dimensions of a panel's
backbone, so they are written here in numpy; ``tests/test_mixture.py`` checks
each against scikit-learn's on the same data (fit quality, labels, location
and scatter).

- ``gaussian_mixture``: EM with full covariances started from k-means (greedy
  k-means++ seeding, Lloyd steps), as scikit-learn's default, ``reg_covar`` on the diagonal, stopping when the mean
  log-likelihood gains less than ``tol`` (scikit-learn's rule).
- ``min_cov_det``: the raw MCD found by concentration steps (Rousseeuw & Van
  Driessen's C-steps) from seeded random starts plus the classical estimate,
  then scikit-learn's consistency correction and reweighting (chi-square
  quantiles in two dimensions are closed-form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Mixture:
    """A fitted Gaussian mixture: ``k`` weights, means (k, d) and covariances (k, d, d)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    mean_log_likelihood: float
    converged: bool

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The most likely component of every event."""
        return np.argmax(_weighted_log_prob(_columns(x), self.weights, self.means, self.covariances), axis=0)


def gaussian_mixture(x: ArrayLike, k: int, seed: int = 0, max_iter: int = 200, tol: float = 1e-3,
                     reg_covar: float = 1e-6, lloyd_steps: int = 30) -> Mixture:
    """Fit a ``k``-component full-covariance Gaussian mixture to ``x`` (n, d) by EM.

    Deterministic for a given ``seed``. Empty components keep a tiny weight (as
    scikit-learn's, they add 10 machine epsilons to every count) so that their
    covariance stays defined.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    xt = _columns(x)
    labels = _kmeans_labels(x, xt, k, np.random.default_rng(seed), lloyd_steps)
    resp = np.zeros((x.shape[0], k))
    resp[np.arange(x.shape[0]), labels] = 1.0
    weights, means, covs = _m_step(x, resp, reg_covar)
    previous, converged = -np.inf, False
    for _ in range(max_iter):
        log_prob = _weighted_log_prob(xt, weights, means, covs)
        norm = _logsumexp(log_prob)
        current = float(norm.mean())
        # The M-step's sums run over events, so it takes them in rows, as it always has: numpy
        # and BLAS add in an order that depends on the layout.
        resp_t = np.exp(log_prob - norm)
        weights, means, covs = _m_step(x, np.ascontiguousarray(resp_t.T), reg_covar, resp_t)
        if abs(current - previous) < tol:
            converged = True
            break
        previous = current
    final = float(_logsumexp(_weighted_log_prob(xt, weights, means, covs)).mean())
    return Mixture(weights, means, covs, final, converged)


def _columns(x):
    """The events of ``x`` (n, d) in columns: a contiguous (d, n) array.

    The per-event work of the E-step and of k-means runs along rows of n events
    this way; with the events in rows, numpy's elementwise operations and sums
    step through n rows of d < 10 values, and that per-row overhead was most of
    the fit's time.
    """
    return np.ascontiguousarray(np.asarray(x, dtype=float).T)


def _sum_rows(a):
    """``a.sum(0)`` for the (m, ...) array ``a``, in the order numpy's ``sum`` adds a contiguous row of m.

    That is numpy's pairwise summation (``pairwise_sum`` in its loops_utils.h):
    in turn below 8 terms, eight running sums up to 128, halves beyond. So the
    sums over the dimensions (or components) of events held in columns are, to
    the bit, the ``.sum(1)`` of events held in rows that they replace: the fit's
    results do not change with the layout.
    """
    m = len(a)
    if m > 128:
        half = m // 2 - (m // 2) % 8
        return _sum_rows(a[:half]) + _sum_rows(a[half:])
    if m < 8:
        total, tail = a[0], a[1:]
    else:
        r = list(a[:8])
        for i in range(8, m - m % 8, 8):
            r = [r[j] + a[i + j] for j in range(8)]
        total, tail = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])), a[m - m % 8:]
    for row in tail:
        total = total + row  # not +=: total may be a view of a
    return total


def _kmeans_labels(x, xt, k, rng, max_steps):
    """Labels of k-means: greedy k-means++ seeding, then Lloyd steps until the centres settle.

    Greedy seeding (the best of ``2 + log k`` candidates for every centre, as
    scikit-learn's ``KMeans`` seeds) keeps a small population from sharing a
    centre with a big neighbour. ``xt``: ``x`` in columns (``_columns``).
    """
    trials = 2 + int(math.log(k))
    centres = [x[rng.integers(x.shape[0])]]
    closest = _sum_rows((xt - centres[0][:, None]) ** 2)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            break
        picks = np.minimum(np.searchsorted(np.cumsum(closest), rng.random(trials) * total), x.shape[0] - 1)
        # (d, trials, n) differences: every candidate's squared distances to every event
        options = np.minimum(closest, _sum_rows((xt[:, None, :] - x[picks].T[:, :, None]) ** 2))
        best = int(np.argmin(options.sum(1)))
        centres.append(x[picks[best]])
        closest = options[best]
    centres = np.array(centres)
    # scikit-learn's stopping rule: the centres moved less than 1e-4 of the data's mean variance.
    tol = 1e-4 * x.var(axis=0).mean()
    for _ in range(max_steps):
        labels = _nearest(xt, centres)
        moved = _lloyd_centres(x, xt, labels, centres)
        shift, centres = ((moved - centres) ** 2).sum(), moved
        if shift <= tol:
            break
    return _nearest(xt, centres)


def _lloyd_centres(x, xt, labels, centres):
    """The means of the clusters; an empty cluster takes the event farthest from its centre.

    As scikit-learn's Lloyd step does: a centre left without events moves to
    where the data are worst served instead of staying where it serves nothing.
    """
    k = len(centres)
    counts = np.bincount(labels, minlength=k).astype(float)
    sums = np.stack([np.bincount(labels, weights=row, minlength=k) for row in xt], 1)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        far = np.argsort(-((x - centres[labels]) ** 2).sum(1), kind="stable")[:empty.size]
        for j, i in zip(empty, far):
            sums[labels[i]] -= x[i]
            counts[labels[i]] -= 1
            sums[j], counts[j] = x[i], 1
    return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)


def _nearest(xt, centres):
    """The nearest centre of every event of ``xt`` (d, n)."""
    d2 = -2 * (centres @ xt) + (centres ** 2).sum(1)[:, None]  # + |x|^2, the same for every centre
    return np.argmin(d2, axis=0)


def _m_step(x, resp, reg_covar, resp_t=None):
    """(weights, means, covariances) from the responsibilities ``resp`` (n, k).

    ``resp_t``: ``resp.T`` as a contiguous array, when the caller has it.
    """
    n, d = x.shape
    counts = resp.sum(0) + 10 * np.finfo(float).eps
    means = (resp.T @ x) / counts[:, None]
    resp_t = np.ascontiguousarray(resp.T) if resp_t is None else resp_t
    covs = np.empty((len(counts), d, d))
    for j in range(len(counts)):
        diff = _minus(x, means[j])
        # resp_j * diff as one product of n * d values (every event's weight repeated d times)
        # rather than n products of d; its transpose is the layout the product has always had,
        # so BLAS adds in the same order.
        weighted = (np.repeat(resp_t[j], d) * diff.ravel()).reshape(n, d)
        covs[j] = weighted.T @ diff / counts[j]
        covs[j].flat[:: d + 1] += reg_covar
    return counts / n, means, covs


def _minus(x, v, rows=64):
    """``x - v`` for ``x`` (n, d), worked ``rows`` events at a time.

    The same numbers; but numpy's loops run over ``rows * d`` values (``v``
    tiled) instead of over every event's d < 10, which halves the time.
    """
    n, d = x.shape
    whole = n - n % rows
    out = np.empty((n, d))
    np.subtract(x[:whole].reshape(-1, rows * d), np.tile(v, rows), out=out[:whole].reshape(-1, rows * d))
    np.subtract(x[whole:], v, out=out[whole:])
    return out


def _weighted_log_prob(xt, weights, means, covs):
    """(k, n) weighted log densities of the events ``xt`` (d, n) under every component."""
    d, n = xt.shape
    out = np.empty((len(weights), n))
    for j in range(len(weights)):
        chol = np.linalg.cholesky(covs[j])
        # inv(L) @ (x - mean): a matrix product per component instead of a solve with n right-hand sides
        y = np.linalg.inv(chol) @ (xt - means[j][:, None])
        out[j] = (-0.5 * (d * math.log(2 * math.pi) + _sum_rows(np.square(y, out=y)))
                  - np.log(np.diag(chol)).sum() + math.log(max(weights[j], 1e-300)))
    return out


def _logsumexp(a):
    """log(sum(exp(a))) over the components: axis 0 of (k, n)."""
    top = a.max(axis=0)
    return top + np.log(_sum_rows(np.exp(a - top)))


# --- minimum covariance determinant ------------------------------------------------------


def min_cov_det(x: ArrayLike, seed: int = 0, starts: int = 10, max_steps: int = 30,
                keep_best: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Robust (location, covariance) of the 2-D points ``x`` (n, 2): reweighted MCD.

    The raw estimate is the mean and covariance of the ``h = (n + 3) // 2``
    points with the smallest determinant, found by C-steps from ``starts``
    random 3-point subsets (seeded) and from the classical estimate (two steps
    from each, then the ``keep_best`` lowest determinants to convergence); it is
    then made consistent at the normal and reweighted with the points within
    the 97.5 % chi-square quantile, as scikit-learn's ``MinCovDet`` does.
    """
    x = np.asarray(x, dtype=float)
    n, d = x.shape
    if d != 2:
        raise ValueError("min_cov_det is written for two dimensions (closed-form chi-square quantiles)")
    h = (n + d + 1) // 2
    rng = np.random.default_rng(seed)
    candidates = [(x.mean(0), np.cov(x.T, bias=True))]
    for _ in range(starts):
        subset = x[rng.choice(n, d + 1, replace=False)]
        candidates.append((subset.mean(0), np.cov(subset.T, bias=True)))
    xt = _columns(x)  # the distances of every C-step run along the two contiguous columns
    # As FastMCD: two C-steps from every start, then only the most promising few to convergence.
    trial = [f for f in (_concentrate(x, xt, loc, cov, h, 2) for loc, cov in candidates) if f is not None]
    best = None
    for location, cov, _ in sorted(trial, key=lambda f: f[2])[:keep_best]:
        fitted = _concentrate(x, xt, location, cov, h, max_steps)
        if fitted is not None and (best is None or fitted[2] < best[2]):
            best = fitted
    if best is None:
        return x.mean(0), np.cov(x.T, bias=True)
    location, cov, _ = best
    # Consistency at the normal: the median squared distance of a 2-D normal is 2 ln 2.
    cov = cov * np.median(_mahalanobis2(xt, location, cov)) / (2 * math.log(2))
    keep = _mahalanobis2(xt, location, cov) < -2 * math.log(0.025)
    return x[keep].mean(0), np.cov(x[keep].T, bias=True)


def _concentrate(x, xt, location, cov, h, max_steps):
    """C-steps from (location, cov) until the h-subset stops changing: (location, cov, det) or None.

    ``x`` holds the points in rows (n, 2), ``xt`` the same points in columns (2, n).
    """
    chosen = None
    for _ in range(max_steps):
        if not np.isfinite(cov).all() or (det := np.linalg.det(cov)) <= 0:
            return None
        # The h nearest points: a partition (linear time) rather than a full sort of the distances.
        subset = np.sort(np.argpartition(_mahalanobis2(xt, location, cov), h - 1)[:h])
        if chosen is not None and np.array_equal(subset, chosen):
            return location, cov, det  # det is that of this (location, cov), just computed
        chosen = subset
        location, cov = _mean_cov(x.take(subset, 0))
    det = np.linalg.det(cov)
    return (location, cov, det) if det > 0 else None


def _mean_cov(s):
    """``s.mean(0), np.cov(s.T, bias=True)`` of the points ``s`` (h, 2), C-contiguous; overwrites ``s``.

    The same operations on the same memory layout as numpy's, so the same bits:
    the mean adds the rows in turn (a reduction over axis 0 of a C-contiguous
    array is not pairwise); np.cov copies s.T (order K: the layout of s),
    subtracts the mean, takes ``dot`` of its transpose with itself (the one
    BLAS call, syrk) and multiplies by 1 / h. np.cov's argument handling and
    extra copy were a large part of a C-step on robust_plane's few hundred to
    2,000 points.
    """
    h = len(s)
    location = s.sum(0)
    location /= h
    s -= location
    cov = np.dot(s.T, s)
    cov *= 1 / h
    return location, cov


def _mahalanobis2(xt, location, cov):
    """Squared Mahalanobis distances of the points in columns ``xt`` (2, n) (the 2x2 inverse written out: no einsum)."""
    (a, b), (_, c) = np.linalg.inv(cov)
    dx, dy = xt[0] - location[0], xt[1] - location[1]
    return a * dx * dx + 2.0 * b * dx * dy + c * dy * dy
