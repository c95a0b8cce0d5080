"""Transforms: logicle/arcsinh equal to FlowKit's, W fitting, scales per channel, FlowKit export."""

import io
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from cd125gate.analysis import transforms
from cd125gate.analysis.transforms import Scale, fit_logicle, forward, inverse, logicle, logicle_inverse
from cd125gate.errors import InputError
from cd125gate.settings import load_settings

FCS = Path(__file__).parents[1] / "test_data" / "flowkit_comp" / "test_comp_example.fcs"

PARAMS = [  # (T, W, M, A)
    (262144.0, 0.5, 4.5, 0.0),
    (262144.0, 1.5, 4.5, 0.0),
    (262144.0, 2.25, 4.5, 0.0),   # widest W allowed
    (262144.0, 0.8, 4.5, -0.5),   # negative A
    (10000.0, 1.0, 4.0, 1.0),
    (1024.0, 0.2, 3.0, 0.3),
    (262144.0, 1e-6, 4.5, 0.0),
]


def wide_values(seed=0):
    """Values over the whole range a channel can hold, negatives and extremes included."""
    rng = np.random.default_rng(seed)
    return np.concatenate([
        rng.normal(0, 300, 20000),
        np.exp(rng.uniform(-30, math.log(1e7), 20000)),
        -np.exp(rng.uniform(-30, math.log(1e6), 20000)),
        [0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0, 262144.0, 262143.99, -262144.0, 1e9, -1e9],
    ])


def flowkit_logicle(x, T, W, M, A):
    import flowkit as fk

    return fk.transforms.LogicleTransform(param_t=T, param_w=W, param_m=M, param_a=A).apply(x)


@pytest.mark.parametrize("T, W, M, A", PARAMS + [(262144.0, 0.0, 4.5, 0.0), (262144.0, 0.0, 4.5, 1.0)])
def test_logicle_equals_flowkit_bit_for_bit(T, W, M, A):
    # Bit for bit, not within a tolerance: an exported gate boundary that sits
    # on an event's value must count that event as FlowKit does.
    x = wide_values()
    np.testing.assert_array_equal(logicle(x, T, W, M, A), flowkit_logicle(x, T, W, M, A))


def test_logicle_parameters_reach_flowutils_in_order():
    # T maps to 1, the scale is odd about 0, and 0 sits at (W + A) / (M + A).
    T, M = 262144.0, 4.5
    x = np.array([-1e4, -100.0, 100.0, 1e4, T])
    y0 = logicle(x, T, 0.0, M, 0.0)
    assert y0[-1] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(y0[:2], -y0[3:1:-1], atol=1e-12)  # odd about 0
    for W, A in [(1.0, 0.0), (0.5, 1.0), (0.0, 1.0)]:
        assert logicle(np.zeros(1), T, W, M, A)[0] == pytest.approx((W + A) / (M + A), abs=1e-12)


def test_logicle_is_monotonic_and_round_trips():
    T, W, M, A = 262144.0, 0.7, 4.5, 0.0
    x = np.sort(wide_values(1))
    y = logicle(x, T, W, M, A)
    assert np.all(np.diff(y) >= 0)
    back = logicle_inverse(y, T, W, M, A)
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9)
    grid = np.linspace(-0.2, 1.2, 1001)
    np.testing.assert_allclose(logicle(logicle_inverse(grid, T, W, M, A), T, W, M, A), grid, atol=1e-12)


def test_logicle_shapes_and_non_finite_values():
    T, W, M, A = 262144.0, 0.5, 4.5, 0.0
    x = np.array([[1.0, -5.0], [np.nan, -np.inf]])  # flowutils alone gives -1 for the last two
    y = logicle(x, T, W, M, A)
    assert y.shape == (2, 2)
    np.testing.assert_allclose(y[0], logicle(np.array([1.0, -5.0]), T, W, M, A))
    assert np.isnan(y[1]).all()
    assert logicle(np.array([]), T, W, M, A).shape == (0,)
    scale = Scale("FL1-A", "logicle", {"T": T, "W": W, "M": M, "A": A})
    assert isinstance(scale.forward(100.0), float)
    assert scale.inverse(scale.forward(100.0)) == pytest.approx(100.0, rel=1e-12)


