import pytest

from cd125gate.stats import decide, wilson_interval

SETTINGS = {"positive_fraction": 0.5, "min_blasts": 200, "confidence": 0.95}


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553-0.3662
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4)
    assert high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("pos, n, expected", [
    (700, 1000, "MET"),
    (300, 1000, "NOT_MET"),
    (510, 1000, "REVIEW"),      # CI 47.9%-54.1% includes 50%
    (150, 199, "REVIEW"),       # too few blasts
    (500, 1000, "REVIEW"),
])
def test_decide(pos, n, expected):
    criterion, fraction, low, high, reasons = decide(pos, n, SETTINGS)
    assert criterion == expected
    assert fraction == pytest.approx(pos / n)
    assert bool(reasons) == (expected == "REVIEW")


def test_qc_doubts_withhold_a_clear_answer():
    criterion, *_, reasons = decide(900, 1000, SETTINGS, ["time QC removed 40%"])
    assert criterion == "REVIEW"
    assert reasons == ["time QC removed 40%"]
