"""The screening criterion: every rule that can withhold an answer, in one list.

``decide(evidence, settings)`` turns what the analysis found (counts, QC,
the control, the dim-CD125 guard, the gating's own checks) into ``MET``,
``NOT_MET`` or ``REVIEW`` with its reasons and flags. A *reason* withholds
the answer (REVIEW); a *flag* is shown to the reviewer without withholding it.
Each rule is a small function of the evidence, so each can be read and tested
on its own; ``RULES`` is their order, which is the order of the reasons.
``FAILED`` (the tube could not be analysed at all) is not decided here: the
analysis stops with the reason before there is evidence to weigh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cd125gate.analysis.numeric.stats import wilson_interval

if TYPE_CHECKING:
    from cd125gate.settings import Settings


@dataclass(frozen=True)
class Evidence:
    """What the analysis of one sample found, as far as the criterion needs it."""

    blasts: int                         # events in the blast gate
    positive: int                       # of them, at or above the CD125 threshold
    threshold_method: str               # Threshold.method
    uncompensated: bool = False         # no spillover matrix: analysed as acquired
    precompensated: str | None = None   # already compensated: how that was established
    control_used: bool = False          # a usable control tube was gated alongside
    control_problem: str | None = None  # why a given control tube cannot be used
    implausible: tuple = ()             # plausibility doubts about the tubes' data
    ceiling_doubts: tuple = ()          # blasts lost to the detector ceiling (ceiling.findings)
    ceiling_flags: tuple = ()           # many events at a ceiling, not among the blasts
    time_removed: tuple = ()            # (tube role, share of events time QC removed)
    blast_share: tuple | None = None    # (stained, control) blasts / leukocytes
    overlap: dict | None = None         # threshold.overlap: the dim-CD125 guard
    gating_doubts: tuple = ()           # the gating's self-checks that failed
    gating_flags: tuple = ()            # notes of the gating a reviewer should see

    @property
    def fraction(self) -> float | None:
        return self.positive / self.blasts if self.blasts else None


@dataclass(frozen=True)
class Criterion:
    """The decision: criterion, the reasons that withheld an answer, flags, fraction and CI."""

    criterion: str
    reasons: tuple
    flags: tuple
    fraction: float | None
    ci_low: float
    ci_high: float


def decide_counts(positive: int, blasts: int, settings: Settings) -> Criterion:
    """The criterion for counts alone, their cut-off trusted as a control tube's.

    For counts whose gates a person drew or checked (a re-gating, a simulated
    truth): every doubt of the automatic analysis is answered, what remains is
    whether the counts decide.
    """
    return decide(Evidence(blasts, positive, "control_percentile", control_used=True), settings)


def decide(evidence: Evidence, settings: Settings) -> Criterion:
    """The criterion for ``evidence`` under the ``criterion``, ``qc`` and ``threshold`` settings.

    :param settings: the analysis ``Settings`` (its ``criterion`` and ``qc`` sections)
    """
    reasons, flags = [], []
    for rule in RULES:
        withheld, shown = rule(evidence, settings)
        reasons += withheld
        flags += shown
    cut = settings.criterion.positive_fraction
    low, high = wilson_interval(evidence.positive, evidence.blasts, settings.criterion.confidence)
    if reasons:
        answer = "REVIEW"
    else:
        answer = "MET" if evidence.fraction >= cut else "NOT_MET"
    return Criterion(answer, tuple(reasons), tuple(flags), evidence.fraction, low, high)


# -- the rules, in order: each returns (reasons, flags) ------------------------------------------

def uncompensated(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Spillover uncorrected: every fluorescence number is in doubt."""
    if not evidence.uncompensated:
        return [], []
    return ["no compensation matrix: the tube was analysed uncompensated"], ["uncompensated"]


