"""Each rule that can withhold an answer, on a tiny input."""

import pytest

from cd125gate.analysis import criterion
from cd125gate.analysis.criterion import Evidence, decide
from cd125gate.settings import load_settings

SETTINGS = load_settings(overrides={"criterion": {"positive_fraction": 0.5, "min_blasts": 200, "confidence": 0.95},
                                    "qc": {"max_removed_fraction": 0.25, "max_control_blast_share_ratio": 2.0}})


def evidence(**changes):
    values = dict(blasts=1000, positive=700, threshold_method="control_percentile", control_used=True)
    values.update(changes)
    return Evidence(**values)


@pytest.mark.parametrize("positive, blasts, expected", [
    (700, 1000, "MET"),
    (300, 1000, "NOT_MET"),
    (510, 1000, "REVIEW"),      # CI 47.9%-54.1% includes 50%
    (150, 199, "REVIEW"),       # too few blasts
    (500, 1000, "REVIEW"),
])
def test_counts_alone(positive, blasts, expected):
    verdict = decide(evidence(positive=positive, blasts=blasts), SETTINGS)
    assert verdict.criterion == expected
    assert verdict.fraction == pytest.approx(positive / blasts)
    assert bool(verdict.reasons) == (expected == "REVIEW")
    assert criterion.decide_counts(positive, blasts, SETTINGS) == verdict
    assert verdict.ci_low < positive / blasts < verdict.ci_high


@pytest.mark.parametrize("positive, expected", [
    (700, "MET"), (650, "MET"), (300, "NOT_MET"),
    (620, "REVIEW"),    # CI 58.9 %-65.0 %: MET against a control, not 10 points clear without one
    (380, "REVIEW"),    # CI 35.0 %-41.1 %
])
def test_without_a_control_cut_off_only_a_clear_answer_stands(positive, expected):
    verdict = decide(evidence(positive=positive, threshold_method="internal_negative", control_used=False),
                     SETTINGS)
    assert verdict.criterion == expected
    reasons = [r for r in verdict.reasons if r.startswith("no control tube's cut-off")]
    assert bool(reasons) == (expected == "REVIEW")
    if reasons:
        assert reasons[0] == (f"no control tube's cut-off (threshold from internal negative): the estimate "
                              f"{positive / 10:.1f}% (CI {verdict.ci_low:.1%}-{verdict.ci_high:.1%}) is within "
                              "10 points of 50%; give a control tube or gate by hand")
        assert decide(evidence(positive=positive), SETTINGS).criterion in ("MET", "NOT_MET")


def test_no_gated_blasts_is_a_review_with_one_plain_reason():
    """A valid tube whose blasts the gates missed: REVIEW to gate by hand, not a FAILED tube."""
    verdict = decide(evidence(blasts=0, positive=0, blast_share=(0.0, 0.0)), SETTINGS)
    assert verdict.criterion == "REVIEW" and verdict.fraction is None
    assert verdict.reasons == ("the automatic gating found no blasts: gate the tube by hand (re-gate) "
                               "before any call",)


def test_every_rule_is_in_the_list_once():
    rules = [getattr(criterion, name) for name in dir(criterion)
             if callable(getattr(criterion, name)) and getattr(getattr(criterion, name), "__module__", "")
             == "cd125gate.analysis.criterion" and name not in ("decide", "decide_counts", "Evidence", "Criterion", "wilson_interval")]
    assert sorted(r.__name__ for r in rules) == sorted(r.__name__ for r in criterion.RULES)


def test_uncompensated_withholds_and_flags():
    verdict = decide(evidence(uncompensated=True), SETTINGS)
    assert verdict.criterion == "REVIEW" and "uncompensated" in verdict.flags
    assert "analysed uncompensated" in verdict.reasons[0]


