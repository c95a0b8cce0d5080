"""QC figures: built from a fake but realistic gated tube (numpy blobs + FlowKit gates)."""

import itertools
from dataclasses import replace

import flowkit
import numpy as np
import pandas as pd
import pytest
from flowkit import Dimension
from flowkit import gates as fk_gates

BooleanGate, PolygonGate, RectangleGate = fk_gates.BooleanGate, fk_gates.PolygonGate, fk_gates.RectangleGate

from cd125gate import processes, results
from cd125gate.analysis.model import GateStep, Threshold, TimeQC, TubeAnalysis
from cd125gate.analysis.transforms import Scale
from cd125gate.figures import gate_outlines, plots, qc_panels, raster, ticks, tube_view

CHANNELS = ["FSC-A", "FSC-H", "SSC-A", "V500-A", "APC-A", "BV421-A", "PE-A", "APC-Cy7-A", "Time"]
MARKERS = {"FSC-A": "FSC-A", "FSC-H": "FSC-H", "SSC-A": "SSC-A", "CD45": "V500-A", "CD123": "APC-A",
           "HLA-DR": "BV421-A", "CD125": "PE-A", "viability": "APC-Cy7-A", "Time": "Time"}
COFACTOR = 150.0


class FakeScale(Scale):
    """A Scale with the transform inline, so these tests do not depend on cd125gate.analysis.transforms."""

    def forward(self, raw):
        raw = np.asarray(raw, dtype=float)
        return raw if self.kind == "linear" else np.arcsinh(raw / COFACTOR)

    def inverse(self, transformed):
        transformed = np.asarray(transformed, dtype=float)
        return transformed if self.kind == "linear" else COFACTOR * np.sinh(transformed)


# Populations: (share, FSC-A, SSC-A, CD45, CD123, HLA-DR, CD125, viability) in raw units (median)
POPULATIONS = {
    "debris": (0.08, 8e3, 6e3, 50, 10, 10, 10, 300),
    "dead": (0.04, 50e3, 30e3, 800, 30, 30, 20, 20000),
    "lymphocytes": (0.12, 60e3, 20e3, 20000, 40, 300, 20, 100),
    "monocytes": (0.06, 110e3, 60e3, 9000, 400, 5000, 60, 100),
    "granulocytes": (0.15, 130e3, 160e3, 4000, 30, 30, 40, 100),
    "basophils": (0.03, 80e3, 25e3, 1200, 15000, 40, 2500, 100),
    "blasts": (0.52, 90e3, 35e3, 1500, 1500, 6000, None, 100),
}


