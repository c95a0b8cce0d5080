"""Proportions, their confidence intervals, and cumulative subtraction against a control."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Preferred over the normal (Wald) interval because it stays inside [0, 1]
    and keeps its coverage for small counts and proportions near 0 or 1.

    :return: (low, high); (0.0, 1.0) when there are no trials
    """
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cumulative_subtraction(stained: np.ndarray, control: np.ndarray) -> float:
    """Overton's cumulative subtraction: the least share of ``stained`` brighter than ``control``.

    The largest gap ``F_control(x) - F_stained(x)`` between the empirical
    distribution functions: the one-sided two-sample Kolmogorov-Smirnov
    statistic (scipy's ``ks_2samp(stained, control, alternative="less")``, which
    a test matches; computed here with numpy so that a sample's process does not
    import scipy.stats for one number). If the stained values are control-like
    negatives plus brighter positives, at least that share is positive, wherever
    a cut-off is put.
    """
    stained, control = np.sort(np.asarray(stained, float)), np.sort(np.asarray(control, float))
    points = np.concatenate([stained, control])
    below_stained = np.searchsorted(stained, points, side="right") / stained.size
    below_control = np.searchsorted(control, points, side="right") / control.size
    return float(np.clip(np.max(below_control - below_stained), 0.0, 1.0))


def ks_margin(n1: int, n2: int, alpha: float) -> float:
    """The one-sided two-sample KS statistic's asymptotic critical value at level ``alpha``."""
    return math.sqrt(-math.log(alpha) / 2 * (n1 + n2) / (n1 * n2))