@pytest.mark.parametrize("T, W, M, A, problem", [
    (0.0, 0.5, 4.5, 0.0, "T > 0"),
    (262144.0, -0.1, 4.5, 0.0, "0 <= W"),
    (262144.0, 2.3, 4.5, 0.0, "W <= M/2"),
    (262144.0, 0.5, 4.5, -0.6, "-W <= A"),
    (262144.0, 1.5, 4.5, 2.0, "A <= M - 2W"),
    (math.nan, 0.5, 4.5, 0.0, "finite"),
])
def test_invalid_logicle_parameters_are_refused(T, W, M, A, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        logicle(np.zeros(3), T, W, M, A)


# --- fit_logicle ------------------------------------------------------------------------


def test_fitted_width_follows_the_formula():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 50, 5000), rng.lognormal(8, 1, 5000)])
    params = fit_logicle(values, T=262144, M=4.5, negative_quantile=0.05)
    r = np.quantile(values[values < 0], 0.05)
    assert params["W"] == pytest.approx((4.5 - math.log10(262144 / abs(r))) / 2, abs=1e-12)
    assert params == {"T": 262144.0, "W": params["W"], "M": 4.5, "A": 0.0}
    assert all(type(v) is float for v in params.values())


def test_fitted_width_of_a_known_negative_spread():
    # Negatives of N(0, sigma): their 5th percentile is the 2.5th of the whole,
    # -1.96 sigma, so W = (M - log10(T / (1.96 sigma))) / 2.
    sigma, T, M = 200.0, 262144.0, 4.5
    values = np.random.default_rng(4).normal(0, sigma, 200000)
    expected = (M - math.log10(T / (1.959964 * sigma))) / 2
    assert fit_logicle(values, T=T, M=M)["W"] == pytest.approx(expected, abs=0.01)
    wider = fit_logicle(values * 4, T=T, M=M)["W"]
    assert wider == pytest.approx(expected + math.log10(4) / 2, abs=0.01)


def test_width_is_zero_without_negatives_and_clipped():
    T = 262144.0
    positive = np.random.default_rng(5).lognormal(6, 2, 1000)
    assert fit_logicle(positive, T)["W"] == 0.0
    assert fit_logicle(np.concatenate([positive, [-1e-3]]), T)["W"] == 0.0    # formula < 0
    assert fit_logicle(np.concatenate([positive, [-2e5] * 100]), T)["W"] == 1.5  # formula > max
    assert fit_logicle(np.concatenate([positive, [-2e5] * 100]), T, max_width=1.0)["W"] == 1.0
    assert fit_logicle([np.nan, np.inf, 10.0], T)["W"] == 0.0


def test_top_is_raised_to_the_data_maximum():
    assert fit_logicle([1.0, 5e5], 262144)["T"] == 5e5
    assert fit_logicle([1.0, 5e4], 262144)["T"] == 262144.0


# --- arcsinh ----------------------------------------------------------------------------


@pytest.mark.parametrize("cofactor, T", [(150.0, 262144.0), (5.0, 1024.0), (1000.0, 1e6)])
def test_arcsinh_equals_flowkit_and_the_cofactor_form(cofactor, T):
    scale = Scale("FL1-A", "arcsinh", {"cofactor": cofactor, "T": T})
    x = wide_values()
    y = forward(scale, x)
    np.testing.assert_allclose(y, transforms.to_flowkit(scale).apply(x), rtol=0, atol=1e-15)
    np.testing.assert_allclose(y, np.arcsinh(x / cofactor) / np.arcsinh(T / cofactor), rtol=1e-12, atol=1e-15)
    assert forward(scale, T) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(inverse(scale, y), x, rtol=1e-9, atol=1e-9)


# --- make_scales / apply_scales ---------------------------------------------------------

CHANNELS = ["FSC-A", "FSC-H", "SSC-A", "CD45 V500-A", "CD125 PE-A", "Time"]
FLUOR = ["CD45 V500-A", "CD125 PE-A"]