def fake_tube(role="stained", n=20000, seed=0, cd125_pos_share=0.6, threshold=None):
    """A gated TubeAnalysis whose masks come from applying the FlowKit gates to its events."""
    rng = np.random.default_rng(seed)
    shares = np.array([p[0] for p in POPULATIONS.values()])
    sizes = rng.multinomial(n, shares / shares.sum())
    blocks = []
    for pop, size in zip(POPULATIONS.values(), sizes):
        fsc, ssc, cd45, cd123, hladr, cd125, via = pop[1:]
        if cd125 is None:  # blasts: a CD125+ share in the stained tube, none in the control
            positive = rng.random(size) < (cd125_pos_share if role == "stained" else 0.0)
            cd125 = np.where(positive, 3000.0, 30.0)
        columns = [fsc, 0.0, ssc, cd45, cd123, hladr, cd125, via]
        block = np.column_stack([np.broadcast_to(np.asarray(c, dtype=float), size) for c in columns])
        block *= rng.lognormal(0, 0.25, block.shape)
        block[:, 1] = block[:, 0] * rng.normal(0.8, 0.02, size)  # FSC-H tracks FSC-A for singlets
        blocks.append(block)
    raw = np.vstack(blocks)
    raw[: n // 20, 1] *= 0.6  # doublets: high FSC-A for their FSC-H
    raw[:, 3:8] += rng.normal(0, 60, (n, 5))  # spread of compensated fluorescence around zero
    raw = raw[rng.permutation(n)]
    raw = np.column_stack([raw, np.sort(rng.uniform(0, 300, n))])
    scales = {c: FakeScale(c, "linear" if c in ("FSC-A", "FSC-H", "SSC-A", "Time") else "arcsinh", {})
              for c in CHANNELS}
    data = np.column_stack([scales[c].forward(raw[:, i]) for i, c in enumerate(CHANNELS)])
    time_qc, kept_events = fake_time_qc(data, n)
    steps = gate_steps(data, kept_events, threshold)
    return TubeAnalysis(role=role, fcs=None, channels=list(CHANNELS), markers=dict(MARKERS), data=data,
                        scales=scales, steps=steps, time_qc=time_qc, compensation="file")


def fake_time_qc(data, n):
    edges = np.linspace(0, 300, 31)
    time = data[:, -1]
    bins = np.clip(np.digitize(time, edges) - 1, 0, 29)
    kept = np.ones(30, dtype=bool)
    kept[12:14] = False  # a clog
    signal = {c: np.array([np.median(data[bins == b, i]) for b in range(30)])
              for i, c in enumerate(CHANNELS[3:8], start=3)}
    rate = np.bincount(bins, minlength=30) / 10.0
    kept_events = kept[bins]
    return TimeQC(edges, rate, signal, kept, float(1 - kept_events.mean())), kept_events


def dims(*ids, **bounds):
    return [Dimension(i, range_min=bounds.get(f"{i}_min"), range_max=bounds.get(f"{i}_max")) for i in ids]


def gate_steps(data, time_mask, threshold):
    """The hierarchy, each mask = FlowKit's own gate.apply on the events and the parent's mask."""
    frame = pd.DataFrame(data, columns=CHANNELS)
    t = {"CD125": np.arcsinh(300 / COFACTOR) if threshold is None else threshold}
    gates = [
        ("margins", "time_qc", RectangleGate("margins", [Dimension("FSC-A", range_max=262143)]), "FSC-A", None),
        ("cells", "margins", PolygonGate("cells", dims("FSC-A", "SSC-A"),
                                         [(25e3, 2e3), (250e3, 2e3), (250e3, 250e3), (25e3, 250e3)]),
         "FSC-A", "SSC-A"),
        ("singlets", "cells", PolygonGate("singlets", dims("FSC-A", "FSC-H"),
                                          [(0, 0), (250e3, 170e3), (250e3, 230e3), (0, 30e3)]), "FSC-A", "FSC-H"),
        ("viable", "singlets", RectangleGate("viable", [Dimension("APC-Cy7-A", range_max=np.arcsinh(3000 / 150))]),
         "APC-Cy7-A", "SSC-A"),
        ("leukocytes", "viable", RectangleGate("leukocytes", [Dimension("V500-A", range_min=np.arcsinh(300 / 150))]),
         "V500-A", None),
        ("blast_region", "leukocytes", PolygonGate("blast_region", dims("V500-A", "SSC-A"),
                                                   [(2.0, 5e3), (3.4, 5e3), (3.6, 70e3), (2.0, 70e3)]),
         "V500-A", "SSC-A"),
        ("basophils", "blast_region", PolygonGate("basophils", dims("APC-A", "BV421-A"),
                                                  [(3.5, -2), (7, -2), (7, 2.0), (3.5, 2.0)]), "APC-A", "BV421-A"),
        ("blasts", "blast_region", BooleanGate("blasts", "not", [{"ref": "basophils", "path": (), "complement": True}]),
         "APC-A", "BV421-A"),
        ("cd125_pos", "blasts", RectangleGate("cd125_pos", [Dimension("PE-A", range_min=t["CD125"])]), "PE-A", None),
    ]
    masks = {"time_qc": time_mask}
    steps = [GateStep("time_qc", None, None, "Time", None, time_mask, len(time_mask), note="2 bins removed")]
    for name, parent, gate, x, y in gates:
        if name == "blasts":
            inside = ~masks["basophils"]
        else:
            inside = gate.apply(frame)
        masks[name] = masks[parent] & inside
        steps.append(GateStep(name, parent, gate, x, y, masks[name], int(masks[parent].sum()),
                              note=f"{name} found by the fake", exclusion=name == "basophils"))
    return steps


def fake_sample(sample_id="P001", n=20000, criterion="MET"):
    threshold_value = float(np.arcsinh(300 / COFACTOR))
    stained = fake_tube("stained", n=n, seed=1)
    control = fake_tube("control", n=n, seed=2)
    threshold = Threshold("control_percentile", threshold_value, 300.0, 99.5, control.step("blasts").count,
                          "99.5th percentile of the control's blasts")
    blasts, positive = stained.step("blasts").count, stained.step("cd125_pos").count
    result = fake_result(sample_id=sample_id, criterion=criterion,
                         cd125_pos_fraction=positive / blasts, ci_low=positive / blasts - 0.02,
                         ci_high=positive / blasts + 0.02, blast_events=blasts, cd125_pos_events=positive)
    return stained, control, threshold, result


def fake_result(fcs_path="P.fcs", **fields):
    """A SampleResult with the given fields (a FAILED one unless told otherwise)."""
    base = results.header("P001", {"fcs": {"path": fcs_path, "sha256": None}, "control": None,
                                   "compensation": None}, {}, {"positive_fraction": 0.5}, {})
    return base.replace(**fields)


@pytest.fixture(scope="module")
def sample():
    return fake_sample()


def test_plot_sample_writes_one_png_per_tube(sample, tmp_path):
    paths = plots.plot_sample(*sample, tmp_path)
    assert [p.name for p in paths] == ["qc.png", "qc_key_blast_gate.png", "qc_key_cd125.png", "qc_control.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_control_page_drawn_beside_is_the_page_drawn_in_turn(sample, tmp_path, monkeypatch):
    beside = plots.plot_sample(*sample, tmp_path / "beside", formats=("png", "svg"))
    monkeypatch.setattr(processes, "beside", lambda call: None)  # no fork: both pages here
    in_turn = plots.plot_sample(*sample, tmp_path / "turn", formats=("png", "svg"))
    assert [p.name for p in beside] == [p.name for p in in_turn] == ["qc.png", "qc.svg", "qc_key_blast_gate.png", "qc_key_cd125.png",
                                                                     "qc_control.png", "qc_control.svg"]
    for a, b in zip(beside, in_turn):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_a_failed_child_is_reported_and_its_page_drawn_here(sample, tmp_path, monkeypatch):
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 1})  # as on a 2-CPU machine
    done = processes.beside(lambda: (tmp_path / "child.txt").write_text("drawn"))
    assert done() is True and (tmp_path / "child.txt").read_text() == "drawn"
    assert processes.beside(lambda: 1 / 0)() is False
    real = processes.beside
    monkeypatch.setattr(processes, "beside", lambda call: real(lambda: 1 / 0))  # the control's child fails
    paths = plots.plot_sample(*sample, tmp_path / "out")
    assert [p.name for p in paths] == ["qc.png", "qc_key_blast_gate.png", "qc_key_cd125.png", "qc_control.png"] and paths[-1].is_file()


