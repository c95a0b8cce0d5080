"""Blasts gated as a cytometrist gates them in a real marrow: by their markers, neighbours named and
excluded, every clone counted (cd125gate.analysis.gating.blastgate's blast_markers / myeloid gates, cd125gate.analysis.gating.clones)."""

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cd125gate.analysis.gating import clones
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import CaseSpec, simulate_case, write_case

MARROW = CaseSpec("marrow", n_events=60_000, blast_fraction=0.08, cd125_pos_fraction=0.7,
                  extra={"nrbc": 0.12, "hematogone": 0.04, "pdc": 0.015, "immature_eosinophil": 0.08})


def analysed(folder, spec, seed=3):
    truth = write_case(folder, spec, seed)
    control = truth["files"]["control"]
    analysis = analyze_sample(Path(folder) / truth["files"]["stained"],
                              Path(folder) / control if control else None, load_settings(), sample_id=spec.name)
    return analysis, truth, simulate_case(spec, seed)[0].labels


@pytest.fixture(scope="module")
def marrow(tmp_path_factory):
    return analysed(tmp_path_factory.mktemp("marrow"), MARROW)


def test_the_neighbours_are_named_by_their_markers(marrow):
    analysis, _, _ = marrow
    named = set(analysis.stained.populations.labels)
    assert {"nrbc", "hematogones", "pdc", "blasts"} <= named, named


def test_the_neighbours_stay_out_of_the_blast_gate(marrow):
    analysis, truth, labels = marrow
    gated = Counter(labels[analysis.stained.step("blasts").mask])
    for neighbour in ("nrbc", "hematogone", "pdc", "immature_eosinophil", "lymphocyte", "monocyte"):
        present = truth["populations"]["stained"][neighbour]
        assert gated[neighbour] <= 0.02 * present, (neighbour, gated[neighbour], present)
    result = analysis.result
    assert result.criterion == "MET", result.reasons
    assert abs(result.cd125_pos_fraction - truth["true_fraction"]) < 0.015


def test_the_blast_gate_is_drawn_on_blast_markers(marrow):
    analysis, _, _ = marrow
    names = [s.name for s in analysis.stained.steps]
    assert names.index("blast_region") < names.index("blast_markers") < names.index("myeloid") \
        < names.index("blasts")
    markers = analysis.stained.step("blast_markers")
    assert (markers.x, markers.y) == ("FITC-A", "PerCP-Cy5-5-A")  # CD34 against CD117
    assert analysis.stained.step("myeloid").parent == "blast_markers"


TWO_CLONES = dict(n_events=40_000, blast_fraction=0.3, cd125_pos_fraction=0.85, clone2_fraction=0.4,
                  clone2_cd125_pos_fraction=0.1, clone2_cd125_median=1500.0)


def test_two_clones_are_each_counted_and_their_disagreement_shown(tmp_path):
    spec = CaseSpec("two", clone2_markers={"CD34": None, "HLA-DR": None}, **TWO_CLONES)
    analysis, truth, _ = analysed(tmp_path, spec)
    result = analysis.result
    assert len(result.clones) == 2
    truths = sorted(c["true_fraction"] for c in truth["clones"].values())
    found = sorted(c["cd125_pos_fraction"] for c in result.clones)
    assert np.allclose(found, truths, atol=0.03), (found, truths)
    assert sum(c["blast_events"] for c in result.clones) == result.blast_events
    assert any(f.startswith("blast clones disagree on CD125") for f in result.flags)


def test_a_clone_left_outside_the_gate_is_a_failed_check(tmp_path):
    """A clone with no CD34, CD117 or CD33 is not called blasts: left out of the gate, it is named (REVIEW)."""
    spec = CaseSpec("hidden", clone2_markers={"CD34": None, "CD117": None, "CD33": None}, **TWO_CLONES)
    result = analysed(tmp_path, spec)[0].result
    assert result.criterion == "REVIEW"
    assert any(r.startswith("population check: an unnamed CD45-dim/SSC-low population") and "CD34 neg" in r
               for r in result.reasons), result.reasons


def pops_of(means, levels):
    """A stub of the fitted populations: two backbone markers, unit-ish covariances."""
    means = np.asarray(means, dtype=float)
    k = len(means)
    return SimpleNamespace(features=["CD45", "CD34"], means=means, levels=levels,
                           covariances=np.tile(np.diag([0.01, 0.01]), (k, 1, 1)), weights=np.full(k, 1.0 / k))


def test_components_group_into_clones_by_phenotype():
    same = {"CD45": "dim", "CD34": "bright"}
    pops = pops_of([[2.0, 3.0], [2.1, 3.1], [2.0, 1.0]], [same, same, {"CD45": "dim", "CD34": "neg"}])
    assert clones.group(pops, [0, 1, 2]) == [[0, 1], [2]]
    # one phenotype split by the mixture far along an axis stays one clone
    far = pops_of([[2.0, 3.0], [2.0, 3.6]], [same, same])
    assert clones.group(far, [0, 1]) == [[0, 1]]


def test_flowkit_reproduces_the_marker_gates_of_a_marrow_without_viability_dye(tmp_path):
    """Every gate (blast_markers, myeloid, intact) exported as Gating-ML gives FlowKit our counts."""
    from cd125gate.io import gatingml
    from cd125gate.results.outputs import write_outputs

    spec = CaseSpec("noviab", n_events=30_000, blast_fraction=0.12, dead_fraction=0.15,
                    drop_markers=("Viability",), extra={"nrbc": 0.08, "hematogone": 0.03})
    analysis, truth, labels = analysed(tmp_path, spec)
    names = [s.name for s in analysis.stained.steps]
    assert {"blast_markers", "myeloid", "intact"} <= set(names) and "viable" not in names
    gated = Counter(labels[analysis.stained.step("blasts").mask])
    assert gated["dead"] <= 0.05 * sum(gated.values()), gated
    out = tmp_path / "out"
    write_outputs(analysis, out)
    ours = {g["name"]: g["count"] for g in analysis.result.gates}
    assert gatingml.reapply(out / "gates.xml", tmp_path / truth["files"]["stained"]) == ours