def events(seed=6):
    rng = np.random.default_rng(seed)
    n = 4000
    return np.column_stack([
        rng.uniform(1e4, 2.5e5, n), rng.uniform(1e4, 2e5, n), rng.uniform(1e3, 2e5, n),
        np.concatenate([rng.normal(0, 100, n // 2), rng.lognormal(8, 1, n // 2)]),
        rng.lognormal(6, 1.5, n),  # no negatives
        np.linspace(0, 300, n),
    ])


RANGES = dict.fromkeys(CHANNELS, 262144.0)


def test_make_scales_linear_for_scatter_and_time():
    data = events()
    scales = transforms.make_scales(data, CHANNELS, FLUOR, RANGES, load_settings().transform)
    assert list(scales) == CHANNELS
    assert {c: s.kind for c, s in scales.items()} == {
        "FSC-A": "linear", "FSC-H": "linear", "SSC-A": "linear",
        "CD45 V500-A": "logicle", "CD125 PE-A": "logicle", "Time": "linear"}
    assert scales["Time"].params == {}
    cd45 = scales["CD45 V500-A"].params
    assert cd45 == fit_logicle(data[:, 3], 262144.0, M=4.5, A=0.0, negative_quantile=0.05, max_width=1.5)
    assert cd45["W"] > 0.3
    assert scales["CD125 PE-A"].params["W"] == 0.0


def test_make_scales_arcsinh_from_settings():
    transform = load_settings(overrides={"transform": {"kind": "arcsinh", "arcsinh": {"cofactor": 300.0}}}).transform
    scales = transforms.make_scales(events(), CHANNELS, FLUOR, RANGES, transform)
    assert scales["CD125 PE-A"] == Scale("CD125 PE-A", "arcsinh", {"cofactor": 300.0, "T": 262144.0})
    assert scales["SSC-A"].kind == "linear"


@pytest.mark.parametrize("key, value, problem", [
    ("kind", "log", "transform.kind: 'log' is not one of logicle, arcsinh"),
    ("logicle", {"max_width": 3.0}, "W <= M/2"),
    ("logicle", {"negative_quantile": 1.5}, "transform.logicle.negative_quantile: 1.5 is not in 0 < x <= 0.5"),
    ("arcsinh", {"cofactor": 0}, "transform.arcsinh.cofactor: 0 is not in 0 < x <= 1e+06"),
])
def test_bad_transform_settings_are_refused_when_loaded(key, value, problem):
    with pytest.raises(InputError) as err:
        load_settings(overrides={"transform": {key: value}})
    assert problem in err.value.problem


def test_channel_without_a_usable_range_is_refused():
    data = events()
    data[:, 4] = -np.abs(data[:, 4])
    with pytest.raises(InputError) as err:
        transforms.make_scales(data, CHANNELS, FLUOR, dict(RANGES, **{"CD125 PE-A": 0.0}), load_settings().transform)
    assert err.value.source == "channel CD125 PE-A" and "T > 0" in err.value.problem


def test_apply_scales_transforms_each_column_in_place_order():
    data = events()
    scales = transforms.make_scales(data, CHANNELS, FLUOR, RANGES, load_settings().transform)
    before = data.copy()
    out = transforms.apply_scales(data, CHANNELS, scales)
    np.testing.assert_array_equal(data, before)
    for j, name in enumerate(CHANNELS):
        np.testing.assert_array_equal(out[:, j], forward(scales[name], data[:, j]))
    np.testing.assert_array_equal(out[:, 0], data[:, 0])
    assert not np.allclose(out[:, 3], data[:, 3])


# --- FlowKit export ---------------------------------------------------------------------


def test_to_flowkit_and_ids():
    logicle_scale = Scale("CD125 PE-A", "logicle", {"T": 262144.0, "W": 0.6, "M": 4.5, "A": 0.0})
    xform = transforms.to_flowkit(logicle_scale)
    assert (xform.param_t, xform.param_w, xform.param_m, xform.param_a) == (262144.0, 0.6, 4.5, 0.0)
    x = wide_values()
    np.testing.assert_array_equal(forward(logicle_scale, x), xform.apply(x))
    assert transforms.transform_id(logicle_scale) == "logicle_CD125_PE-A"
    assert transforms.transform_id(Scale("IL-5Rα/PE", "arcsinh", {})) == "arcsinh_IL-5R__PE"
    assert transforms.to_flowkit(Scale("FSC-A", "linear", {})) is None


def test_exported_logicle_gate_reapplies_to_the_same_count():
    """A gate drawn on our logicle units counts the same events when FlowKit re-applies it."""
    import flowkit as fk

    from cd125gate.io.fcs import read_fcs

    fcs = read_fcs(FCS)
    names = fcs.channel_names()
    channel = "PE-A"
    values = fcs.events[:, names.index(channel)]
    scale = Scale(channel, "logicle", fit_logicle(values, T=262144.0))
    assert scale.params["W"] > 0
    y = forward(scale, values)
    # Percentile boundaries land on event values shared by tied events: the
    # count agrees only if our values equal FlowKit's bit for bit.
    low, high = np.quantile(y, [0.3, 0.9])
    assert (y == low).sum() > 1
    strategy = fk.GatingStrategy()
    strategy.add_transform(transforms.transform_id(scale), transforms.to_flowkit(scale))
    dim = fk.Dimension(channel, compensation_ref="uncompensated",
                       transformation_ref=transforms.transform_id(scale), range_min=low, range_max=high)
    strategy.add_gate(fk.gates.RectangleGate("band", [dim]), ("root",))
    handle = io.BytesIO()
    fk.export_gatingml(strategy, handle)
    handle.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's off-by-one DATA offset
        sample = fk.Sample(str(FCS), ignore_offset_error=True)
    count = fk.parse_gating_xml(handle).gate_sample(sample).get_gate_count("band")
    assert count == int(((y >= low) & (y < high)).sum())
