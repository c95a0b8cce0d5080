"""Plausibility checks: files that decode cleanly but cannot be a measurement (issue 13)."""

from pathlib import Path

import numpy as np
import pytest

from cd125gate.analysis import plausibility
from cd125gate.errors import InputError
from cd125gate.io.fcs import read_fcs
from conftest import build_fcs

ROOT = Path(__file__).parents[1]
TEST_DATA = ROOT / "test_data"
NAMES = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "BV510-A", "Time"]
STAINS = {"$P3S": "CD34", "$P4S": "CD125", "$P5S": "CD45"}
MARKERS = {"FSC-A": "FSC-A", "SSC-A": "SSC-A", "CD34": "FITC-A", "CD125": "PE-A", "CD45": "BV510-A",
           "Time": "Time"}
REQUIRED = ("FSC-A", "SSC-A", "CD45", "CD125")


def tube_columns(n=2000, seed=0):
    """Values like a real tube's: scatter over the 18-bit range, log-normal markers, rising time."""
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.uniform(2e4, 2.5e5, n), rng.uniform(1e4, 2e5, n),
        rng.lognormal(6, 1.5, n), rng.lognormal(5, 1.5, n), rng.lognormal(7, 1, n),
        np.sort(rng.uniform(0, 600, n)),
    ])


def read(tmp_path, columns=None, name="tube.fcs", **options):
    columns = tube_columns() if columns is None else columns
    options.setdefault("ranges", [262144] * 5 + [1024])
    options["keywords"] = dict(STAINS, **options.get("keywords", {}))
    path = tmp_path / name
    path.write_bytes(build_fcs(columns, names=NAMES, **options))
    return read_fcs(path)


def found(fcs, markers=MARKERS):
    return {(p.marker, p.fatal): p.text for p in plausibility.problems(fcs, markers, REQUIRED)}


def test_a_plausible_tube_has_no_problems(tmp_path):
    assert found(read(tmp_path)) == {}


def test_bundled_tubes_have_no_problems():
    # The thresholds must not touch real-looking data (see the module docstring for the corpus).
    from dataclasses import replace

    from cd125gate.analysis import panel
    from cd125gate.settings import load_settings

    panel_settings = load_settings().panel
    for path in sorted(TEST_DATA.glob("*.fcs")):
        if path.name == "corrupt_stained.fcs":
            continue
        fcs = read_fcs(path)
        markers = panel.resolve_markers(fcs.channels, replace(panel_settings, required=[]), path)
        assert plausibility.problems(fcs, markers, REQUIRED) == [], path.name


def test_range_far_above_the_data_is_fatal(tmp_path):
    # Issue 13: $P5R (CD125) = 1e308 turned a 20 % tube into "MET 100 %".
    fcs = read(tmp_path, ranges=[262144, 262144, 262144, 1e308, 262144, 1024])
    assert "$P4R=1e+308 but the largest value is" in found(fcs)[("CD125", True)]


def test_float_data_declared_as_masked_integers_is_fatal(tmp_path):
    # Float bytes read as 32-bit integers, masked to $PnR: uniform noise that gated as "MET 88.9 %".
    raw = build_fcs(tube_columns(), names=NAMES, ranges=[262144] * 5 + [1024], keywords=STAINS)
    path = tmp_path / "as_int.fcs"
    path.write_bytes(raw.replace(b"/$DATATYPE/F/", b"/$DATATYPE/I/"))
    problems = found(read_fcs(path))
    assert "100% of events have bits above $P1R=262144" in problems[("FSC-A", True)]
    assert ("CD125", True) in problems and ("CD34", False) in problems


