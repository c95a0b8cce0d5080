"""Proportions, their confidence intervals, and the screening criterion."""

import math
from statistics import NormalDist


def wilson_interval(successes, trials, confidence=0.95):
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


def cumulative_subtraction(stained, control):
    """Overton's cumulative subtraction: the least share of ``stained`` brighter than ``control``.

    The largest gap ``F_control(x) - F_stained(x)`` between the empirical
    distribution functions (scipy's one-sided two-sample Kolmogorov-Smirnov
    statistic). If the stained values are control-like negatives plus brighter
    positives, at least that share is positive, wherever a cut-off is put.
    """
    from scipy.stats import ks_2samp

    return float(ks_2samp(stained, control, alternative="less", method="asymp").statistic)


def ks_margin(n1, n2, alpha):
    """The one-sided two-sample KS statistic's asymptotic critical value at level ``alpha``."""
    return math.sqrt(-math.log(alpha) / 2 * (n1 + n2) / (n1 * n2))