@pytest.mark.slow
def test_plot_sample_is_deterministic_in_every_format(sample, tmp_path):
    first = plots.plot_sample(*sample, tmp_path / "a", formats=("png", "svg", "pdf"))
    second = plots.plot_sample(*sample, tmp_path / "b", formats=("svg", "pdf"))
    assert sorted(p.name for p in first) == sorted(p.name for p in second)
    assert len(first) == 8  # each tube's page in three formats, the two key panels as PNG
    for a in first:
        assert a.read_bytes() == (tmp_path / "b" / a.name).read_bytes(), a.name
    assert b"Date" not in (tmp_path / "a" / "qc.svg").read_bytes()
    assert b"CreationDate" not in (tmp_path / "a" / "qc.pdf").read_bytes()


def test_unknown_format_is_refused(sample, tmp_path):
    with pytest.raises(ValueError, match="jpeg"):
        plots.plot_sample(*sample, tmp_path, formats=("png", "jpeg"))


def test_svg_shows_every_gate_with_its_counts(sample, tmp_path):
    stained = sample[0]
    plots.plot_sample(*sample, tmp_path, formats=("svg",))
    svg = (tmp_path / "qc.svg").read_text()
    # svg.fonttype "path" draws glyphs, so look for the titles in the <!-- text --> comments
    for name in ("cells", "singlets", "viable", "leukocytes", "blast_region", "blasts", "cd125_pos"):
        step = stained.step(name)
        assert f"{name}: {step.parent} {step.parent_count:,}" in svg, name
        assert f"{step.count:,} ({step.percent_of_parent:.1f}%)" in svg, name
    assert f"basophils {stained.step('basophils').count:,}" in svg
    assert "How each gate was found" in svg and "blast_region: blast_region found by the fake" in svg
    assert "MET" in svg and "P001" in svg


def test_polygon_outline_is_the_gate_vertices(sample):
    from matplotlib.figure import Figure

    stained = sample[0]
    gate = stained.step("blast_region").gate
    ax = Figure().add_subplot()
    gate_outlines.draw_gate(ax, gate, "V500-A", "SSC-A", "black", "blast_region")
    np.testing.assert_allclose(ax.patches[0].get_xy()[:-1], np.asarray(gate.vertices))
    # the same gate on swapped axes is drawn transposed; on unrelated axes not at all
    ax2 = Figure().add_subplot()
    gate_outlines.draw_gate(ax2, gate, "SSC-A", "V500-A", "black", None)
    np.testing.assert_allclose(ax2.patches[0].get_xy()[:-1], np.asarray(gate.vertices)[:, ::-1])
    ax3 = Figure().add_subplot()
    gate_outlines.draw_gate(ax3, gate, "APC-A", "BV421-A", "black", None)
    gate_outlines.draw_gate(ax3, stained.step("blasts").gate, "APC-A", "BV421-A", "black", None)
    assert len(ax3.patches) == 0


def test_open_rectangle_reaches_the_plot_edge():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ax.set_xlim(-1, 9)
    ax.set_ylim(0, 100)
    gate_outlines.draw_gate(ax, RectangleGate("g", [Dimension("x", range_min=2.5)]), "x", "y", "black", None)
    corners = ax.patches[0].get_xy()[:-1]
    assert corners[:, 0].min() == 2.5 and corners[:, 0].max() == 9
    assert corners[:, 1].min() == 0 and corners[:, 1].max() == 100


def test_ellipse_outline_lies_at_the_mahalanobis_distance():
    from matplotlib.figure import Figure

    cov = np.array([[4.0, 1.0], [1.0, 2.0]])
    gate = flowkit.gates.EllipsoidGate("e", dims("x", "y"), [1.0, 2.0], cov.tolist(), 9.0)
    ax = Figure().add_subplot()
    gate_outlines.draw_gate(ax, gate, "x", "y", "black", None)
    offsets = ax.patches[0].get_xy() - [1.0, 2.0]
    distance2 = np.einsum("ij,jk,ik->i", offsets, np.linalg.inv(cov), offsets)
    np.testing.assert_allclose(distance2, 9.0, rtol=1e-9)


