"""Light gates (cd125gate.analysis.gating.gates) and the FlowKit-free Gating-ML writer mean what FlowKit means."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flowkit import Dimension as FkDimension
from flowkit import gates as fk

from cd125gate.analysis.compensation import Compensation
from cd125gate.analysis.gating import gates, gatestep
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.analysis.transforms import Scale
from cd125gate.io import gatingml
from cd125gate.settings import load_settings

TEST_DATA = Path(__file__).parents[1] / "test_data"


def fk_dim(i, lo=None, hi=None, comp="uncompensated", xform=None):
    return FkDimension(i, compensation_ref=comp, transformation_ref=xform, range_min=lo, range_max=hi)


def random_events(rng, n=20000):
    """Events on a coarse grid (many exact ties with gate bounds and vertices) plus continuous ones."""
    grid = rng.integers(-4, 5, (n, 3)).astype(float) / 2
    smooth = rng.normal(0, 1.5, (n, 3))
    data = np.where(rng.random((n, 1)) < 0.5, grid, smooth)
    return pd.DataFrame(data, columns=["a", "b", "c"])


def same_membership(fk_gate, events):
    ours = gates.from_flowkit(fk_gate)
    expected = fk_gate.apply(events)
    got = ours.apply({c: events[c].to_numpy() for c in events.columns})
    assert got.dtype == bool and np.array_equal(got, expected), fk_gate.gate_name
    assert np.array_equal(ours.to_flowkit().apply(events), expected)
    assert gates.from_flowkit(ours.to_flowkit()) == ours
    return got


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rectangles_min_inclusive_max_exclusive_as_flowkit(seed):
    rng = np.random.default_rng(seed)
    events = random_events(rng)
    cases = [
        fk.RectangleGate("one_sided", [fk_dim("a", lo=0.5)]),
        fk.RectangleGate("upper", [fk_dim("b", hi=1.0)]),
        fk.RectangleGate("box", [fk_dim("a", lo=-1.0, hi=1.0), fk_dim("b", lo=-0.5, hi=1.5)]),
        fk.RectangleGate("box3", [fk_dim("a", lo=-1.0, hi=1.0), fk_dim("b", hi=0.0), fk_dim("c", lo=-2.0)]),
        fk.RectangleGate("outside", [fk_dim("a", lo=-1.0, hi=1.0)], use_complement=True),
    ]
    for gate in cases:
        same_membership(gate, events)
    # the conventions themselves, on the grid points that lie exactly on the bounds
    inside = gates.from_flowkit(cases[2]).apply(events)
    a, b = events["a"].to_numpy(), events["b"].to_numpy()
    assert inside[(a == -1.0) & (b == 0.0)].all() and not inside[(a == 1.0) & (b == 0.0)].any()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_polygons_decide_edges_and_vertices_as_flowkit(seed):
    rng = np.random.default_rng(seed)
    events = random_events(rng)
    square = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]  # grid points on its edges and corners
    bowtie = [(-2.0, -2.0), (2.0, 2.0), (2.0, -2.0), (-2.0, 2.0)]  # self-crossing
    star = [tuple(v) for v in rng.uniform(-3, 3, (9, 2))]
    for name, vertices in (("square", square), ("bowtie", bowtie), ("star", star)):
        same_membership(fk.PolygonGate(name, [fk_dim("a"), fk_dim("b")], vertices), events)
        same_membership(fk.PolygonGate(name + "_swapped", [fk_dim("b"), fk_dim("a")], vertices), events)
    same_membership(fk.PolygonGate("not_square", [fk_dim("a"), fk_dim("c")], square, use_complement=True), events)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_polygon_grid_decides_every_event_as_flowutils(seed):
    """The cell grid that spares most events the edge test answers exactly as flowutils does."""
    from flowutils.gating import points_in_polygon

    rng = np.random.default_rng(seed)
    n = gates.GRID_MIN_EVENTS * 2
    ticks = rng.integers(-12, 13, (n, 2)).astype(float) / 4  # ties with the vertices and edges below
    events = np.where(rng.random((n, 1)) < 0.5, ticks, rng.normal(0, 1.5, (n, 2)))
    events[:5] = np.nan
    events[5:10] = [np.inf, 0.0]
    events[10:15] = [0.0, -np.inf]
    x, y = events[:, 0].copy(), events[:, 1].copy()
    angles = np.sort(rng.uniform(0, 2 * np.pi, 200))
    polygons = {
        "square": [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)],
        "bowtie": [(-2.0, -2.0), (2.0, 2.0), (2.0, -2.0), (-2.0, 2.0)],
        "sliver": [(-2.0, -2.0), (2.0, 2.0), (2.0, 2.0 + 1e-7)],
        "star": [tuple(v) for v in rng.uniform(-3, 3, (int(rng.integers(3, 40)), 2))],
        "population": list(zip(np.cos(angles) * rng.uniform(0.5, 2, 200), np.sin(angles) * 1.3)),
    }
    for name, vertices in polygons.items():
        expected = points_in_polygon(np.array(vertices), events)
        grid = gates.PolygonGrid.of(vertices)
        assert np.array_equal(grid.membership(x, y), expected), name
        gate = gates.PolygonGate(name, [gates.Dimension("a"), gates.Dimension("b")], vertices)
        assert np.array_equal(gate.apply({"a": x, "b": y}), expected), name
        # A grid cut to where a few events lie decides the others too (its ring is near).
        few = gates.PolygonGrid.of(vertices, np.array([[-0.5, -0.25], [0.75, 0.5]]))
        assert np.array_equal(few.membership(x, y), expected), name
    # A polygon without area has no grid: flowutils decides every event.
    line = gates.PolygonGate("line", [gates.Dimension("a"), gates.Dimension("b")], [(0, 0), (1, 0), (2, 0)])
    assert gates.PolygonGrid.of(line.vertices) is None and line.near(x, y).all()
    assert np.array_equal(line.apply({"a": x, "b": y}), points_in_polygon(np.array(line.vertices), events))


def test_ellipsoids_as_flowkit():
    rng = np.random.default_rng(5)
    events = random_events(rng)
    cov = [[2.0, 0.6], [0.6, 1.0]]
    same_membership(fk.EllipsoidGate("e2", [fk_dim("a"), fk_dim("b")], [0.5, -0.5], cov, 2.0), events)
    cov3 = [[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.5]]
    same_membership(fk.EllipsoidGate("e3", [fk_dim("a"), fk_dim("b"), fk_dim("c")], [0, 0, 0], cov3, 4.0), events)


@pytest.mark.parametrize("kind, refs", [
    ("and", [("r1", False), ("r2", True)]),
    ("or", [("r1", True), ("r2", False), ("r3", True)]),
    ("not", [("r2", False)]),
    ("not", [("r3", True)]),
])
def test_boolean_gates_as_flowkit(kind, refs):
    rng = np.random.default_rng(6)
    members = {f"r{i}": rng.random(5000) < p for i, p in ((1, 0.3), (2, 0.6), (3, 0.5))}
    gate = fk.BooleanGate("b", kind, [{"ref": r, "path": ("root",), "complement": c} for r, c in refs])
    # FlowKit's apply looks the references up by (name, path)
    expected = gate.apply(pd.DataFrame({(r, "root"): m for r, m in members.items()}))
    ours = gates.from_flowkit(gate)
    assert np.array_equal(ours.apply(members), expected)
    assert gates.from_flowkit(ours.to_flowkit()) == ours


def test_invalid_gates_are_refused():
    with pytest.raises(ValueError, match="'not' takes exactly one"):
        gates.BooleanGate("b", "not", [gates.GateRef("x"), gates.GateRef("y")])
    with pytest.raises(ValueError, match="type must be"):
        gates.BooleanGate("b", "xor", [gates.GateRef("x"), gates.GateRef("y")])
    with pytest.raises(ValueError, match="2 dimensions"):
        gates.PolygonGate("p", [gates.Dimension("a")], [(0, 0), (1, 0), (1, 1)])
    with pytest.raises(ValueError, match="at least one dimension"):
        gates.RectangleGate("r", [])


def test_light_gates_are_hashable_values():
    d = gates.Dimension("FSC-A", range_min=1)
    assert d.min == 1.0 and isinstance(d.min, float) and d.max is None
    g = gates.PolygonGate("p", [d, gates.Dimension("SSC-A")], [[0, 0], [1, 0], [1, 1]])
    assert g == gates.PolygonGate("p", (d, gates.Dimension("SSC-A")), ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)))
    assert len({g, g}) == 1


# --- the gates of real analyses ----------------------------------------------------------------


def bundled_analyses():
    settings = load_settings()
    for stained in sorted(TEST_DATA.glob("*_stained.fcs")):
        control = stained.with_name(stained.name.replace("_stained", "_control"))
        analysis = analyze_sample(stained, control if control.exists() else None, settings)
        if analysis.stained is not None and analysis.stained.steps:
            yield stained, analysis


@pytest.fixture(scope="module")
def analyses():
    return list(bundled_analyses())


@pytest.mark.slow
def test_flowkits_gates_reproduce_every_mask_of_the_bundled_samples(analyses):
    """Each light gate of a real analysis, converted to FlowKit's class, takes the same events."""
    assert len(analyses) >= 10
    for path, analysis in analyses:
        for tube in (analysis.stained, analysis.control):
            if tube is None:
                continue
            done = {}
            for step in tube.steps:
                assert isinstance(step.gate, gates.GATE_TYPES), (path.name, step.name)
                theirs = step.gate.to_flowkit()
                parent = done[step.parent] if step.parent else np.ones(len(tube.data), dtype=bool)
                if isinstance(step.gate, gates.BooleanGate):
                    refs = {(r["ref"], "/".join(r["path"])): done[r["ref"]] for r in theirs.gate_refs}
                    inside = theirs.apply(pd.DataFrame(refs))
                else:
                    inside = theirs.apply(pd.DataFrame(gatestep.frame(step.gate, tube)))
                done[step.name] = inside & parent
                assert np.array_equal(done[step.name], step.mask), (path.name, tube.role, step.name)