def test_float_bit_patterns_in_unmasked_integers_are_fatal(tmp_path):
    floats = tube_columns().astype(np.float32)
    as_int = floats.view(np.uint32).astype(np.int64)
    fcs = read(tmp_path, as_int, datatype="I", bits=[32] * 6, ranges=[2 ** 32] * 6)
    assert "read as IEEE floats" in found(fcs)[("CD125", True)]
    # Genuine 32-bit integer data (values below 2**24) are not mistaken for floats.
    genuine = read(tmp_path, np.rint(tube_columns()), name="int.fcs", datatype="I", bits=[32] * 6,
                   ranges=[2 ** 18] * 5 + [1024])
    assert found(genuine) == {}


@pytest.mark.parametrize("column, value, text", [
    (1, 0.0, "constant: 100.0% of 2,000 events have the value 0"),          # constant SSC
    (0, 262143.0, "constant: 100.0% of 2,000 events have the value 262143"),
])
def test_constant_required_channel_is_fatal(tmp_path, column, value, text):
    columns = tube_columns()
    columns[:, column] = value
    assert found(read(tmp_path, columns))[(NAMES[column].replace("BV510-A", "CD45"), True)] == text


def test_many_events_at_the_ceiling_are_judged_after_gating_not_here(tmp_path):
    # Issue 17: 61 % of a granulocyte-rich marrow at the SSC ceiling FAILED the tube though its
    # blasts lay far below. Whether the ceiling matters is asked of the blasts (cd125gate.analysis.gating.ceiling).
    columns = tube_columns()
    columns[:1200, 1] = 262143.0   # at the ceiling: >= 99.9 % of $PnR=262144
    assert found(read(tmp_path, columns)) == {}


def test_a_pile_up_under_the_ceiling_is_fatal(tmp_path):
    # The detector clips where $PnR does not say: no margins gate removes those events.
    columns = tube_columns()
    columns[:, 0] *= 0.75              # every other event below 190,000
    columns[:1200, 0] = 200000.0
    assert found(read(tmp_path, columns))[("FSC-A", True)] == (
        "saturated below the range: 60% of 2,000 events sit at the maximum 200000, under the ceiling "
        "261882 the margins gate removes: the detector clips where $PnR does not say")
    # A lower margin_fraction puts the same value at the ceiling.
    fcs = read(tmp_path, columns, name="lower.fcs")
    assert plausibility.problems(fcs, MARKERS, REQUIRED, margin_fraction=0.75) == []


def test_non_finite_and_absurd_values_are_fatal(tmp_path):
    columns = tube_columns()
    columns[:3, 3] = np.nan
    columns[5, 4] = 1e30
    problems = found(read(tmp_path, columns))
    assert problems[("CD125", True)] == "3 of 2,000 events hold NaN or infinite values"
    assert problems[("CD45", True)].startswith("1 of 2,000 events have values beyond 1e+06 x the range")


def test_optional_marker_and_time_problems_are_doubts_only(tmp_path):
    columns = tube_columns()
    columns[:, 2] = 0.0   # CD34
    columns[:, 5] = 7.0   # Time
    problems = found(read(tmp_path, columns))
    assert set(problems) == {("CD34", False), ("Time", False)}
    assert "time QC cannot judge the flow" in problems[("Time", False)]


def test_check_refuses_fatal_stained_problems_and_returns_doubts(tmp_path):
    columns = tube_columns()
    columns[:, 1] = 5.0
    bad = read(tmp_path, columns, name="bad.fcs")
    with pytest.raises(InputError) as caught:
        plausibility.check(bad, None, MARKERS, REQUIRED)
    assert caught.value.source == bad.path
    assert caught.value.problem == "implausible data: SSC-A: constant: 100.0% of 2,000 events have the value 5"
    good = read(tmp_path, name="good.fcs")
    assert plausibility.check(good, bad, MARKERS, REQUIRED) == [
        "control tube implausible: SSC-A: constant: 100.0% of 2,000 events have the value 5"]
    assert plausibility.check(good, good, MARKERS, REQUIRED) == []


# --- End to end: the silently wrong answers, rebuilt from a bundled tube. ---

def _analyse(stained, control):
    from cd125gate.analysis.pipeline import analyze_sample

    return analyze_sample(stained, control).result


