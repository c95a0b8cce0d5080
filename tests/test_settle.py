"""The fast logicle path counts exactly what FlowKit counts, thanks to boundaries.settle_in_place."""

import numpy as np
import pytest

from cd125gate.analysis import compensation, transforms
from cd125gate.analysis.gating import boundaries, gates
from cd125gate.analysis.gating.gatestep import dim, gate_step
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.analysis.transforms import fast_logicle, logicle
from cd125gate.io import gatingml
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import CaseSpec, write_case


@pytest.mark.parametrize("W", [0.05, 0.5, 1.0, 1.5, 2.0])
def test_fast_logicle_error_is_far_below_the_settle_margin(W):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 500, 200000), np.exp(rng.uniform(0, 13, 200000)),
                        -np.exp(rng.uniform(0, 11, 20000)), [0.0, 262144.0, 1e7, -1e7]])
    error = np.abs(fast_logicle(x, 262144.0, W, 4.5, 0.0) - logicle(x, 262144.0, W, 4.5, 0.0))
    assert error.max() < boundaries.SETTLE_DELTA / 10


def test_fast_logicle_over_several_blocks_with_non_finite_values():
    rng = np.random.default_rng(2)
    n = 3 * transforms.BLOCK_VALUES + 7
    x = np.exp(rng.uniform(-3, 12, n)) * rng.choice([-0.01, 1.0], n)
    holes = [5, transforms.BLOCK_VALUES, n - 1]
    x[holes] = [np.nan, np.inf, -np.inf]
    args = (262144.0, 0.7, 4.5, 0.0)
    y = fast_logicle(x, *args)
    assert np.isnan(y[holes]).all()
    finite = np.isfinite(x)
    assert np.abs(y[finite] - logicle(x[finite], *args)).max() < boundaries.SETTLE_DELTA / 10


def test_fast_logicle_is_flowutils_itself_when_w_is_zero():
    x = np.array([-1.0, 0.0, 1e-9, 5.0, 1e4])
    assert np.array_equal(fast_logicle(x, 262144.0, 0.0, 4.5, 0.0), logicle(x, 262144.0, 0.0, 4.5, 0.0))


def test_an_event_on_a_boundary_is_counted_as_flowkit_counts_it(tmp_path):
    """A gate bound placed exactly on an event's FlowKit value: fast value and FlowKit disagree until settled."""
    truth = write_case(tmp_path, CaseSpec("settle", n_events=20000, control=None), 5)
    stained = tmp_path / truth["files"]["stained"]
    analysis = analyze_sample(stained, None, load_settings(), sample_id="settle")
    tube = analysis.stained
    channel = tube.markers["CD125"]
    j = tube.channels.index(channel)
    comp = compensation.compensate(tube.fcs.events, tube.fcs.channel_names(), analysis.compensation)
    exact = logicle(comp[:, tube.fcs.channel_names().index(channel)], **{
        k: tube.scales[channel].params[k] for k in ("T", "W", "M", "A")})
    blasts = tube.step("blasts").mask
    below = np.flatnonzero(blasts & (tube.data[:, j] < exact))  # fast value a hair under FlowKit's
    assert below.size, "the fast path should differ from flowutils somewhere"
    event = below[0]

    probe = gates.RectangleGate("probe", [dim(tube, channel, lo=float(exact[event]))])
    tube.steps.append(gate_step(tube, "probe", "blasts", probe, channel, None, "bound on one event's value"))
    assert not tube.step("probe").mask[event]  # the fast value alone misses it
    recomputed = boundaries.settle_in_place(tube, analysis.compensation)
    assert 0 < recomputed < len(tube.data) // 100
    assert tube.step("probe").mask[event]

    (tmp_path / "gates.xml").write_bytes(gatingml.export(tube, analysis.compensation))
    counts = gatingml.reapply(tmp_path / "gates.xml", stained)
    assert counts["probe"] == tube.step("probe").count
    assert counts == {s.name: s.count for s in tube.steps}