def test_precompensated_is_a_flag_naming_how_not_a_reason():
    verdict = decide(evidence(precompensated="compensated by the instrument: $DFCnTOm keywords (FC 500)"),
                     SETTINGS)
    assert verdict.criterion == "MET" and verdict.reasons == ()
    assert verdict.flags == ("precompensated: compensated by the instrument: $DFCnTOm keywords (FC 500)",)
    assert decide(evidence(), SETTINGS).flags == ()


def test_detector_ceiling_flags_without_withholding_and_withholds_on_blasts():
    flag = "stained tube: SSC-A: 61.2% of events at the detector ceiling (>= 261,882), ...; no blasts among them"
    verdict = decide(evidence(ceiling_flags=(flag,)), SETTINGS)
    assert verdict.criterion == "MET" and verdict.flags == (flag,)
    doubt = "stained tube: 17.2% of blasts at the detector ceiling (CD125 (PE-A): 686 events), ..."
    verdict = decide(evidence(ceiling_doubts=(doubt,), ceiling_flags=(flag,)), SETTINGS)
    assert verdict.criterion == "REVIEW" and verdict.reasons == (doubt,) and verdict.flags == (flag,)


def test_unusable_control_withholds():
    verdict = decide(evidence(control_problem="c.fcs: truncated", control_used=False,
                              threshold_method="internal_negative"), SETTINGS)
    assert verdict.reasons == ("control tube unusable: c.fcs: truncated",)
    assert verdict.flags == ("no control tube", "threshold from internal negative, not from a control tube")


def test_threshold_source_is_a_flag_not_a_reason():
    assert decide(evidence(control_used=False, threshold_method="internal_negative"), SETTINGS).criterion == "MET"
    too_few = decide(evidence(threshold_method="fixed"), SETTINGS)
    assert too_few.criterion == "MET"
    assert too_few.flags == ("control tube has too few blasts to set the threshold",
                             "threshold from fixed, not from a control tube")


@pytest.mark.parametrize("removed, withheld, flagged", [(0.4, True, False), (0.05, False, True), (0.0, False, False)])
def test_time_qc(removed, withheld, flagged):
    verdict = decide(evidence(time_removed=(("stained", removed),)), SETTINGS)
    assert (verdict.criterion == "REVIEW") == withheld
    assert any("time QC removed" in f for f in verdict.flags) == flagged


@pytest.mark.parametrize("shares, withheld", [((0.30, 0.28), False), ((0.30, 0.10), True), ((0.3, 0.0), True)])
def test_control_from_another_specimen(shares, withheld):
    verdict = decide(evidence(blast_share=shares), SETTINGS)
    assert (verdict.criterion == "REVIEW") == withheld


def test_gating_self_checks_withhold():
    verdict = decide(evidence(gating_doubts=("gated blasts are 3% CD34+/CD117+: not a blast population",)),
                     SETTINGS)
    assert verdict.criterion == "REVIEW" and "not a blast population" in verdict.reasons[0]


@pytest.mark.parametrize("positive, share, missed, expected", [
    (380, 0.62, True, "REVIEW"),    # a NOT_MET hiding dim positives
    (380, 0.40, False, "NOT_MET"),  # the guard agrees with the count
    (380, 0.55, False, "REVIEW"),   # cumulative subtraction alone reaches 50 %
    (700, 0.90, True, "MET"),       # a MET stays MET, flagged as a lower bound
])
def test_dim_cd125_guard(positive, share, missed, expected):
    overlap = {"cumulative_subtraction": share, "tolerance": 0.03, "missed": missed}
    verdict = decide(evidence(positive=positive, overlap=overlap), SETTINGS)
    assert verdict.criterion == expected
    assert any("lower bound" in f for f in verdict.flags) == (expected == "MET")


def test_reasons_come_in_rule_order():
    verdict = decide(evidence(uncompensated=True, time_removed=(("control", 0.5),), blasts=100, positive=90),
                     SETTINGS)
    assert [r.split(" ")[0] for r in verdict.reasons] == ["no", "time", "only"]