def _mutated(tmp_path, old, new):
    raw = (TEST_DATA / "low_fmo_stained.fcs").read_bytes()
    assert len(old) == len(new) and old in raw   # same length: every offset stays valid
    path = tmp_path / "mutant.fcs"
    path.write_bytes(raw.replace(old, new))
    return path


def test_cd125_range_of_1e308_fails_instead_of_met(tmp_path):
    path = _mutated(tmp_path, b"/$P6R/262144/", b"/$P6R/1e+308/")
    result = _analyse(path, TEST_DATA / "low_fmo_control.fcs")
    assert result.criterion == "FAILED"
    assert "CD125 (PE-A): $P6R=1e+308 but the largest value is" in result.reasons[0]


def test_float_data_declared_as_integers_fails_instead_of_met(tmp_path):
    path = _mutated(tmp_path, b"/$DATATYPE/F/", b"/$DATATYPE/I/")
    result = _analyse(path, TEST_DATA / "low_fmo_control.fcs")
    assert result.criterion == "FAILED" and "float data declared as integers" in result.reasons[0]


def test_stained_tube_as_its_own_control_is_refused(tmp_path):
    result = _analyse(TEST_DATA / "low_fmo_stained.fcs", TEST_DATA / "low_fmo_stained.fcs")
    assert result.criterion == "FAILED"
    assert "the control tube is the same file as the stained tube" in result.reasons[0]


def test_a_handful_of_events_is_not_judged_constant(tmp_path):
    # analyze refuses so few events with its own reason ("only 5 events"); no misleading "constant".
    columns = np.repeat(tube_columns(n=1), 5, axis=0)
    columns[:, 5] = np.arange(5)
    assert found(read(tmp_path, columns)) == {}
    columns = np.repeat(tube_columns(n=1), 20, axis=0)
    columns[:, 5] = np.arange(20)
    assert ("SSC-A", True) in found(read(tmp_path, columns, name="twenty.fcs"))


def test_non_finite_or_absurd_values_on_any_channel_are_fatal(tmp_path):
    # A fuzzer mutant: 501 infinite HLA-DR values (an optional marker) crashed a histogram,
    # and compensation would carry them into every marker.
    columns = tube_columns()
    columns[:10, 2] = np.inf          # CD34, optional
    columns[:3, 5] = np.nan           # Time
    problems = found(read(tmp_path, columns))
    assert problems[("CD34", True)] == "10 of 2,000 events hold NaN or infinite values"
    assert problems[("Time", True)] == "3 of 2,000 events hold NaN or infinite values"
    columns = tube_columns()
    columns[0, 2] = -1e30
    problems = found(read(tmp_path, columns, name="absurd.fcs"), markers={"FSC-A": "FSC-A"})
    assert problems[("FITC-A", True)].startswith("1 of 2,000 events have values beyond 1e+06 x the range")


def test_range_far_below_the_data_is_fatal(tmp_path):
    # A fuzzer mutant: $P3R (SSC-A) of 7 over values up to 262,143 crashed the gating.
    fcs = read(tmp_path, ranges=[262144, 7, 262144, 262144, 262144, 1024])
    assert found(fcs)[("SSC-A", True)].startswith("100% of events exceed 100 x $P2R=7 (largest ")


@pytest.mark.parametrize("other_share, constant", [(0.0099, True), (0.0101, False)])
def test_constant_is_judged_exactly_even_when_the_other_values_sit_on_the_subsample(other_share, constant):
    """The constant test reads the median of every k-th event: the odd values placed exactly
    there (the worst case for a subsample) must not hide a constant channel, nor fake one."""
    n = 100_000
    column = np.full(n, 7.0)
    others = int(other_share * n)
    step = max(1, int(0.4 / (1.0 - plausibility.CONSTANT_SHARE)))
    column[np.arange(others) * step % n] = np.arange(others) + 100.0
    found = plausibility._share_problems(column)
    assert bool(found and found[0].startswith("constant")) is constant, found