def test_density_counts_every_event_piling_off_scale_ones_on_the_edge():
    x = np.array([-5.0, 0.1, 0.1, 0.999, 7.0])
    y = np.array([0.5, 0.5, 0.5, 0.5, 0.5])
    counts = tube_view.histogram2d(x, y, (0.0, 1.0), (0.0, 1.0))
    assert counts.sum() == 5
    row = counts[tube_view.BINS // 2]
    assert row[0] == 1 and row[-1] == 2 and row[int(0.1 * tube_view.BINS)] == 2


def drawn_tick_labels(ax, which):
    """(positions, texts) of the tick labels _set_ticks drew on an Axes that holds nothing else."""
    index = 0 if which == "x" else 1
    texts = sorted(ax.texts, key=lambda t: t.get_position()[index])
    return np.array([t.get_position()[index] for t in texts]), [t.get_text() for t in texts]


def test_fluorescence_ticks_are_raw_decades_at_forward_positions():
    from matplotlib.figure import Figure

    scale = FakeScale("PE-A", "arcsinh", {})
    limits = (float(scale.forward(-2000)), float(scale.forward(3e5)))
    ax = Figure().add_subplot()
    ticks.raw_ticks(ax, "x", scale, limits)
    positions, labels = drawn_tick_labels(ax, "x")
    # plain text with Unicode superscripts: no mathtext anywhere in the figures
    assert "0" in labels and "10⁵" in labels and "−10³" in labels
    np.testing.assert_allclose(positions[labels.index("10⁴")], np.arcsinh(1e4 / COFACTOR))
    # 10^1 lands almost on 0 on an arcsinh scale: it is dropped rather than overprinted
    assert "10¹" not in labels
    assert np.min(np.diff(positions)) >= 0.06 * (limits[1] - limits[0])


def test_scatter_ticks_read_in_thousands():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ticks.raw_ticks(ax, "y", FakeScale("SSC-A", "linear", {}), (0.0, 262144.0))
    _, labels = drawn_tick_labels(ax, "y")
    assert "100K" in labels and "0" in labels


def fake_fcs(amplification, datatype="I"):
    """The part of an FCSData the plots read: SSC-A with the given $PnE, every other channel linear."""
    from types import SimpleNamespace

    from cd125gate.io.fcs import Channel

    channels = [Channel(i, name, None, 262144.0, 32, amplification if name == "SSC-A" else (0.0, 0.0), None)
                for i, name in enumerate(CHANNELS, start=1)]
    return SimpleNamespace(channels=channels, keywords={}, datatype=datatype)


def test_only_a_decoded_log_amplified_linear_channel_is_drawn_on_a_log_axis():
    linear = FakeScale("SSC-A", "linear", {})
    shown = tube_view.display_scale(fake_fcs((4.0, 1.0)), "SSC-A", linear)
    assert shown.kind == "log" and shown.floor == 1.0  # channel 0 of $PnE=4,1 decodes to 1
    np.testing.assert_allclose(shown.forward(np.array([0.0, 1.0, 10.0, 1e4])), [0.0, 0.0, 1.0, 4.0])
    assert tube_view.display_scale(fake_fcs((0.0, 0.0)), "SSC-A", linear) is linear
    assert tube_view.display_scale(fake_fcs((4.0, 1.0)), "FSC-A", FakeScale("FSC-A", "linear", {})).kind == "linear"
    # float data are linear whatever $PnE says (the reader ignores it); fluorescence keeps its scale
    assert tube_view.display_scale(fake_fcs((4.0, 1.0), datatype="F"), "SSC-A", linear) is linear
    arcsinh = FakeScale("SSC-A", "arcsinh", {})
    assert tube_view.display_scale(fake_fcs((4.0, 1.0)), "SSC-A", arcsinh) is arcsinh
    assert tube_view.display_scale(None, "SSC-A", linear) is linear


def test_log_amplified_scatter_is_drawn_on_a_log_axis_and_the_gating_data_stay_linear(sample):
    """Issue 17: SSC log-amplified by the instrument reads in decades; FSC and the events themselves do not change."""
    import dataclasses

    from matplotlib.figure import Figure

    stained = sample[0]
    tube = dataclasses.replace(stained, fcs=fake_fcs((4.0, 1.0)))
    before = tube.column("SSC-A").copy()
    ctx, plain = tube_view.TubeView(tube), tube_view.TubeView(stained)
    ticks = ctx.ticks("SSC-A")
    assert ticks.labels and all(label.startswith("10") for label in ticks.labels)
    exponents = [int(label[2:].translate(str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789"))) for label in ticks.labels]
    np.testing.assert_allclose(ticks.major, exponents)  # 10ⁿ at log10 = n
    assert len(ticks.minor)  # 2..9 between the decades, as the fluorescence axes
    lo, hi = ctx.limits("SSC-A")
    assert 3 < lo < hi < 6  # log10 of the fake's 2e3..3e5
    np.testing.assert_array_equal(ctx.bins("SSC-A"), tube_view.bin_index(np.log10(before), (lo, hi)))
    # the linear channel is drawn as before
    for channel in ("FSC-A", "V500-A"):
        assert ctx.scales[channel] is tube.scales[channel] and ctx.limits(channel) == plain.limits(channel)
        assert ctx.ticks(channel).labels == plain.ticks(channel).labels
        np.testing.assert_array_equal(ctx.ticks(channel).major, plain.ticks(channel).major)
    np.testing.assert_array_equal(tube.column("SSC-A"), before)
    # the gate is drawn through the same mapping: blast_region's SSC-A edges at log10 of its vertices
    fig = Figure()
    qc_panels.gate_panel(fig, fig.add_gridspec(1, 1)[0, 0], ctx, ["blast_region"])
    outline = fig.axes[0].patches[0].get_xy()
    np.testing.assert_allclose([outline[:, 1].min(), outline[:, 1].max()], np.log10([5e3, 70e3]))
    np.testing.assert_allclose([outline[:, 0].min(), outline[:, 0].max()], [2.0, 3.6])
    # a rectangle's bound too (open bounds at the plot edges); then the whole page draws
    ax = Figure().add_subplot()
    ctx.axis(ax, "x", "FSC-A")
    ctx.axis(ax, "y", "SSC-A")
    gate_outlines.draw_gate(ax, RectangleGate("r", [Dimension("SSC-A", range_min=1e4)]), "FSC-A", "SSC-A", "black", None, ctx)
    np.testing.assert_allclose(ax.patches[0].get_xy()[:4, 1], [4.0, 4.0, hi, hi])
    control = dataclasses.replace(sample[1], fcs=fake_fcs((0.0, 0.0)))  # the stained file decides both pages
    contexts = {id(tube): tube_view.TubeView(tube, tube), id(control): tube_view.TubeView(control, tube)}
    assert contexts[id(control)].scales["SSC-A"].kind == "log"
    drawn = plots._tube_figure(control, tube, control, sample[2], sample[3], contexts)
    drawn.canvas.draw()


def test_failure_card(tmp_path):
    result = fake_result("runs/P009.fcs", sample_id="P009", reasons=("only 120 events after time QC",))
    first = plots.plot_failure(result, tmp_path / "a", formats=("png", "svg"))
    plots.plot_failure(result, tmp_path / "b", formats=("png", "svg"))
    assert [p.name for p in first] == ["qc.png", "qc.svg"]
    svg = first[1].read_text()
    assert "only 120 events after time QC" in svg and "FAILED" in svg and "runs/P009.fcs" in svg
    assert first[0].read_bytes() == (tmp_path / "b" / "qc.png").read_bytes()


def test_tube_without_viability_or_control_still_plots(tmp_path):
    stained, _, threshold, result = fake_sample()
    stained.steps = [replace(s, parent="singlets") if s.parent == "viable" else s
                     for s in stained.steps if s.name != "viable"]
    paths = plots.plot_sample(stained, None, threshold, result, tmp_path, formats=("svg",))
    assert [p.name for p in paths] == ["qc.png", "qc.svg", "qc_key_blast_gate.png", "qc_key_cd125.png"]
    svg = paths[1].read_text()
    assert "viable:" not in svg and "leukocytes: singlets" in svg
    assert "control blasts" not in svg


def test_extra_populations_and_time_windows_land_in_the_right_panels(tmp_path):
    """As the real gating does: a lymphocytes reference on CD45/SSC-A, time windows as exclusions."""
    stained, control, threshold, result = fake_sample()
    leuko = stained.step("leukocytes")
    lymph_gate = PolygonGate("lymphocytes", dims("V500-A", "SSC-A"), [(4.5, 0), (6, 0), (6, 4e4), (4.5, 4e4)])
    lymph_mask = leuko.mask & lymph_gate.apply(pd.DataFrame(stained.data, columns=CHANNELS))
    stained.steps.insert(7, GateStep("lymphocytes", "leukocytes", lymph_gate, "V500-A", "SSC-A", lymph_mask,
                                     leuko.count, note="CD45-bright"))
    window = RectangleGate("time_anomaly_1", [Dimension("Time", range_min=120, range_max=140)])
    stained.steps.insert(0, GateStep("time_anomaly_1", None, window, "Time", None, ~stained.step("time_qc").mask,
                                     len(lymph_mask), exclusion=True))
    paths = plots.plot_sample(stained, None, threshold, result, tmp_path, formats=("svg",))
    svg = paths[1].read_text()
    assert f"lymphocytes: leukocytes {leuko.count:,} → {int(lymph_mask.sum()):,}" in svg
    assert "time_anomaly_1 " not in svg  # not drawn as an excluded blast population


def test_minor_ticks_mark_every_in_range_multiple_of_a_decade():
    from matplotlib.figure import Figure
    from matplotlib.markers import TICKDOWN

    scale = FakeScale("PE-A", "arcsinh", {})
    limits = (float(scale.forward(-2000)), float(scale.forward(3e5)))
    ax = Figure().add_subplot()
    ticks.raw_ticks(ax, "x", scale, limits)
    marks = [line for line in ax.lines if line.get_marker() == TICKDOWN and line.get_markersize() == ticks.MINOR_TICK]
    assert len(marks) == 1
    raw = [s * m * 10.0**d for d in range(1, 7) for m in range(2, 10) for s in (-1, 1)]
    expected = np.sort([p for p in np.arcsinh(np.array(raw) / COFACTOR) if limits[0] <= p <= limits[1]])
    np.testing.assert_allclose(np.sort(marks[0].get_xdata()), expected)


# Text that mathtext cannot parse (a double superscript): had it been parsed, savefig would raise.
MATH = "$x^^2$"


@pytest.mark.slow
def test_user_text_reaches_the_sample_figure_as_plain_text(tmp_path):
    stained, control, threshold, result = fake_sample(sample_id=f"P{MATH}1")
    for tube in (stained, control):
        tube.markers[f"via{MATH}"] = tube.markers.pop("viability")  # a $PnS read from the file
        tube.flags.append(f"flag {MATH}")
        tube.steps = [replace(s, note=f"note {MATH}") if s.name == "cells" else s for s in tube.steps]
    result = result.replace(reasons=(f"reason {MATH}",))
    paths = plots.plot_sample(stained, control, threshold, result, tmp_path / f"out{MATH}", formats=("svg",))
    assert [p.name for p in paths] == ["qc.png", "qc.svg", "qc_key_blast_gate.png", "qc_key_cd125.png", "qc_control.png", "qc_control.svg"]
    svg = paths[1].read_text()
    # printed verbatim (svg.fonttype "path" keeps each text in a comment)
    for text in (f"P{MATH}1", f"via{MATH} (APC-Cy7-A)", f"reason {MATH}", f"flag {MATH}", f"note {MATH}"):
        assert text in svg, text


def test_user_text_reaches_the_failure_figure_as_plain_text(tmp_path):
    result = fake_result(f"runs/{MATH}/P.fcs", sample_id=f"P{MATH}", reasons=(f"channel {MATH} missing",),
                         warnings=(f"warning {MATH}",))
    paths = plots.plot_failure(result, tmp_path, formats=("png", "svg"))
    svg = paths[1].read_text()
    for text in (f"P{MATH}", f"channel {MATH} missing", f"warning {MATH}", f"runs/{MATH}/P.fcs"):
        assert text in svg, text


def test_light_gates_are_drawn_as_their_flowkit_originals(sample):
    """The plots read gates by attribute, so cd125gate.analysis.gating.gates values draw the same outlines."""
    from matplotlib.figure import Figure

    from cd125gate.analysis.gating.gates import from_flowkit

    stained = sample[0]
    for name in ("blast_region", "viable", "cells"):
        step = stained.step(name)
        x, y = qc_panels._panel_axes(tube_view.TubeView(stained), [step])
        outlines = []
        for gate in (step.gate, from_flowkit(step.gate)):
            ax = Figure().add_subplot()
            ax.set_xlim(-1, 300e3)
            ax.set_ylim(-1, 300e3)
            gate_outlines.draw_gate(ax, gate, x, y, "black", name)
            outlines.append(ax.patches[0].get_xy())
        np.testing.assert_array_equal(*outlines)
    ax = Figure().add_subplot()
    gate_outlines.draw_gate(ax, from_flowkit(stained.step("blasts").gate), "APC-A", "BV421-A", "black", None)
    assert len(ax.patches) == 0  # a BooleanGate has no outline


# --- drawing at raster speed: hand-placed ticks, own PNG encoder ------------------------------------


def drawn_figure(ax):
    """The renderer after drawing ``ax``'s figure (window extents are then final)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(ax.figure)
    canvas.draw()
    return canvas.get_renderer()


def test_ticks_are_plain_artists_outside_the_axes():
    """No matplotlib Tick objects: one marker line per tick size, each label one Text below/left of its mark."""
    from matplotlib.figure import Figure

    scale = FakeScale("PE-A", "arcsinh", {})
    limits = (float(scale.forward(-2000)), float(scale.forward(3e5)))
    fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
    ax = fig.add_subplot()
    drawn = ticks.raw_ticks(ax, "x", scale, limits)
    assert ax.get_xlim() == limits and ax.xaxis.get_major_ticks() == [] and ax.xaxis.get_minor_ticks() == []
    major = [line for line in ax.lines if line.get_markersize() == ticks.MAJOR_TICK]
    assert len(major) == 1
    positions, labels = drawn_tick_labels(ax, "x")
    np.testing.assert_allclose(major[0].get_xdata(), positions)
    np.testing.assert_allclose(positions, drawn.major)
    assert labels == list(drawn.labels)
    renderer = drawn_figure(ax)
    frame = ax.get_window_extent(renderer)
    for text in ax.texts:
        box = text.get_window_extent(renderer)
        assert box.y1 < frame.y0  # under the axes, clear of the tick marks
        centre = ax.transData.transform((text.get_position()[0], 0))[0]
        assert abs((box.x0 + box.x1) / 2 - centre) < 1  # centred on its tick


@pytest.mark.parametrize("scale", [FakeScale("SSC-A", "linear", {}), FakeScale("PE-A", "arcsinh", {})])
def test_axis_titles_clear_their_tick_labels(scale):
    """The titles are placed from an estimate of the labels' size, never by measuring them: check it holds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
    ax = fig.add_subplot()
    limits = (0.0, 262144.0) if scale.kind == "linear" else (float(scale.forward(-3e4)), float(scale.forward(3e5)))
    y_ticks = ticks.raw_ticks(ax, "y", scale, limits)
    x_ticks = ticks.raw_ticks(ax, "x", scale, limits)
    ticks.axis_label(ax, "y", "SSC-A title", y_ticks)
    ticks.axis_label(ax, "x", "x title", x_ticks)
    renderer = drawn_figure(ax)
    *tick_texts, y_title, x_title = ax.texts
    y_labels = [t.get_window_extent(renderer) for t in tick_texts if t.get_horizontalalignment() == "right"]
    x_labels = [t.get_window_extent(renderer) for t in tick_texts if t.get_horizontalalignment() == "center"]
    assert len(y_labels) == len(y_ticks.labels) >= 3 and len(x_labels) == len(x_ticks.labels) >= 3
    assert y_title.get_window_extent(renderer).x1 < min(b.x0 for b in y_labels)
    assert x_title.get_window_extent(renderer).y1 < min(b.y0 for b in x_labels)
    # ...and not far off either: a title stays within 12 points of its labels
    assert min(b.x0 for b in y_labels) - y_title.get_window_extent(renderer).x1 < 12 * raster.DPI / 72


def test_png_bytes_decode_to_the_pixels():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    image = Image.open(io.BytesIO(raster.png_bytes(rgba, 100, {"Software": None, "Title": "QC $x$"})))
    assert image.mode == "RGB" and image.size == (53, 37)
    np.testing.assert_array_equal(np.asarray(image), rgba[..., :3])
    assert image.info["Title"] == "QC $x$" and "Software" not in image.info
    assert image.info["dpi"] == pytest.approx((100, 100), abs=0.01)
    rgba[3, 4, 3] = 10  # any transparency: the alpha channel is kept
    image = Image.open(io.BytesIO(raster.png_bytes(rgba, 100)))
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(image), rgba)


def test_saved_png_is_the_rendered_page(sample, tmp_path):
    """savefig(format="png") on a QC figure goes through raster.png_bytes and holds exactly the Agg page."""
    import io

    from PIL import Image

    stained, control, threshold, result = sample
    paths = plots.plot_sample(*sample, tmp_path)
    fig = plots._tube_figure(stained, stained, control, threshold, result)
    buffer = io.BytesIO()
    with raster.plain_text():  # as the pages are saved: unhinted text
        fig.savefig(buffer, format="png", dpi=raster.DPI)
    assert buffer.getvalue() == paths[0].read_bytes()
    page = np.asarray(fig.canvas.buffer_rgba())
    decoded = np.asarray(Image.open(paths[0]))
    assert decoded.shape == page.shape[:2] + (3,) and (page[..., 3] == 255).all()
    np.testing.assert_array_equal(decoded, page[..., :3])


def test_time_panel_draws_each_bin_at_its_rate(sample):
    from matplotlib.figure import Figure

    stained = sample[0]
    qc = stained.time_qc
    fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
    qc_panels.time_panel(fig, fig.add_gridspec(1, 1)[0, 0], tube_view.TubeView(stained))
    rate_ax, signal_ax = fig.axes
    line = next(line for line in rate_ax.lines if line.get_linestyle() == "-")
    steps = line.get_xydata().reshape(-1, 2, 2)  # one (left, right) pair of points per bin
    np.testing.assert_allclose(steps[:, 0, 0], qc.bin_edges[:-1])
    np.testing.assert_allclose(steps[:, 1, 0], qc.bin_edges[1:])
    np.testing.assert_allclose(steps[:, 0, 1], qc.rate)
    np.testing.assert_allclose(steps[:, 1, 1], qc.rate)
    low, high = rate_ax.get_ylim()
    assert low < np.min(qc.rate) and high > np.max(qc.rate)
    assert rate_ax.get_xlim() == signal_ax.get_xlim() == (qc.bin_edges[0], qc.bin_edges[-1])
    assert len([line for line in signal_ax.lines if line.get_linestyle() == "-"]) == len(qc.signal)


def test_cd125_panel_shows_both_tubes_whole_with_the_threshold(sample):
    from matplotlib.figure import Figure

    stained, control, threshold, result = sample
    contexts = [tube_view.TubeView(stained), tube_view.TubeView(control)]
    fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
    qc_panels.cd125_panel(fig, fig.add_gridspec(1, 1)[0, 0], contexts[0], contexts, threshold, result)
    ax = fig.axes[0]
    steps = [a for a in ax.get_children() if type(a).__name__ == "StepPatch"]
    assert len(steps) == 2
    highest = max(float(np.max(s.get_data().values)) for s in steps)
    assert ax.get_ylim()[0] == 0 and highest < ax.get_ylim()[1] < 1.1 * highest
    for s in steps:  # each histogram is the percentage of that tube's blasts
        assert np.sum(s.get_data().values) == pytest.approx(100.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"stained blasts ({stained.step('blasts').count:,})",
                      f"control blasts ({control.step('blasts').count:,})",
                      f"threshold {threshold.value_raw:,.4g} raw"]


def test_cd125_panel_lists_the_internal_controls(sample):
    from matplotlib.figure import Figure

    stained, control, threshold, result = sample
    controls = {"eosinophils": {"role": "positive", "events": 584, "cd125_pos_share": 0.97, "median_above_cut": 1.8},
                "basophils": {"role": "positive", "events": 0, "cd125_pos_share": None, "median_above_cut": None},
                "lymphocytes": {"role": "negative", "events": 2333, "cd125_pos_share": 0.004,
                                "median_above_cut": -0.7}}
    contexts = [tube_view.TubeView(stained), tube_view.TubeView(control)]
    fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
    qc_panels.cd125_panel(fig, fig.add_gridspec(1, 1)[0, 0], contexts[0], contexts, threshold,
                       result.replace(internal_controls=controls))
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert "internal controls, fitted events:\neosinophils (+): 97% above\nlymphocytes (-): 0% above" in text
    assert "basophils" not in text  # none fitted: nothing to show


@pytest.mark.parametrize("cmap", ["turbo", "Greys"])
def test_density_colours_are_lognorm_through_the_colormap(cmap):
    """The table look-up gives imshow's colours for LogNorm(1, max) with empty bins white."""
    import matplotlib
    from matplotlib.colors import LogNorm

    rng = np.random.default_rng(3)
    colours = matplotlib.colormaps[cmap]
    if cmap == "Greys":
        colours = matplotlib.colors.ListedColormap(colours(np.linspace(0.3, 1.0, 256)))
    colours = colours.with_extremes(bad="white")
    for top in (1, 2, 17, 256, 123457):
        counts = rng.integers(0, top + 1, (tube_view.BINS, tube_view.BINS))
        counts[0, :2] = top, 0
        norm = LogNorm(vmin=1, vmax=max(int(counts.max()), 2))
        expected = colours(norm(np.ma.masked_equal(counts, 0)), bytes=True)
        np.testing.assert_array_equal(tube_view.density_rgba(counts, cmap), expected)


def test_density_counts_of_a_mask_are_the_counts_of_the_selected_events():
    rng = np.random.default_rng(5)
    ix, iy = rng.integers(0, tube_view.BINS, (2, 5000)).astype(np.uint8)
    mask = rng.random(5000) < 0.3
    counts = tube_view.bin_counts(ix, iy, mask)
    np.testing.assert_array_equal(counts, tube_view.bin_counts(ix[mask], iy[mask]))
    assert counts.sum() == mask.sum() and counts[iy[mask][0], ix[mask][0]] >= 1
    corner = tube_view.bin_counts(np.array([tube_view.BINS - 1], np.uint8), np.array([tube_view.BINS - 1], np.uint8))
    assert corner[-1, -1] == 1  # the last bin of the last row: no uint16 overflow


def test_bin_index_puts_nan_and_infinities_on_the_edges():
    values = np.array([np.nan, -np.inf, np.inf, -3.0, 0.0, 0.5, 0.9999, 1.0, 7.0])
    bins = tube_view.bin_index(values, (0.0, 1.0))
    assert bins.dtype == np.uint8
    assert bins.tolist() == [0, 0, tube_view.BINS - 1, 0, 0, tube_view.BINS // 2] + [tube_view.BINS - 1] * 3


def test_time_panel_without_signal_channels_or_rate_changes_still_draws(sample):
    """A flat event rate and no per-channel signal: limits still span the data, nothing divides by zero."""
    import dataclasses

    from matplotlib.figure import Figure

    stained = sample[0]
    qc = stained.time_qc
    flat = dataclasses.replace(qc, rate=np.full_like(qc.rate, 250.0), signal={})
    tube = dataclasses.replace(stained, time_qc=flat)
    fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
    qc_panels.time_panel(fig, fig.add_gridspec(1, 1)[0, 0], tube_view.TubeView(tube))
    rate_ax, signal_ax = fig.axes
    low, high = rate_ax.get_ylim()
    assert low < 250 < high and np.isfinite(signal_ax.get_ylim()).all()
    assert signal_ax.get_legend() is None
    drawn_figure(rate_ax)


def test_figures_share_a_renderer_within_a_thread_only(sample):
    """Text measurements are cached per renderer, so figures reuse one; another thread gets its own."""
    from concurrent.futures import ThreadPoolExecutor

    stained, control, threshold, result = sample

    def renderer():
        return plots._tube_figure(stained, stained, control, threshold, result).canvas.get_renderer()

    here = renderer()
    assert renderer() is here
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(renderer).result() is not here


def test_a_page_on_axes_made_ahead_is_the_page_made_from_nothing(sample):
    import io

    stained, control, threshold, result = sample

    def png():
        fig = plots._tube_figure(stained, stained, control, threshold, result)
        buffer = io.BytesIO()
        with raster.plain_text():
            fig.savefig(buffer, format="png", dpi=raster.DPI)
        return buffer.getvalue(), len(fig.axes)

    fresh, panels = png()
    plots.make_spare_axes(panels + 3)  # more than the page needs: the rest are dropped
    assert png() == (fresh, panels)
    plots.make_spare_axes(2)  # fewer: the page makes the others
    assert png() == (fresh, panels)
    assert not raster._SPARE_FIGURES["page"]
    raster._SPARE_FIGURES.clear()  # the key panels' Axes, not used here


def test_making_axes_ahead_stops_when_the_page_is_wanted():
    wanted_after = itertools.chain([False, False], itertools.repeat(True))
    plots.make_spare_axes(10, enough=lambda: next(wanted_after))
    fig, axes = raster._SPARE_FIGURES["page"].pop()
    assert len(axes) == 2 and fig.axes == axes
    assert not raster._SPARE_FIGURES.get(plots.KEY)  # none for the key panels either: the page is wanted now


def test_key_panels_are_the_pages_panels_on_figures_of_their_own(sample, tmp_path):
    """The blast gate and CD125 panels, drawn again beside the page: same Axes size, same titles, tight margins."""
    from PIL import Image

    stained, control, threshold, result = sample
    paths = plots.plot_sample(*sample, tmp_path)
    page = plots._tube_figure(stained, stained, control, threshold, result)
    page_axes = {ax.get_title(): ax.get_position().size * page.get_size_inches() for ax in page.axes}
    contexts = {id(t): tube_view.TubeView(t, stained) for t in (stained, control)}
    drawers = dict(plots._named_panels(stained, stained, control, threshold, result, contexts))
    titles = []
    for path, name in zip(paths[1:3], plots.KEY_PANELS):
        assert path.name == f"qc_key_{name}.png"
        key = plots._key_figure(drawers[name], contexts[id(stained)], plots._panel_inches(len(drawers)))
        (ax,) = key.axes
        titles.append(ax.get_title())
        np.testing.assert_allclose(ax.get_position().size * key.get_size_inches(), page_axes[ax.get_title()])
        lines = ax.get_title().count("\n") + 1
        width, height = ax.get_position().size * key.get_size_inches()
        expected = (int((plots.KEY_LEFT + width + plots.KEY_RIGHT) * raster.DPI),
                    int((plots.KEY_BOTTOM + height + plots.KEY_TOP + lines * plots.TITLE_LINE_INCHES) * raster.DPI))
        assert Image.open(path).size == expected
    assert titles[0].startswith("leukocytes: ") and "\nblast_region: " in titles[0]
    assert titles[1].startswith("cd125_pos: blasts")


def test_key_panels_on_axes_made_ahead_are_the_ones_made_from_nothing(sample, tmp_path, monkeypatch):
    fresh = plots.plot_sample(*sample, tmp_path / "fresh")
    plots.make_spare_axes(20)
    monkeypatch.setattr(processes, "beside", lambda call: None)  # no fork: both key panels drawn here
    ahead = plots.plot_sample(*sample, tmp_path / "ahead")
    assert not raster._SPARE_FIGURES[plots.KEY]  # both used
    assert [p.name for p in fresh] == [p.name for p in ahead]
    for a, b in zip(fresh, ahead):
        assert a.read_bytes() == b.read_bytes(), a.name
    raster._SPARE_FIGURES.clear()
