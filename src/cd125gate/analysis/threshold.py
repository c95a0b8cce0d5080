"""The CD125 cut-off: from the control tube's blasts, else an internal negative, else a fixed value."""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.model import Threshold
from cd125gate.analysis.numeric import density

if TYPE_CHECKING:
    from cd125gate.analysis.model import TubeAnalysis
    from cd125gate.analysis.transforms import Scale
    from cd125gate.settings import Threshold as ThresholdSettings

# Lymphocytes needed for the internal-negative cut-off: a blood or marrow with 1 % lymphocytes
# in a small tube has a few hundred; fewer than this and the percentile is only the maximum.
MIN_LYMPHOCYTES = 50
# Decades the negative blast peak's cut-off may lie above the lymphocytes' (0.3 measured: blasts are
# more autofluorescent, CD34 spills into CD125); further above, the peak is dim positives.
PEAK_ABOVE_LYMPHOCYTES = 0.7
# The lymphocytes' cut-off lies inside the blasts' negative CD125 peak when it leaves more than this
# share of that peak above it (4x the percentile's own 0.5 %): negative blasts are more spread than
# lymphocytes (autofluorescence, spillover of a bright CD34 into CD125) and would be counted positive.
NEGATIVE_LEAK = 0.02
# Two blast peaks closer than lower_peak's 3 SD, whose negative one's 99.5th percentile would reach
# into the positives, are still told apart at their valley when at least this many pooled SDs apart
# and the density between them falls to 1 / VALLEY_DEPTH of the lower peak's height.
VALLEY_SEPARATION = 2.0
VALLEY_DEPTH = 1.5
PEAK_WEIGHT = 0.02


def from_control(control: TubeAnalysis, cd125_scale: Scale, settings: ThresholdSettings) -> Threshold | None:
    """Upper percentile of CD125 on the control tube's blasts (gated like the stained tube).

    :return: a Threshold, or None when the control has too few blasts to trust
    """
    values = control.column(control.markers["CD125"])[control.step("blasts").mask]
    if values.size < settings.min_control_blasts:
        return None
    pct = settings.control_percentile
    return _percentile_threshold(
        values, cd125_scale, pct, "control_percentile",
        f"{pct}th percentile of CD125 on {values.size} control-tube blasts",
    )


def from_internal_negative(stained: TubeAnalysis, cd125_scale: Scale, settings: ThresholdSettings,
                           seed: int = 0) -> Threshold | None:
    """The CD125-negative blasts' own peak, else the stained tube's lymphocytes.

    Without a control, the best negative reference is the CD125-negative part
    of the blasts themselves: same cells, same autofluorescence. A two-component
    Gaussian mixture on the blasts' transformed CD125 finds it when the blasts
    are clearly bimodal; the cut-off is then the configured upper percentile of
    that negative component. Otherwise (all blasts negative, or all positive)
    the reference is the lymphocytes, which carry no CD125 but are less
    autofluorescent than blasts, so that cut-off may sit lower; when it visibly
    lies inside the negative blasts of two closer peaks, the valley between the
    blasts' peaks (``_blast_valley``). Either way the result is flagged.
    """
    ch = stained.markers["CD125"]
    pct = settings.internal_percentile
    blasts = stained.column(ch)[stained.step("blasts").mask]
    fit = density.two_components(blasts, seed)
    # A few per cent of positives (or negatives) still make their own component beside the other peak.
    peak = density.lower_peak(blasts, seed, min_weight=PEAK_WEIGHT, fit=fit)
    lymph = _lymphocyte_threshold(stained, cd125_scale, pct)
    if peak is not None:
        mean, sd, weight = peak
        value = mean + NormalDist().inv_cdf(pct / 100) * sd
        # A "negative" blast peak far above the lymphocytes' CD125 is dim positive blasts under
        # a brighter population (basophils left in): the lymphocytes are the safer reference.
        from cd125gate.analysis.gating.populations import decades_per_unit

        if lymph is None or (value - lymph.value) * decades_per_unit(cd125_scale) <= PEAK_ABOVE_LYMPHOCYTES:
            raw = float(cd125_scale.inverse(np.array([value]))[0])
            return Threshold("internal_negative", float(value), raw, pct, int(round(weight * blasts.size)),
                             f"{pct}th percentile of the CD125-negative blast peak (no usable control)",
                             "blast_peak")
        return lymph
    return _blast_valley(fit, lymph, cd125_scale, blasts.size) or lymph


