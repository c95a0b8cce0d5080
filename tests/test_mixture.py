"""The numpy mixture and MCD estimators agree with scikit-learn's on the same data."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.covariance import MinCovDet
from sklearn.mixture import GaussianMixture

from cd125gate.analysis.numeric.mixture import _sum_rows, gaussian_mixture, min_cov_det


def three_populations(rng, n=6000):
    """A big, a middle and a small (3 %) population, as in a tube's backbone."""
    sizes = (int(n * 0.67), int(n * 0.30), int(n * 0.03))
    means = ([0.0, 0.0, 0.0], [3.0, 1.0, -1.0], [-2.0, 3.0, 2.0])
    covs = (np.diag([0.3, 0.2, 0.4]), [[0.5, 0.2, 0.0], [0.2, 0.3, 0.0], [0.0, 0.0, 0.2]], np.diag([0.1, 0.1, 0.1]))
    x = np.vstack([rng.multivariate_normal(m, c, s) for m, c, s in zip(means, covs, sizes)])
    truth = np.repeat(np.arange(3), sizes)
    return x, truth, np.array(means)


def test_mixture_finds_the_populations_scikit_learn_finds():
    x, truth, means = three_populations(np.random.default_rng(1))
    ours = gaussian_mixture(x, 3, seed=0, reg_covar=1e-4)
    theirs = GaussianMixture(3, covariance_type="full", random_state=0, tol=1e-3, reg_covar=1e-4).fit(x)
    assert ours.converged
    assert ours.mean_log_likelihood == pytest.approx(theirs.score(x), abs=1e-3)
    order = [int(np.argmin(((ours.means - m) ** 2).sum(1))) for m in means]
    assert sorted(order) == [0, 1, 2]
    assert np.abs(ours.means[order] - means).max() < 0.05
    assert ours.weights[order] == pytest.approx([0.67, 0.30, 0.03], abs=0.005)
    labels = np.array(order)[truth]
    assert (ours.predict(x) == labels).mean() > 0.995
    sk_order = [int(np.argmin(((theirs.means_ - m) ** 2).sum(1))) for m in means]
    assert np.abs(ours.covariances[order] - theirs.covariances_[sk_order]).max() < 1e-3


def test_mixture_is_deterministic_and_works_in_one_dimension():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(0.0, 0.2, 4000), rng.normal(2.0, 0.3, 1000)])
    a, b = gaussian_mixture(values, 2, seed=3), gaussian_mixture(values, 2, seed=3)
    assert np.array_equal(a.means, b.means) and np.array_equal(a.covariances, b.covariances)
    lo, hi = np.argsort(a.means[:, 0])
    assert a.means[lo, 0] == pytest.approx(0.0, abs=0.02) and a.means[hi, 0] == pytest.approx(2.0, abs=0.03)
    assert np.sqrt(a.covariances[lo, 0, 0]) == pytest.approx(0.2, abs=0.01)
    assert a.weights[lo] == pytest.approx(0.8, abs=0.01)


def test_mixture_survives_identical_points_and_more_components_than_clusters():
    x = np.vstack([np.zeros((300, 2)), np.ones((300, 2))])
    fit = gaussian_mixture(x, 4, seed=0, reg_covar=1e-4)
    assert np.isfinite(fit.means).all() and np.isfinite(fit.covariances).all()
    assert fit.weights.sum() == pytest.approx(1.0)
    assert set(fit.predict(x)[:300]).isdisjoint(fit.predict(x)[300:])


def test_sums_over_the_rows_add_in_numpys_order():
    # The fit holds its events in columns and sums over rows (dimensions, components); these
    # sums equal, to the bit, numpy's sums along the rows of the events-in-rows layout, so the
    # layout does not change the fit's results.
    rng = np.random.default_rng(4)
    for m in [1, 2, 6, 7, 8, 9, 12, 16, 17, 129, 300]:
        a = rng.normal(size=(m, 257)) ** 3
        assert np.array_equal(_sum_rows(a), np.ascontiguousarray(a.T).sum(1)), m
    a = rng.normal(size=(9, 4, 33))
    assert np.array_equal(_sum_rows(a), np.ascontiguousarray(np.moveaxis(a, 0, -1)).sum(-1))


def contaminated(rng, n=2000, share=0.2):
    core = rng.multivariate_normal([1.0, 2.0], [[0.04, 0.015], [0.015, 0.02]], int(n * (1 - share)))
    stray = rng.multivariate_normal([1.6, 2.5], [[0.05, 0.0], [0.0, 0.05]], n - len(core))
    return np.vstack([core, stray])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mcd_follows_the_core_as_scikit_learns_does(seed):
    x = contaminated(np.random.default_rng(seed))
    location, cov = min_cov_det(x, seed=0)
    theirs = MinCovDet(random_state=0).fit(x)
    assert np.abs(location - theirs.location_).max() < 0.02
    assert np.abs(cov - theirs.covariance_).max() < 0.1 * np.abs(theirs.covariance_).max()
    # and the core, not the classical estimate pulled towards the stray events
    assert np.abs(location - [1.0, 2.0]).max() < 0.03
    assert np.abs(x.mean(0) - [1.0, 2.0]).max() > 0.08


def test_mcd_of_collinear_points_falls_back_to_the_classical_estimate():
    t = np.linspace(0, 1, 100)
    x = np.column_stack([t, 2 * t])
    location, cov = min_cov_det(x)
    assert location == pytest.approx(x.mean(0))
    with pytest.raises(ValueError, match="two dimensions"):
        min_cov_det(np.zeros((10, 3)))


def test_the_estimators_do_not_import_scikit_learn():
    code = ("import sys\nimport cd125gate.analysis.numeric.mixture, cd125gate.analysis.gating.populations, cd125gate.analysis.gating.hierarchy, cd125gate.analysis.threshold\n"
            "assert not {'sklearn', 'scipy.stats', 'pandas', 'flowkit'} & set(sys.modules), sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
