"""Every path of the CD125 cut-off (threshold.py) on small synthetic tubes whose answer is known.

The tubes hold one channel, CD125, on a linear scale (transformed = raw units,
one display unit = one decade), with the ``blasts`` and ``lymphocytes`` steps
given as masks: the cut-off functions read nothing else.
"""

from dataclasses import FrozenInstanceError, replace
from statistics import NormalDist
from types import SimpleNamespace

import numpy as np
import pytest

from cd125gate.analysis import threshold
from cd125gate.analysis.model import GateStep, Threshold, TubeAnalysis
from cd125gate.analysis.transforms import Scale
from cd125gate.settings import load_settings
from conftest import normal

CH = "CD125-A"
LINEAR = Scale(CH, "linear", {})
LOGICLE = Scale(CH, "logicle", {"T": 262144.0, "W": 0.5, "M": 4.5, "A": 0.0})
SETTINGS = load_settings().threshold
PCT = SETTINGS.internal_percentile
Z = NormalDist().inv_cdf(PCT / 100)


def tube(blasts, lymphocytes=(), others=(), populations=None, role="stained"):
    """A one-channel tube: CD125 of its blasts, its gated lymphocytes and other events, in that order."""
    blasts, lymphocytes, others = (np.asarray(v, dtype=float) for v in (blasts, lymphocytes, others))
    values = np.concatenate([blasts, lymphocytes, others])
    n = values.size
    is_blast = np.arange(n) < blasts.size
    is_lymph = (np.arange(n) >= blasts.size) & (np.arange(n) < blasts.size + lymphocytes.size)
    steps = [GateStep("blasts", None, None, CH, None, is_blast, n),
             GateStep("lymphocytes", None, None, CH, None, is_lymph, n)]
    return TubeAnalysis(role, None, [CH], {"CD125": CH}, values[:, None], {CH: LINEAR}, steps,
                        populations=populations)


# -- from the control -----------------------------------------------------------------------------

def test_control_percentile_is_the_percentile_of_the_control_blasts():
    values = np.arange(1000, dtype=float)
    cut = threshold.from_control(tube(values, role="control"), LINEAR, SETTINGS)
    assert cut.method == "control_percentile"
    assert cut.value == pytest.approx(np.percentile(values, SETTINGS.control_percentile))
    assert cut.value_raw == pytest.approx(cut.value)  # linear scale: raw = transformed
    assert (cut.percentile, cut.reference_events) == (SETTINGS.control_percentile, 1000)
    assert cut.reference is None


def test_control_percentile_in_raw_units_goes_through_the_scale():
    values = np.linspace(0.5, 3.5, 400)
    cut = threshold.from_control(tube(values, role="control"), LOGICLE, SETTINGS)
    assert cut.value_raw == pytest.approx(float(LOGICLE.inverse(np.array([cut.value]))[0]))
    assert cut.value_raw > 1000  # ~3.5 logicle units are thousands of raw units


def test_a_control_with_too_few_blasts_gives_no_cut_off():
    few = tube(np.arange(SETTINGS.min_control_blasts - 1, dtype=float), role="control")
    assert threshold.from_control(few, LINEAR, SETTINGS) is None
    enough = tube(np.arange(SETTINGS.min_control_blasts, dtype=float), role="control")
    assert threshold.from_control(enough, LINEAR, SETTINGS) is not None


# -- internal negative ----------------------------------------------------------------------------

def test_internal_negative_takes_the_negative_blast_peak():
    blasts = np.concatenate([normal(0.0, 0.1, 2800, 1), normal(2.0, 0.1, 1200, 2)])
    cut = threshold.from_internal_negative(tube(blasts, normal(0.0, 0.1, 500, 3)), LINEAR, SETTINGS)
    assert (cut.method, cut.reference, cut.percentile) == ("internal_negative", "blast_peak", PCT)
    assert cut.value == pytest.approx(0.0 + Z * 0.1, abs=0.03)  # the negative peak's percentile
    assert cut.reference_events == pytest.approx(2800, rel=0.03)


def test_a_negative_peak_far_above_the_lymphocytes_gives_way_to_the_lymphocytes():
    # The lower blast peak lies 1.5 decades over the lymphocytes: dim positives, not negatives.
    blasts = np.concatenate([normal(1.5, 0.1, 2800, 1), normal(3.5, 0.1, 1200, 2)])
    lymph = normal(0.0, 0.1, 500, 3)
    cut = threshold.from_internal_negative(tube(blasts, lymph), LINEAR, SETTINGS)
    assert (cut.method, cut.reference) == ("internal_negative", "lymphocytes")
    assert cut.value == pytest.approx(np.percentile(lymph, PCT))
    assert cut.reference_events == 500


def test_blast_valley_when_the_lymphocytes_cut_off_lies_inside_the_negative_blasts():
    # Two blast peaks 2.6 pooled SDs apart: too close for the blast peak (3 SD), far enough for a valley;
    # the lymphocytes' cut-off (~0.26) leaves ~20 % of the negative blasts above it.
    blasts = np.concatenate([normal(0.0, 0.3, 2000, 1), normal(1.1, 0.3, 2000, 2)])
    lymph = normal(0.0, 0.1, 500, 3)
    cut = threshold.from_internal_negative(tube(blasts, lymph), LINEAR, SETTINGS)
    assert (cut.method, cut.reference, cut.percentile) == ("internal_negative", "blast_valley", None)
    assert cut.value == pytest.approx(0.55, abs=0.1)  # where the two equal peaks are equally dense
    assert cut.value > np.percentile(lymph, PCT)
    assert "valley" in cut.description


