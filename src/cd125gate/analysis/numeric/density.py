"""One-dimensional density helpers used to place gates: smoothed histograms, peaks and valleys.

Gates between two populations go where the density is lowest between their
peaks, as an analyst would draw them; the helpers here find those places on
a smoothed histogram, which is fast on a million events and deterministic.
"""

from __future__ import annotations

import numpy as np

# (mean, sd, weight) of one Gaussian component.
Component = tuple[float, float, float]


def smoothed_histogram(x: np.ndarray, lo: float, hi: float, bins: int = 256,
                       sigma_bins: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``x`` on [lo, hi] smoothed with a Gaussian kernel.

    :return: (bin centres, density) with density normalised to sum 1
    """
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    half = int(4 * sigma_bins) + 1
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_bins) ** 2)
    dens = np.convolve(counts, kernel / kernel.sum(), mode="same")
    total = dens.sum()
    return (edges[:-1] + edges[1:]) / 2, dens / total if total else dens


def peaks(dens: np.ndarray, min_height: float = 0.002) -> np.ndarray:
    """Indices of local maxima of ``dens`` higher than ``min_height``."""
    inner = (dens[1:-1] > dens[:-2]) & (dens[1:-1] >= dens[2:]) & (dens[1:-1] >= min_height)
    return np.flatnonzero(inner) + 1


def deepest_valley(x: np.ndarray, lo: float, hi: float, min_depth: float = 2.0, bins: int = 256,
                   sigma_bins: float = 2.0, min_height: float = 0.002, above: float | None = None) -> float | None:
    """The density minimum that best separates two populations of ``x`` within [lo, hi].

    Every pair of neighbouring peaks defines a valley (the lowest point
    between them); its depth is the lower of the two peak heights divided by
    the valley height. The deepest valley wins.

    :param min_depth: a valley shallower than this is no separation
    :param above: only valleys above this position count (the peaks are still found on all of
        [lo, hi], so a peak at ``above`` itself is one side of a valley)
    :return: the valley position, or None when no valley is deep enough
    """
    x = x[(x >= lo) & (x <= hi)]
    if x.size < 50:
        return None
    centres, dens = smoothed_histogram(x, lo, hi, bins, sigma_bins)
    tops = peaks(dens, min_height)
    best, best_depth = None, min_depth
    for left, right in zip(tops[:-1], tops[1:]):
        v = left + int(np.argmin(dens[left:right + 1]))
        depth = min(dens[left], dens[right]) / max(dens[v], 1e-12)
        if depth >= best_depth and (above is None or centres[v] > above):
            best, best_depth = float(centres[v]), depth
    return best


def robust_sd(x: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation."""
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def mode(x: np.ndarray, lo: float, hi: float, bins: int = 256, sigma_bins: float = 2.0) -> float:
    """Position of the highest point of the smoothed density of ``x`` on [lo, hi]."""
    centres, dens = smoothed_histogram(x, lo, hi, bins, sigma_bins)
    return float(centres[int(np.argmax(dens))])


def two_components(values: np.ndarray, seed: int, max_fit: int = 50000) -> tuple[Component, Component] | None:
    """((mean, sd, weight) of the lower, of the upper) of a two-component Gaussian mixture, or None.

    None with fewer than 200 values. Fitted on at most ``max_fit`` of them (drawn with ``seed``).
    """
    from cd125gate.analysis.numeric.mixture import gaussian_mixture

    if values.size < 200:
        return None
    rng = np.random.default_rng(seed)
    fit = values if values.size <= max_fit else rng.choice(values, max_fit, replace=False)
    gm = gaussian_mixture(fit, 2, seed=seed)
    means, sds = gm.means[:, 0], np.sqrt(gm.covariances[:, 0, 0])
    return tuple((float(means[i]), float(sds[i]), float(gm.weights[i])) for i in np.argsort(means))


def separation(lower: Component, upper: Component) -> float:
    """Distance between two components' means in pooled SDs."""
    return (upper[0] - lower[0]) / float(np.hypot(lower[1], upper[1]))


def boundary(lower: Component, upper: Component, points: int = 400) -> float:
    """Where the weighted normal densities of two populations cross, between their means.

    ``lower`` and ``upper`` are (mean, sd, weight) with lower's mean below
    upper's; a small population's boundary moves towards it, which keeps the
    larger one's tail out of its gate. Without a crossing between the means
    (one population dominates everywhere), the midpoint in SD units.
    """
    (m1, s1, w1), (m2, s2, w2) = lower, upper
    x = np.linspace(m1, m2, points)
    diff = (np.log(w1) - np.log(s1) - 0.5 * ((x - m1) / s1) ** 2
            - np.log(w2) + np.log(s2) + 0.5 * ((x - m2) / s2) ** 2)
    crossing = np.flatnonzero(np.diff(np.sign(diff)) != 0)
    if crossing.size:
        return float(x[crossing[0]])
    return float(m1 + (m2 - m1) * s1 / (s1 + s2))


def lower_peak(values: np.ndarray, seed: int, min_separation: float = 3.0, min_weight: float = 0.05,
               max_fit: int = 50000, fit: tuple[Component, Component] | None = None) -> Component | None:
    """(mean, sd, weight) of the lower of two well-separated Gaussian components of ``values``, or None.

    Two components ``min_separation`` pooled SDs apart, the smaller holding at least ``min_weight``:
    the CD125-negative blast peak under the positive one, dead cells under live ones on FSC-A.
    ``fit``: ``two_components``' answer for ``values``, when it is already known.
    """
    fit = fit if fit is not None else two_components(values, seed, max_fit)
    if fit is None:
        return None
    lower, upper = fit
    if separation(lower, upper) < min_separation or min(lower[2], upper[2]) < min_weight:
        return None
    return lower
