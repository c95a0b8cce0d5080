import numpy as np
import pytest

from cd125gate.analysis.numeric.stats import cumulative_subtraction, ks_margin, wilson_interval


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553-0.3662
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4)
    assert high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_cumulative_subtraction_is_the_share_brighter_than_the_control():
    control = np.arange(1000.0)
    # 70% control-like, 30% above every control value: exactly 0.3 must be positive
    stained = np.concatenate([np.arange(0.0, 1000.0, 1000 / 700), 2000 + np.arange(300.0)])
    assert cumulative_subtraction(stained, control) == pytest.approx(0.3, abs=1e-3)
    # Positives inside the control's range (its 50th to 80th percentile): none clears a 99.5th
    # percentile cut-off, yet half of them show: max_x F_c - F_s = 0.3 * 500/1000 at x = 500.
    stained = np.concatenate([np.arange(0.0, 1000.0, 1000 / 700), 500 + np.arange(300.0)])
    assert np.mean(stained >= np.percentile(control, 99.5)) < 0.01
    assert cumulative_subtraction(stained, control) == pytest.approx(0.15, abs=2e-3)
    assert cumulative_subtraction(control - 100, control) == 0.0  # a dimmer tube: nothing positive


def test_ks_margin_is_the_asymptotic_one_sided_critical_value():
    # sqrt(-ln(alpha) / 2 * (n + m) / (n m)); for n = m = 1000, alpha = 0.05: 0.0547
    assert ks_margin(1000, 1000, 0.05) == pytest.approx(0.05473, abs=1e-5)
    assert ks_margin(4000, 4000, 0.05) == pytest.approx(ks_margin(1000, 1000, 0.05) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cumulative_subtraction_equals_scipys_one_sided_ks_statistic(seed):
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(seed)
    stained = np.concatenate([rng.normal(0, 1, 700), rng.normal(1.5, 1, 300)]).round(1)  # ties too
    control = rng.normal(0, 1, 900).round(1)
    expected = ks_2samp(stained, control, alternative="less", method="asymp").statistic
    assert cumulative_subtraction(stained, control) == pytest.approx(expected, abs=1e-12)