def test_one_blast_peak_is_read_against_the_lymphocytes():
    blasts = normal(0.5, 0.2, 3000, 1)
    lymph = normal(0.0, 0.1, 400, 3)
    cut = threshold.from_internal_negative(tube(blasts, lymph), LINEAR, SETTINGS)
    assert (cut.reference, cut.reference_events) == ("lymphocytes", 400)
    assert cut.value == pytest.approx(np.percentile(lymph, PCT))


def test_too_few_gated_lymphocytes_read_the_named_negative_populations():
    blasts = normal(0.5, 0.2, 3000, 1)
    gated = normal(0.0, 0.1, threshold.MIN_LYMPHOCYTES - 1, 2)
    others = normal(0.2, 0.1, 300, 3)
    first = 3000 + gated.size
    rows = {"lymphocytes": np.arange(3000, first), "neutrophils": np.arange(first, first + 300)}
    pops = SimpleNamespace(rows_of=lambda name: rows[name])
    cut = threshold.from_internal_negative(tube(blasts, gated, others, pops), LINEAR, SETTINGS)
    assert (cut.reference, cut.reference_events) == ("negative_populations", gated.size + 300)
    assert cut.value == pytest.approx(np.percentile(np.concatenate([gated, others]), PCT))
    assert "fitted lymphocytes and neutrophils" in cut.description


def test_too_few_blasts_and_too_few_lymphocytes_give_no_internal_cut_off():
    few = tube(normal(0.5, 0.2, 150, 1), normal(0.0, 0.1, threshold.MIN_LYMPHOCYTES - 1, 2))
    assert threshold.from_internal_negative(few, LINEAR, SETTINGS) is None


def test_too_few_blasts_for_a_peak_still_use_the_lymphocytes():
    lymph = normal(0.0, 0.1, 300, 2)
    cut = threshold.from_internal_negative(tube(normal(0.5, 0.2, 150, 1), lymph), LINEAR, SETTINGS)
    assert cut.reference == "lymphocytes"
    assert cut.value == pytest.approx(np.percentile(lymph, PCT))


# -- fixed, and the choice between them ------------------------------------------------------------

def test_fixed_cut_off_is_the_configured_raw_value_on_the_scale():
    cut = threshold.fixed(LOGICLE, replace(SETTINGS, fixed_cutoff=500.0))
    assert (cut.method, cut.value_raw, cut.reference_events, cut.percentile) == ("fixed", 500.0, 0, None)
    assert cut.value == pytest.approx(float(LOGICLE.forward(np.array([500.0]))[0]))
    assert threshold.fixed(LOGICLE, replace(SETTINGS, fixed_cutoff=None)) is None


def test_choose_prefers_the_control():
    stained = tube(normal(0.5, 0.2, 3000, 1), normal(0.0, 0.1, 400, 2))
    control = tube(np.arange(1000, dtype=float) / 1000, role="control")
    assert threshold.choose(stained, control, LINEAR, SETTINGS).method == "control_percentile"


def test_choose_falls_back_to_the_internal_negative_then_to_the_fixed_cut_off():
    stained = tube(normal(0.5, 0.2, 3000, 1), normal(0.0, 0.1, 400, 2))
    few_blasts = tube(np.arange(10, dtype=float), role="control")
    internal = replace(SETTINGS, fallback="internal", fixed_cutoff=7.0)
    assert threshold.choose(stained, few_blasts, LINEAR, internal).method == "internal_negative"
    nothing_inside = tube(normal(0.5, 0.2, 150, 1), normal(0.0, 0.1, 10, 2))
    assert threshold.choose(nothing_inside, None, LINEAR, internal).method == "fixed"
    fixed = replace(SETTINGS, fallback="fixed", fixed_cutoff=7.0)
    cut = threshold.choose(stained, few_blasts, LINEAR, fixed)
    assert (cut.method, cut.value) == ("fixed", 7.0)


def test_choose_without_control_or_fallback_gives_none():
    nothing_inside = tube(normal(0.5, 0.2, 150, 1), normal(0.0, 0.1, 10, 2))
    assert threshold.choose(nothing_inside, None, LINEAR, replace(SETTINGS, fixed_cutoff=None)) is None
    assert threshold.choose(tube(normal(0.5, 0.2, 3000, 1), normal(0.0, 0.1, 400, 2)), None, LINEAR,
                            replace(SETTINGS, fallback="fixed", fixed_cutoff=None)) is None


# -- overlap with the control -----------------------------------------------------------------------

def control_cut(value):
    return Threshold("control_percentile", value, value, 99.5, 1000, "")


def test_overlap_is_only_asked_of_a_control_cut_off():
    stained = tube(normal(0.5, 0.2, 3000, 1))
    assert threshold.overlap(stained, None, Threshold("fixed", 1.0, 1.0, None, 0, ""), 0.1, SETTINGS) is None


def test_overlap_finds_dim_positives_under_the_control_cut_off():
    control = tube(normal(0.0, 0.2, 3000, 1), role="control")
    cut = control_cut(float(np.percentile(control.column(CH), 99.5)))
    # Half the stained blasts are dim positives, only 0.3 above the negatives: few pass the cut-off.
    stained = tube(np.concatenate([normal(0.0, 0.2, 1500, 2), normal(0.3, 0.2, 1500, 3)]))
    counted = float(np.mean(stained.column(CH) >= cut.value))
    found = threshold.overlap(stained, control, cut, counted, SETTINGS)
    assert found["missed"] and found["cumulative_subtraction"] - counted > found["tolerance"]
    same = tube(normal(0.0, 0.2, 3000, 4))
    counted = float(np.mean(same.column(CH) >= cut.value))
    assert not threshold.overlap(same, control, cut, counted, SETTINGS)["missed"]


def test_a_threshold_is_a_value():
    with pytest.raises(FrozenInstanceError):
        control_cut(1.0).value = 2.0