@pytest.mark.slow
def test_light_writer_gives_flowkits_bytes_on_the_bundled_samples(analyses):
    for path, analysis in analyses:
        for tube in (analysis.stained, analysis.control):
            if tube is not None:
                assert gatingml.export(tube, analysis.compensation) == \
                    gatingml.export_flowkit(tube, analysis.compensation), (path.name, tube.role)


def test_flowkit_reproduces_the_counts_from_the_light_writers_gatingml(analyses, tmp_path):
    """FlowKit's own parse_gating_xml + gate_sample on our XML: every count of the analysis."""
    chosen = [(p, a) for p, a in analyses if p.name.startswith(("clog", "basophil_rich"))]
    assert len(chosen) == 2
    for path, analysis in chosen:
        xml = tmp_path / f"{path.stem}.xml"
        xml.write_bytes(gatingml.export(analysis.stained, analysis.compensation))
        light = analysis.stained.steps
        ours = {g["name"]: g["count"] for g in analysis.result.gates}
        assert any(isinstance(s.gate, gates.BooleanGate) for s in light) or "clog" not in path.name
        assert gatingml.reapply(xml, path) == ours


# --- the writer on its own ----------------------------------------------------------------------


def test_arcsinh_ellipsoid_and_awkward_names_survive_flowkits_parser(tmp_path):
    import flowkit

    name = 'PE<&>"x\'A'
    scale = Scale(name, "arcsinh", {"cofactor": 150.0, "T": 262144.0})
    comp = Compensation((name, "APC-A"), np.array([[1.0, 0.125], [0.03, 1.0]]), "file", "test")
    xid = "arcsinh_" + "PE____x_A"
    dims = [gates.Dimension(name, "spill", xid), gates.Dimension("FSC-A")]
    steps = [
        ("cells", None, gates.RectangleGate("cells", [gates.Dimension("FSC-A", range_min=1e4, range_max=2.5e5)])),
        ("blob", "cells", gates.EllipsoidGate("blob", dims, [0.5, 5e4], [[0.01, 3.0], [3.0, 1e8]], 3.5)),
        ("poly", "cells", gates.PolygonGate("poly", dims, [(0, 0), (1.5, 1e3), (0.25, 9e4)])),
        ("either", "cells", gates.BooleanGate("either", "or", [gates.GateRef("blob", ("root", "cells")),
                                                              gates.GateRef("poly", ("root", "cells"), True)])),
    ]
    xml = tmp_path / "g.xml"
    xml.write_bytes(gatingml.document(steps, [scale, Scale("FSC-A", "linear", {})], comp))
    strategy = flowkit.parse_gating_xml(str(xml))
    for gate_name, parent, ours in steps:
        path = ("root",) if parent is None else ("root", parent)
        parsed = gates.from_flowkit(strategy.get_gate(gate_name, gate_path=path))
        if isinstance(ours, gates.BooleanGate):
            assert [(r.ref, r.complement) for r in parsed.gate_refs] == [(r.ref, r.complement) for r in ours.gate_refs]
        else:
            assert parsed == ours, gate_name
    xform = strategy.get_transform(xid)
    assert (xform.param_t, xform.param_m, xform.param_a) == pytest.approx(
        (262144.0, np.arcsinh(262144.0 / 150.0) / np.log(10), 0.0), rel=1e-15)
    matrix = strategy.get_comp_matrix("spill")
    assert list(matrix.detectors) == [name, "APC-A"]
    assert np.array_equal(np.asarray(matrix.matrix, dtype=float), comp.matrix)