def _blast_valley(fit: tuple[density.Component, density.Component] | None, lymph: Threshold | None, cd125_scale: Scale,
                  n_blasts: int) -> Threshold | None:
    """The valley between the blasts' negative and positive CD125 peaks, when the lymphocytes' cut-off
    lies inside the negative one; else None.

    What a cytometrist does without a control when the negative blasts spread above the lymphocytes'
    cut-off: the lymphocytes show where CD125-negative lies, the blasts' own valley where their
    negatives end. Taken only when (``fit``, the blasts' two-component mixture) the lower peak is
    at the negative level (its centre under the lymphocytes' cut-off, so not dim positives), more than
    ``NEGATIVE_LEAK`` of it lies above that cut-off, and the two peaks are told apart by a valley
    (``VALLEY_SEPARATION``, ``VALLEY_DEPTH``). The cut-off is where the two weighted peaks are
    equally dense (``density.boundary``): the fewest blasts on the wrong side of it.
    """
    if fit is None or lymph is None:
        return None
    lower, upper = fit
    (m1, s1, w1), (m2, s2, w2) = lower, upper
    if min(w1, w2) < PEAK_WEIGHT or density.separation(lower, upper) < VALLEY_SEPARATION:
        return None
    share = 1.0 - NormalDist(m1, s1).cdf(lymph.value)  # of the negative blasts, above the lymphocytes' cut-off
    if m1 > lymph.value or share <= NEGATIVE_LEAK:
        return None
    cut = density.boundary(lower, upper)

    def height(x):
        return w1 * NormalDist(m1, s1).pdf(x) + w2 * NormalDist(m2, s2).pdf(x)

    if cut <= lymph.value or height(m1) < VALLEY_DEPTH * height(cut):
        return None
    raw = float(cd125_scale.inverse(np.array([cut]))[0])
    return Threshold("internal_negative", float(cut), raw, None, int(round(w1 * n_blasts)),
                     f"valley between the blasts' negative and positive CD125 peaks: the lymphocytes' cut-off "
                     f"({lymph.value_raw:.0f}) left {share:.0%} of the negative blasts above it (no usable control)",
                     "blast_valley")


def _lymphocyte_threshold(stained: TubeAnalysis, cd125_scale: Scale, pct: float) -> Threshold | None:
    """The percentile of CD125 on the stained tube's lymphocytes (or named negative populations), or None."""
    ch = stained.markers["CD125"]
    values = stained.column(ch)[stained.step("lymphocytes").mask]
    what = "lymphocytes"
    if values.size < MIN_LYMPHOCYTES and stained.populations is not None:
        # Too few gated lymphocytes: every fitted event named as a CD125-negative population.
        rows = np.concatenate([stained.populations.rows_of(n) for n in ("lymphocytes", "neutrophils")])
        values, what = stained.column(ch)[rows], "fitted lymphocytes and neutrophils"
    if values.size < MIN_LYMPHOCYTES:
        return None
    cut = _percentile_threshold(
        values, cd125_scale, pct, "internal_negative",
        f"{pct}th percentile of CD125 on {values.size} {what} of the stained tube (no usable control)",
    )
    return replace(cut, reference="lymphocytes" if what == "lymphocytes" else "negative_populations")


def fixed(cd125_scale: Scale, settings: ThresholdSettings) -> Threshold | None:
    """The configured fixed cut-off in compensated raw units, or None when none is set."""
    raw = settings.fixed_cutoff
    if raw is None:
        return None
    value = float(cd125_scale.forward(np.array([raw], dtype=float))[0])
    return Threshold("fixed", value, float(raw), None, 0, f"fixed cut-off {raw} from the config")


def overlap(stained: TubeAnalysis, control: TubeAnalysis | None, threshold: Threshold, counted: float,
            settings: ThresholdSettings) -> dict | None:
    """Whether CD125+ blasts hide under a control-based cut-off.

    A high percentile of the control counts only the positive blasts brighter
    than nearly every control blast. When CD125 is dim, positives overlap the
    control and that count falls short of the share that cumulative
    subtraction shows must be positive: the counted fraction is then only a
    lower bound. The gap is judged against the KS statistic's own noise.

    :param counted: the share of stained blasts at or above the cut-off
    :return: None unless the threshold comes from the control, else a dict:
        ``cumulative_subtraction``, ``tolerance`` and ``missed``
        (cumulative_subtraction - counted > tolerance)
    """
    from cd125gate.analysis.numeric import stats

    if threshold.method != "control_percentile":
        return None
    ch = stained.markers["CD125"]
    s = stained.column(ch)[stained.step("blasts").mask]
    c = control.column(ch)[control.step("blasts").mask]
    share = stats.cumulative_subtraction(s, c)
    tolerance = max(settings.overlap_min_gap, stats.ks_margin(s.size, c.size, settings.overlap_alpha))
    return {"cumulative_subtraction": share, "tolerance": tolerance, "missed": share - counted > tolerance}


def _percentile_threshold(values: np.ndarray, scale: Scale, pct: float, method: str, description: str) -> Threshold:
    value = float(np.percentile(values, pct))
    raw = float(scale.inverse(np.array([value]))[0])
    return Threshold(method, value, raw, pct, int(values.size), description)


def choose(stained: TubeAnalysis, control: TubeAnalysis | None, cd125_scale: Scale,
           settings: ThresholdSettings) -> Threshold | None:
    """The threshold to use: from the control tube, else the configured fallbacks, else None.

    Which one it came from is ``Threshold.method``; ``criterion.threshold_source``
    turns that into the flags a reviewer sees.
    """
    if control is not None:
        found = from_control(control, cd125_scale, settings)
        if found is not None:
            return found
    fallbacks = [lambda: fixed(cd125_scale, settings)]
    if settings.fallback == "internal":
        fallbacks.insert(0, lambda: from_internal_negative(stained, cd125_scale, settings))
    for make in fallbacks:
        found = make()
        if found is not None:
            return found
    return None