def precompensated(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Data compensated before cd125gate saw them: not withheld, but the reviewer sees how that is known."""
    if not evidence.precompensated:
        return [], []
    return [], [f"precompensated: {evidence.precompensated}"]


def control_unusable(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """A control tube was given but cannot be gated like the stained tube."""
    if evidence.control_problem is None:
        return [], []
    return [f"control tube unusable: {evidence.control_problem}"], []


def implausible_data(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Data that decode but make doubtful physical sense (plausibility.check)."""
    return list(evidence.implausible), []


def detector_ceiling(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Events at a detector ceiling: a doubt when blasts sit there, else a flag with the share."""
    return list(evidence.ceiling_doubts), list(evidence.ceiling_flags)


def threshold_source(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Not withheld, but the reviewer must see when the cut-off did not come from a control tube."""
    flags = []
    from_control = evidence.threshold_method == "control_percentile"
    if not evidence.control_used:
        flags.append("no control tube")
    elif not from_control:
        flags.append("control tube has too few blasts to set the threshold")
    if not from_control:
        flags.append(f"threshold from {evidence.threshold_method.replace('_', ' ')}, not from a control tube")
    return [], flags


def internal_cutoff(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Without a control tube's cut-off only a clear answer stands: the CI well away from the threshold.

    An internal negative population can hold blasts or sit off the blasts' background
    (a confident NOT_MET 26 % on a true 63 % was met this way), so its cut-off is trusted
    only far from the threshold.
    """
    if evidence.threshold_method == "control_percentile" or not evidence.blasts:
        return [], []
    criterion = settings.criterion
    cut, margin = criterion.positive_fraction, criterion.internal_cutoff_margin
    low, high = wilson_interval(evidence.positive, evidence.blasts, criterion.confidence)
    if high < cut - margin or low >= cut + margin:
        return [], []
    return [f"no control tube's cut-off (threshold from {evidence.threshold_method.replace('_', ' ')}): "
            f"the estimate {evidence.fraction:.1%} (CI {low:.1%}-{high:.1%}) is within "
            f"{margin * 100:.0f} points of {cut:.0%}; give a control tube or gate by hand"], []


def time_qc(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """A clog or a flow-rate jump that removed much of a tube makes its counts doubtful."""
    limit = settings.qc.max_removed_fraction
    reasons, flags = [], []
    for role, removed in evidence.time_removed:
        if removed > limit:
            reasons.append(f"time QC removed {removed:.0%} of the {role} tube's events "
                           f"(more than {limit:.0%})")
        elif removed > 0:
            flags.append(f"time QC removed {removed:.1%} of the {role} tube's events")
    return reasons, flags


def control_consistency(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """A control from the same specimen has about the same share of blasts among leukocytes."""
    if evidence.blast_share is None or not evidence.blasts:
        return [], []  # no control, or no blasts to compare (enough_blasts says why)
    stained, control = evidence.blast_share
    ratio = settings.qc.max_control_blast_share_ratio
    if control == 0 or not 1 / ratio <= stained / control <= ratio:
        return [f"blasts are {stained:.1%} of leukocytes in the stained tube but {control:.1%} in the "
                "control tube: the control may be from another specimen, or the gates may not fit it"], []
    return [], []


def gating_checks(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """The gating's own checks that the blast gate holds blasts."""
    return list(evidence.gating_doubts), []


def dim_cd125(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Dim CD125 under the cut-off: REVIEW where the missed positives could reach MET, else a flag.

    Below the needed fraction, a significant shortfall against cumulative
    subtraction, or cumulative subtraction alone reaching it, withholds the NOT_MET.
    """
    overlap = evidence.overlap
    if overlap is None or not evidence.blasts:
        return [], []
    needed = settings.criterion.positive_fraction
    share, fraction = overlap["cumulative_subtraction"], evidence.fraction
    finding = (f"CD125 overlaps the control: {fraction:.1%} of blasts are above the cut-off, "
               f"but cumulative subtraction shows at least {share:.1%} brighter than the control's blasts")
    if fraction < needed and (overlap["missed"] or share >= needed):
        return [finding + "; dim CD125+ blasts lie under the threshold"], []
    if overlap["missed"]:
        return [], [finding + "; the fraction is a lower bound"]
    return [], []


def gating_notes(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    return [], list(evidence.gating_flags)


def enough_blasts(evidence: Evidence, settings: Settings) -> tuple[list[str], list[str]]:
    """Too few blasts, or a confidence interval that straddles the threshold, cannot decide."""
    criterion = settings.criterion
    if not evidence.blasts:
        # A valid tube whose blasts the automatic gates did not find (e.g. CD34-, HLA-DR-,
        # CD123-bright blasts that look like basophils): a reviewer gates it by hand.
        return ["the automatic gating found no blasts: gate the tube by hand (re-gate) before any call"], []
    if evidence.blasts < criterion.min_blasts:
        return [f"only {evidence.blasts} blasts, fewer than the {criterion.min_blasts} needed to decide"], []
    cut = criterion.positive_fraction
    low, high = wilson_interval(evidence.positive, evidence.blasts, criterion.confidence)
    if low < cut <= high:
        return [f"the {criterion.confidence:.0%} confidence interval {low:.1%}-{high:.1%} "
                f"includes the {cut:.0%} threshold"], []
    return [], []


RULES = (uncompensated, precompensated, control_unusable, implausible_data, detector_ceiling, threshold_source,
         internal_cutoff, time_qc, control_consistency, gating_checks, dim_cd125, gating_notes, enough_blasts)
