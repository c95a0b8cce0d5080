"""Events at the detector ceiling: a flag where they do not matter, a doubt where they do (issue 17, item 6).

The tubes are simulated marrows with a detector gain raised after the fact
(scatter only, so the spillover matrix stays true) or CD125 bright enough to
clip: the same specimen gives the flag, the REVIEW and the FAILED.
"""

from dataclasses import replace

import numpy as np
import pytest

from cd125gate.analysis.gating import ceiling
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.settings import load_settings
from cd125gate.simulation.instrument import BLAST_LABELS, CEILING
from cd125gate.simulation.simulate import CaseSpec, simulate_case, tube_bytes

# A granulocyte-rich marrow: neutrophils (SSC-A ~115,000) and eosinophils (~150,000) are most
# of it, the blasts (~18,000) an SSC-low 15 %.
GRANULOCYTE_RICH = CaseSpec("granulocyte_rich", n_events=10000, blast_fraction=0.15, cd125_pos_fraction=0.8,
                            eosinophil_fraction=0.10, lymphocyte_weight=0.15, monocyte_weight=0.07,
                            neutrophil_weight=0.78)


@pytest.fixture(scope="module")
def granulocyte_rich():
    return simulate_case(GRANULOCYTE_RICH, 3)


def with_ssc_gain(tube, gain):
    """The tube acquired with the SSC detector's gain ``gain`` times higher: SSC-A/H scaled, then clipped."""
    events = tube.events.astype(float)
    for name in ("SSC-A", "SSC-H"):
        i = tube.channels.index(name)
        events[:, i] = np.minimum(events[:, i] * gain, CEILING)
    return replace(tube, events=events.astype(np.float32))


def write_pair(tmp_path, stained, control):
    paths = tmp_path / "stained.fcs", tmp_path / "control.fcs"
    paths[0].write_bytes(tube_bytes(stained, "fcs31"))
    paths[1].write_bytes(tube_bytes(control, "fcs31"))
    return paths


def analyse_with_ssc_gain(tmp_path, case, gain):
    stained, control, truth = case
    ssc = stained.channels.index("SSC-A")
    raised = with_ssc_gain(stained, gain)
    share = float(np.mean(raised.events[:, ssc] >= 0.999 * raised.ranges[ssc]))
    result = analyze_sample(*write_pair(tmp_path, raised, with_ssc_gain(control, gain)), load_settings()).result
    return result, share, truth


def test_granulocytes_at_the_ssc_ceiling_are_a_flag_not_a_failure(tmp_path, granulocyte_rich):
    # Issue 17: a high SSC gain put 61 % of a granulocyte-rich marrow at the SSC ceiling, the blasts far
    # below it, and the whole tube FAILED as implausible ("SSC-A: saturated: 62% of 10,000 events sit
    # at the maximum 262143"). The blasts are all there: the answer is the truth's, with the share shown.
    result, share, truth = analyse_with_ssc_gain(tmp_path, granulocyte_rich, 3.0)
    assert 0.55 < share < 0.7
    assert result.criterion == truth["expected_criterion"] == "MET", result.reasons
    assert result.cd125_pos_fraction == pytest.approx(truth["true_fraction"], abs=0.03)
    assert result.blast_events == pytest.approx(truth["blasts"], rel=0.05)
    stained_flag = next(f for f in result.flags if f.startswith("stained tube: SSC-A: "))
    assert stained_flag == (f"stained tube: SSC-A: {share:.1%} of events at the detector ceiling (>= 261,882), "
                            "removed by the margins gate; no blasts among them")
    assert any(f.startswith("control tube: SSC-A: ") and "no blasts among them" in f for f in result.flags)


def test_blasts_at_the_ssc_ceiling_withhold_the_answer(tmp_path, granulocyte_rich):
    # Twelve times the gain: the SSC-low blasts reach the ceiling too, ~17 % of them beyond it.
    result, share, _ = analyse_with_ssc_gain(tmp_path, granulocyte_rich, 12.0)
    assert result.criterion == "REVIEW"
    reason = next(r for r in result.reasons if r.startswith("stained tube: "))
    assert "of blasts at the detector ceiling (SSC-A: about " in reason
    assert "the CD125+ fraction is not measured on them" in reason
    lost = float(reason.split("stained tube: ")[1].split("%")[0]) / 100
    assert 0.05 < lost < 0.4
    assert any(r.startswith("control tube: ") and "the CD125 cut-off is set without them" in r
               for r in result.reasons)


def test_too_few_events_below_the_ceiling_fail_the_tube(tmp_path, granulocyte_rich):
    result, share, _ = analyse_with_ssc_gain(tmp_path, granulocyte_rich, 80.0)
    assert result.criterion == "FAILED"
    assert ": margins: only " in result.reasons[0]
    assert f"below the detector ceiling (SSC-A {share:.1%}, " in result.reasons[0]
    assert result.reasons[0].endswith("fewer than the 500 needed to gate")


def test_blasts_at_the_cd125_ceiling_withhold_the_answer(tmp_path):
    # CD125 so bright on 60 % of the blasts that 38 % of all blasts clip at the PE-A ceiling. Before,
    # the margins gate dropped them silently and the tube gave NOT_MET 36 % (no flag: 7.5 % of the
    # events at the maximum was far under the 50 % "saturated" verdict).
    spec = CaseSpec("bright", n_events=10000, blast_fraction=0.20, cd125_pos_fraction=0.6, cd125_median=300000)
    stained, control, _ = simulate_case(spec, 3)
    pe = stained.channels.index("PE-A")
    blasts = np.isin(stained.labels, BLAST_LABELS)
    clipped = float(np.mean(stained.events[blasts, pe] >= CEILING))
    result = analyze_sample(*write_pair(tmp_path, stained, control), load_settings()).result
    assert result.criterion == "REVIEW"
    reason = result.reasons[0]
    assert reason.startswith("stained tube: ")
    assert "of blasts at the detector ceiling (CD125 (PE-A): " in reason
    assert "the CD125+ fraction is not measured on them (more than 5%)" in reason
    assert float(reason.split("stained tube: ")[1].split("%")[0]) / 100 == pytest.approx(clipped, abs=0.03)


@pytest.mark.parametrize("beyond", [0.0, 0.02, 0.05, 0.2])
def test_ssc_tail_reads_the_share_beyond_the_ceiling_from_the_events_below(beyond):
    rng = np.random.default_rng(1)
    x = rng.normal(4.3, 0.09, 20000)
    top = np.quantile(x, 1.0 - beyond) if beyond else 6.0
    assert ceiling.ssc_tail(x[x < top], top) == pytest.approx(beyond, abs=0.01)
