"""Self-checks after gating: does the gate called `blasts` hold blasts, and does the CD125 stain work?

Each check returns the reasons it failed, each naming the check; any reason
sends the sample to REVIEW (never to MET / NOT_MET). Levels are read against
the stained tube's own lymphocytes (the `lymphocytes` gate), in decades.

- ``blast_checks``: a named blast population exists; the gated blasts are
  CD45-dimmer than the lymphocytes and SSC-low; most carry a blast marker
  (CD34, CD117 or HLA-DR, configurable); few basophil-like events
  (CD123-bright, HLA-DR-negative, no CD34/CD117) are left; enough of them
  carry a blast marker to make ``criterion.min_blasts`` even when other cells
  crowd the region.
- ``internal_controls`` + ``control_reasons``: eosinophils and basophils
  carry CD125, lymphocytes and neutrophils do not; their CD125+ share against
  the sample's threshold tells a failed stain (or a control tube used as the
  stained tube) from a negative sample.
- ``reference_checks``: without a control tube, the internal-negative reference
  is shown to be negative (separate from the blasts, one CD125 peak, at the
  level of the neutrophils) before its cut-off is trusted.
- ``cd125_checks``: with a dim CD125 overlapping the control, the count above
  the cut-off misses positives; positives piled just above the cut-off
  continue under it, and a NOT_MET they could turn into a MET is withheld.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating.populations import decades_per_unit
from cd125gate.analysis.numeric.density import lower_peak

if TYPE_CHECKING:
    from cd125gate.analysis.model import Threshold, TubeAnalysis
    from cd125gate.settings import Criterion, Gating, GatingChecks, Settings

POSITIVE_CONTROLS = ("eosinophils", "basophils")
NEGATIVE_CONTROLS = ("lymphocytes", "neutrophils")


def _decades(tube: TubeAnalysis, marker: str, rows: np.ndarray) -> np.ndarray:
    ch = tube.markers[marker]
    return tube.data[rows, tube.channels.index(ch)] * decades_per_unit(tube.scales[ch])


def _log_ssc(tube: TubeAnalysis, rows: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(tube.data[rows, tube.channels.index(tube.markers["SSC-A"])], 10.0, None))


def blast_checks(tube: TubeAnalysis, gating_settings: Gating, min_blasts: int = 200) -> list[str]:
    """Reasons the gated blasts may not be blasts (empty when every check passes).

    :param gating_settings: the config's ``gating`` block (``checks`` and ``levels``)
    :param min_blasts: ``criterion.min_blasts``
    """
    checks, pops = gating_settings.checks, tube.populations
    # Row indices, not masks: every check below gathers only these events.
    blasts, lymph = np.flatnonzero(tube.step("blasts").mask), np.flatnonzero(tube.step("lymphocytes").mask)
    n = int(blasts.size)
    if n == 0:
        return []
    reasons = []
    if pops is not None and not pops.found("blasts"):
        reasons.append("population check: no blast population among the backbone populations; "
                       "the blast gate is only the expected CD45-dim/SSC-low zone")
    if lymph.size < checks.min_reference_events:
        return reasons + [(f"reference check: only {lymph.size} lymphocytes, too few to judge "
                          "CD45 and the blast markers against")]
    gap = np.median(_decades(tube, "CD45", lymph)) - np.median(_decades(tube, "CD45", blasts))
    if gap < checks.cd45_margin:
        reasons.append(f"CD45 check: gated blasts are only {gap:.2f} decades CD45-dimmer than the "
                       f"lymphocytes (at least {checks.cd45_margin:g} expected)")
    above = np.median(_log_ssc(tube, blasts)) - np.median(_log_ssc(tube, lymph))
    if above > checks.ssc_high:
        reasons.append(f"SSC check: gated blasts' SSC-A is {above:.2f} decades above the lymphocytes' "
                       f"(at most {checks.ssc_high:g} expected)")
    positive = marker_positive(tube, blasts, lymph, checks.blast_markers, checks.positive_above)
    if positive is not None:
        share = float(positive.mean())
        names = "/".join(m for m in checks.blast_markers if m in tube.markers)
        if share < checks.min_blast_marker_share:
            reasons.append(f"blast marker check: gated blasts are {share:.0%} {names}+: "
                           "not a blast population")
        if n >= min_blasts > int(positive.sum()):
            reasons.append(f"blast count check: only {int(positive.sum())} of the {n} gated events "
                           f"are {names}+, fewer than the {min_blasts} needed")
    left = basophil_like(tube, blasts, lymph, gating_settings)
    if left is not None and left > checks.max_basophil_like_share:
        reasons.append(f"basophil check: {left:.0%} of gated blasts are CD123-bright, HLA-DR-negative "
                       "and CD34/CD117-negative (basophil-like) after basophil exclusion")
    return reasons


def marker_positive(tube: TubeAnalysis, events: np.ndarray, reference: np.ndarray | Callable[[str], float],
                    markers: Sequence[str], above: float) -> np.ndarray | None:
    """Per event of ``events``: positive for any of ``markers`` (``above`` decades over the reference median).

    ``reference``: the rows whose median is the negative level, or a function marker -> that level
    in decades (the fitted lymphocytes' own centre).
    """
    present = [m for m in markers if m in tube.markers]
    if not present:
        return None
    centre = reference if callable(reference) else (lambda m: np.median(_decades(tube, m, reference)))
    hit = np.zeros(events.size, dtype=bool)
    for m in present:
        hit |= _decades(tube, m, events) >= centre(m) + above
    return hit


def basophil_like(tube: TubeAnalysis, blasts: np.ndarray, lymph: np.ndarray, gating_settings: Gating) -> float | None:
    """Share of gated blasts (rows ``blasts``) that look like basophils, or None without CD123 and HLA-DR.

    ``lymph``: the rows of the lymphocytes, the negative reference.
    """
    if "CD123" not in tube.markers or "HLA-DR" not in tube.markers:
        return None
    checks, levels = gating_settings.checks, gating_settings.levels["markers"]
    bright = _decades(tube, "CD123", blasts) >= np.median(_decades(tube, "CD123", lymph)) + levels[2]
    dr_neg = _decades(tube, "HLA-DR", blasts) < np.median(_decades(tube, "HLA-DR", lymph)) + checks.positive_above
    other = marker_positive(tube, blasts, lymph, [m for m in ("CD34", "CD117")], checks.positive_above)
    like = bright & dr_neg & (~other if other is not None else True)
    return float(like.mean())


def internal_controls(tube: TubeAnalysis, cut: Threshold) -> dict[str, dict]:
    """CD125+ share (against ``cut``) and median, in decades above the cut, of the named populations.

    From the events the populations were fitted on (a subsample of the viable
    singlets), so every tube pays the same small cost.

    :return: population -> {"events", "cd125_pos_share", "median_above_cut"} (None share without events)
    """
    pops = tube.populations
    ch = tube.markers["CD125"]
    per_decade = decades_per_unit(tube.scales[ch])
    out = {}
    for name in POSITIVE_CONTROLS + NEGATIVE_CONTROLS:
        rows = pops.rows_of(name) if pops is not None else np.array([], dtype=int)
        values = tube.column(ch)[rows]
        out[name] = {
            "role": "positive" if name in POSITIVE_CONTROLS else "negative",
            "events": int(values.size),
            "cd125_pos_share": float(np.mean(values >= cut.value)) if values.size else None,
            "median_above_cut": float((np.median(values) - cut.value) * per_decade) if values.size else None,
        }
        if name == "neutrophils":
            out[name]["two_peaks"] = lower_peak(values, seed=0) is not None
    return out


def control_reasons(controls: dict[str, dict], check_settings: GatingChecks) -> list[str]:
    """REVIEW reasons from the internal controls: a positive control negative, a negative one positive."""
    reasons = []
    for name, c in controls.items():
        if c["events"] < check_settings.min_control_events:
            continue
        share, above = c["cd125_pos_share"], c["median_above_cut"]
        margin = (check_settings.basophil_control_decades if name == "basophils"
                  else check_settings.positive_control_decades)
        dim = above < margin and share < check_settings.clearly_positive_share
        if c["role"] == "positive" and (share < check_settings.min_positive_control or dim):
            reasons.append(f"internal control check: {name} (CD125+ by nature) are {share:.0%} CD125+, "
                           f"median {above:+.2f} decades from the cut-off: failed CD125 stain?")
        eosinophils = _eosinophils_among(name, c, controls, check_settings)
        if c["role"] == "negative" and share > check_settings.max_negative_control and not eosinophils:
            reasons.append(f"internal control check: {name} (CD125- by nature) are {share:.0%} CD125+: "
                           "the cut-off or the compensation is off")
    return reasons


def _eosinophils_among(name: str, control: dict, controls: dict[str, dict], checks: GatingChecks,
                       clean: float = 0.05) -> bool:
    """Whether CD125+ "neutrophils" are eosinophils (CD125+ by nature) named neutrophils, not a bad cut-off.

    SSC-high granulocytes with a second CD125 peak are a mixture with eosinophils; all of them CD125+
    while the lymphocytes (enough of them) are clean below the same cut-off, they are eosinophils
    read as neutrophils (an eosinophilia shifts the levels). A wrong cut-off moves both populations.
    """
    if name != "neutrophils":
        return False
    lymph = controls.get("lymphocytes", {})
    lymph_clean = lymph.get("events", 0) >= checks.min_control_events and lymph["cd125_pos_share"] <= clean
    return bool(control.get("two_peaks")) or lymph_clean


def cd125_checks(stained: TubeAnalysis, control: TubeAnalysis | None, cut: Threshold, criterion_settings: Criterion,
                 band: float = 0.3) -> list[str]:
    """A NOT_MET that dim CD125+ blasts piled at the cut-off could turn into a MET.

    Resolved positives lie well above the cut-off; dim ones pile up just
    above it, and a distribution piled at the cut-off continues under it. The
    share of the counted positives within ``band`` decades above the cut-off,
    times the counted fraction, estimates the positives hidden just under it
    (as many as just above); when the count plus that, plus twice the count's
    binomial noise, reaches ``positive_fraction``, the NOT_MET is withheld.
    """
    if control is None:
        return []
    ch = stained.markers["CD125"]
    s = stained.column(ch)[stained.step("blasts").mask] * decades_per_unit(stained.scales[ch])
    if s.size == 0:
        return []
    cut_decades = cut.value * decades_per_unit(stained.scales[ch])
    above = s >= cut_decades
    counted = float(above.mean())
    need = criterion_settings.positive_fraction
    if counted >= need or not above.any():
        return []
    near = float(np.mean(s[above] < cut_decades + band))
    hidden = counted * near
    noise = 2.0 * np.sqrt(counted * (1.0 - counted) / s.size)  # ~95 % of the count's own noise
    if counted + hidden + noise >= need:
        return [(f"dim CD125 check: {counted:.1%} of blasts are above the cut-off, {near:.0%} of them within "
                f"{band:g} decades of it: as many dim CD125+ blasts may lie under it ({counted + hidden:.0%})")]
    return []


def reference_checks(tube: TubeAnalysis, cut: Threshold, check_settings: GatingChecks,
                     most_marker_positive: float = 0.1, most_above: float = 0.05,
                     neutrophil_margin: float = 0.3) -> list[str]:
    """Without a control tube: is the internal-negative reference shown to be CD125-negative?

    The cut-off of an internal reference is only as good as the reference is a negative
    population. Lymphocytes must be separate from the blasts (at most ``most_marker_positive`` of
    them positive for a blast marker: a "lymphocyte" gate holding blasts puts the cut-off in the
    blasts' CD125), have one CD125 peak, and sit no brighter than the neutrophils (another
    CD125-negative population, more autofluorescent) plus ``neutrophil_margin`` decades. A negative
    blast peak must leave the lymphocytes below the cut-off (at most ``most_above`` above it).
    """
    if cut.method != "internal_negative":
        return []
    lymph = np.flatnonzero(tube.step("lymphocytes").mask)
    values = tube.column(tube.markers["CD125"])[lymph]
    if cut.reference != "blast_peak":
        return _lymphocyte_reference(tube, lymph, values, check_settings, most_marker_positive, neutrophil_margin)
    above = float(np.mean(values >= cut.value)) if values.size >= check_settings.min_reference_events else 0.0
    if above > most_above:
        return [(f"reference check: {above:.0%} of the lymphocytes lie above the cut-off drawn on the "
                "blasts' negative CD125 peak: that peak is not a negative population")]
    return []


def _lymphocyte_reference(tube: TubeAnalysis, lymph: np.ndarray, values: np.ndarray, checks: GatingChecks,
                          most_marker_positive: float, neutrophil_margin: float) -> list[str]:
    """REVIEW reasons against lymphocytes (``lymph`` rows, CD125 ``values``) as the negative reference."""
    ch = tube.markers["CD125"]
    reasons = []
    share = _blast_marker_share(tube, lymph, checks)
    if share > most_marker_positive:
        reasons.append(f"reference check: {share:.0%} of the lymphocytes used as the CD125-negative "
                       "reference carry a blast marker: the reference holds blasts")
    if lower_peak(values, seed=0) is not None:
        reasons.append("reference check: CD125 on the lymphocytes used as the negative reference has two "
                       "peaks: part of the reference is CD125-positive")
    neutrophils = tube.populations.rows_of("neutrophils") if tube.populations is not None else ()
    if len(neutrophils) >= checks.min_control_events and values.size:
        gap = (np.median(values) - np.median(tube.column(ch)[neutrophils])) * decades_per_unit(tube.scales[ch])
        if gap > neutrophil_margin:
            reasons.append(f"reference check: the lymphocytes' CD125 lies {gap:.2f} decades above the "
                           "neutrophils': the reference is not at the level of the CD125-negative populations")
    return reasons


def _blast_marker_share(tube: TubeAnalysis, rows: np.ndarray, checks: GatingChecks) -> float:
    """Share of ``rows`` positive for CD34 or CD117, as the blast-marker gate reads them.

    Against the lymphocyte reference point of the fitted populations (the median of their own
    component), not the gate's median: a gate mostly of blasts would read its blasts as negative.
    """
    pops = tube.populations
    if pops is None or getattr(pops, "reference_point", None) is None or not rows.size:
        return 0.0
    hit = marker_positive(tube, rows, pops.reference_mean, checks.blast_markers[:2], checks.positive_above)
    return float(hit.mean()) if hit is not None else 0.0


def all_checks(stained: TubeAnalysis, control: TubeAnalysis | None, cut: Threshold,
               settings: Settings) -> tuple[list[str], dict[str, dict], tuple[dict, ...], list[str]]:
    """(REVIEW reasons, internal controls dict, blast clones, flags) of every self-check, for ``analyze``.

    The blast gate's coverage is judged per blast clone (``clones.clone_table``): a clone left
    outside the gate is a failed check, whatever the other clones hold.
    """
    from cd125gate.analysis.gating import clones

    gating_settings, criterion_settings = settings.gating, settings.criterion
    controls = internal_controls(stained, cut)
    table, coverage, flags = clones.clone_table(stained, cut, gating_settings.checks)
    reasons = (blast_checks(stained, gating_settings, criterion_settings.min_blasts)
               + (coverage if stained.step("blasts").count else [])
               + control_reasons(controls, gating_settings.checks)
               + reference_checks(stained, cut, gating_settings.checks)
               + cd125_checks(stained, control, cut, criterion_settings))
    return reasons, controls, table, flags