def test_a_name_xml_cannot_hold_and_a_lost_parent_are_refused():
    with pytest.raises(ValueError, match="XML cannot represent"):
        gatingml.document([("g", None, gates.RectangleGate("g", [gates.Dimension("A\x01", range_min=0)]))], [])
    with pytest.raises(ValueError, match="no path to the root"):
        gatingml.document([("g", "nowhere", gates.RectangleGate("g", [gates.Dimension("A", range_min=0)]))], [])
    with pytest.raises(ValueError, match="use_complement"):
        gatingml.document([("g", None, gates.RectangleGate("g", [gates.Dimension("A", range_min=0)], True))], [])


def test_gates_and_the_light_writer_do_not_import_flowkit():
    code = (
        "import sys, numpy as np\n"
        "from types import SimpleNamespace\n"
        "from cd125gate.analysis.gating import gates\n"
        "from cd125gate.io import gatingml\n"
        "from cd125gate.analysis.compensation import Compensation\n"
        "from cd125gate.analysis.model import GateStep\n"
        "from cd125gate.analysis.transforms import Scale\n"
        "g = gates.PolygonGate('p', [gates.Dimension('FSC-A'), gates.Dimension('SSC-A')], [(0, 0), (2, 0), (0, 2)])\n"
        "assert g.apply({'FSC-A': np.array([0.5, 3.0]), 'SSC-A': np.array([0.5, 0.1])}).tolist() == [True, False]\n"
        "tube = SimpleNamespace(scales={'FSC-A': Scale('FSC-A', 'linear', {})},\n"
        "                       steps=[GateStep('p', None, g, 'FSC-A', 'SSC-A', np.ones(2, bool), 2)])\n"
        "comp = Compensation(('PE-A',), np.eye(1), 'file', '')\n"
        "assert b'PolygonGate' in gatingml.export(tube, comp)\n"
        "assert 'flowkit' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr


def test_the_matrix_id_is_the_one_gating_uses():
    assert gatingml.COMP_ID == gatestep.COMP_ID


def test_cut_offs_are_placed_on_every_kth_event_of_a_large_tube_never_fewer_than_the_limit():
    values = np.arange(1_000_000)
    assert gatestep.thinned(np.arange(399_999)).size == 399_999  # under twice the limit: all of them
    sample = gatestep.thinned(values)
    assert sample.size == gatestep.STATISTICS_EVENTS and np.array_equal(sample, values[::5])
    assert gatestep.STATISTICS_EVENTS <= gatestep.thinned(np.arange(1_399_999)).size <= 2 * gatestep.STATISTICS_EVENTS


def test_grid_dilation_marks_the_square_around_each_cell():
    cells = np.zeros((9, 9), dtype=bool)
    cells[4, 4] = cells[0, 8] = True
    grown = gates._dilated(cells, 2)
    expected = np.zeros((9, 9), dtype=bool)
    expected[2:7, 2:7] = True
    expected[0:3, 6:9] = True
    assert np.array_equal(grown, expected)
