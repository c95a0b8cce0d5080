"""The gate proposers, one by one, on small synthetic tubes where the right gate is obvious.

Each proposer returns its steps and flags; nothing here relies on a proposer
changing the tube. A tube's channels are named after their markers; scatter and
Time are linear, fluorescence is held in display units (decades, the fitted
populations' scale of 1), so a population's mean is where its events sit.
"""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cd125gate.analysis.gating import (
    blastgate,
    boundaries,
    exclusions,
    gates,
    hierarchy,
    populations,
    scatter,
)
from cd125gate.analysis.gating.gatestep import Proposal, dim, gate_step
from cd125gate.analysis.gating.timeqc import time_qc
from cd125gate.analysis.model import GATE_ORDER, GateStep, TubeAnalysis
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.analysis.transforms import Scale
from cd125gate.errors import InputError
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import CaseSpec, write_case
from conftest import MARROW, MARROW_FEATURES, normal

SETTINGS = load_settings()
LINEAR = ("FSC-A", "FSC-H", "SSC-A", "Time")
RANGE = 262144.0


def make_tube(columns, raw=None):
    """A TubeAnalysis of ``columns`` (channel = marker -> transformed values); ``raw``: the events as read."""
    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=float) for n in names])
    scales = {n: Scale(n, "linear", {}) if n in LINEAR else
              Scale(n, "logicle", {"T": RANGE, "W": 0.5, "M": 4.5, "A": 0.0}) for n in names}
    fcs = SimpleNamespace(path="t.fcs", events=data.copy() if raw is None else raw,
                          channels=[SimpleNamespace(name=n, range=RANGE) for n in names],
                          channel_names=lambda: names)
    return TubeAnalysis("stained", fcs, names, {n: n for n in names}, data, scales, [])


def root(tube, name, mask=None):
    """A step holding every event (or ``mask``), as if the gates above it had been found."""
    n = len(tube.data)
    if mask is None:  # a gate that holds every event, so that it can be applied again
        gate = gates.RectangleGate(name, [dim(tube, tube.channels[0], lo=-np.inf)])
        tube.steps.append(gate_step(tube, name, None, gate, tube.channels[0], None, ""))
    else:
        tube.steps.append(GateStep(name, None, None, tube.channels[0], None, mask, n))


def take(tube, proposal):
    tube.steps.extend(proposal.steps)
    return proposal


# -- time QC ---------------------------------------------------------------------------------------

def test_time_qc_removes_a_burst_of_events():
    steady = np.linspace(0.0, 100.0, 20000)
    burst = np.linspace(40.0, 45.0, 1000)  # twice the event rate for 5 seconds
    t = np.concatenate([steady, burst])
    tube = make_tube({"Time": t, "FSC-A": normal(5e4, 5e3, t.size, 1), "SSC-A": normal(2e4, 2e3, t.size, 2)})
    qc, steps = time_qc(tube, SETTINGS)
    assert [s.name for s in steps][-1] == "time_qc" and steps[0].name == "time_anomaly_1"
    assert all(s.exclusion for s in steps[:-1])
    kept = steps[-1].mask
    assert not kept[(t > 41) & (t < 44)].any()  # the burst is out
    assert kept[(t < 35) | (t > 50)].all()      # the steady acquisition stays
    assert 0.1 < qc.removed_fraction < 0.3 and not qc.kept.all()
    assert tube.steps == []  # the proposer returned its steps; the tube is unchanged


def test_a_steady_acquisition_loses_nothing():
    t = np.linspace(0.0, 100.0, 20000)
    tube = make_tube({"Time": t, "FSC-A": normal(5e4, 5e3, t.size, 1), "SSC-A": normal(2e4, 2e3, t.size, 2)})
    qc, steps = time_qc(tube, SETTINGS)
    assert [s.name for s in steps] == ["time_qc"] and steps[0].mask.all()
    assert qc.removed_fraction == 0.0 and steps[0].note == "no anomaly found"


@pytest.mark.parametrize("columns, settings, why", [
    ({"FSC-A": [1.0, 2.0, 3.0]}, SETTINGS, "no Time channel"),
    ({"FSC-A": [1.0, 2.0, 3.0], "Time": [5.0, 5.0, 5.0]}, SETTINGS, "Time does not advance"),
    ({"FSC-A": [1.0, 2.0, 3.0], "Time": [1.0, 2.0, 3.0]},
     replace(SETTINGS, qc=replace(SETTINGS.qc, time_qc=False)), "time QC disabled"),
])
def test_time_qc_not_applied_keeps_every_event_and_says_why(columns, settings, why):
    qc, (step,) = time_qc(make_tube(columns), settings)
    assert qc is None and step.name == "time_qc" and step.mask.all()
    assert step.note == f"not applied: {why}"


# -- margins, cells, singlets, viable ------------------------------------------------------------

def test_margins_removes_events_at_any_detector_ceiling():
    ssc = np.array([1e4, 2e4, RANGE, 3e4, 4e4])
    cd45_raw = np.array([100.0, 200.0, 300.0, RANGE, 500.0])  # the ceiling is judged on raw values
    tube = make_tube({"FSC-A": [5e4] * 5, "SSC-A": ssc, "CD45": [1.0, 1.1, 1.2, 1.3, 1.4]},
                     raw=np.column_stack([[5e4] * 5, ssc, cd45_raw]))
    root(tube, "time_qc")
    step = scatter.margins(tube, SETTINGS)
    assert step.mask.tolist() == [True, True, False, False, True]
    assert (step.name, step.parent, step.parent_count) == ("margins", "time_qc", 5)


def test_too_few_events_below_the_ceiling_fail_the_tube_naming_it():
    tube = make_tube({"FSC-A": np.full(1000, 5e4), "SSC-A": np.r_[np.full(900, RANGE), np.full(100, 2e4)]})
    root(tube, "time_qc")
    tube.steps.append(scatter.margins(tube, SETTINGS))
    with pytest.raises(InputError, match=r"margins: only 100 of 1,000 events lie below the detector ceiling"):
        scatter.require_below_ceiling(tube, SETTINGS)
    few = replace(SETTINGS, gating=replace(SETTINGS.gating, min_events=100))
    scatter.require_below_ceiling(tube, few)  # enough left: no error


def test_cells_cut_the_debris_below_the_smallest_cells():
    fsc = 10.0 ** np.concatenate([normal(3.9, 0.2, 500, 1), normal(4.65, 0.04, 3000, 2), normal(4.95, 0.05, 6000, 3)])
    tube = make_tube({"FSC-A": fsc, "SSC-A": np.full(fsc.size, 2e4)})
    root(tube, "margins")
    step = scatter.cells(tube)
    cut = step.gate.dimensions[0].min
    assert 10 ** 4.0 < cut < 10 ** 4.5
    assert step.mask[500:].all() and step.mask[:500].mean() < 0.4


def test_singlets_leave_the_doublets_out():
    rng = np.random.default_rng(0)
    h = rng.uniform(2e4, 8e4, 5000)
    a = h * rng.normal(1.1, 0.02, h.size)
    a[:500] *= 2.0  # doublets: twice the area for the height
    tube = make_tube({"FSC-A": a, "FSC-H": h, "SSC-A": np.full(h.size, 2e4)})
    root(tube, "cells")
    proposal = scatter.singlets(tube, SETTINGS)
    (step,) = proposal.steps
    assert proposal.flags == () and proposal.parent == "singlets"
    assert not step.mask[:500].any() and step.mask[500:].mean() > 0.99


def test_singlets_without_fsc_h_flag_that_doublets_stay():
    tube = make_tube({"FSC-A": [1.0, 2.0, 3.0], "SSC-A": [1.0, 2.0, 3.0]})
    root(tube, "cells")
    proposal = scatter.singlets(tube, SETTINGS)
    assert proposal.flags == ("no FSC-H channel: doublets not removed",)
    assert proposal.steps[0].mask.all() and proposal.steps[0].note == "not applied: no FSC-H channel"


def test_singlets_on_a_non_positive_fsc_h_fail_cleanly():
    tube = make_tube({"FSC-A": [1.0, 2.0, 3.0], "FSC-H": [-1.0, -2.0, -3.0], "SSC-A": [1.0, 2.0, 3.0]})
    root(tube, "cells")
    with pytest.raises(InputError, match="singlets: FSC-H is not positive on any cell"):
        scatter.singlets(tube, SETTINGS)


def test_viable_cuts_between_live_and_dead_cells():
    dye = np.concatenate([normal(0.5, 0.1, 9000, 1), normal(2.5, 0.2, 1000, 2)])
    tube = make_tube({"FSC-A": np.full(dye.size, 5e4), "SSC-A": np.full(dye.size, 2e4), "viability": dye})
    root(tube, "singlets")
    proposal = scatter.viable(tube)
    (step,) = proposal.steps
    assert proposal.parent == "viable" and 1.0 < step.gate.dimensions[0].max < 2.0
    assert step.note == "valley between live and dead cells"
    assert step.mask[:9000].mean() > 0.999 and not step.mask[9000:].any()


def test_viable_without_dead_cells_stays_six_sd_above_the_live_peak():
    dye = normal(0.5, 0.1, 9000, 1)
    tube = make_tube({"FSC-A": np.full(dye.size, 5e4), "SSC-A": np.full(dye.size, 2e4), "viability": dye})
    root(tube, "singlets")
    (step,) = scatter.viable(tube).steps
    assert step.note == "no dead population found: live peak + 6 SD"
    assert step.gate.dimensions[0].max == pytest.approx(0.5 + 6 * 0.1, abs=0.06)


def test_without_a_viability_dye_no_gate_and_a_flag():
    tube = make_tube({"FSC-A": [1.0, 2.0], "SSC-A": [1.0, 2.0]})
    assert scatter.viable(tube) == Proposal((), ("no viability dye in the panel: dead cells not removed",),
                                            "singlets")


def test_a_proposer_on_an_empty_parent_names_the_step_instead_of_crashing():
    tube = make_tube({"FSC-A": [1.0, 2.0, 3.0], "SSC-A": [1.0, 2.0, 3.0]})
    root(tube, "margins", np.zeros(3, dtype=bool))
    with pytest.raises(InputError, match="cells: no events left in 'margins'"):
        scatter.cells(tube)


# -- the backbone gates, drawn around named populations ------------------------------------------

FEATURES = MARROW_FEATURES
WEIGHTS = [0.3, 0.05, 0.2, 0.03, 0.25, 0.1, 0.05, 0.02]


def marrow_tube(viability=True):
    """One event at the centre of each MARROW population, and the populations named from their means."""
    means = np.array(list(MARROW.values()))
    columns = {"FSC-A": 10.0 ** means[:, 0], "SSC-A": 10.0 ** means[:, 1]}
    columns.update({m: means[:, j] for j, m in enumerate(FEATURES) if j >= 2})
    if viability:
        columns["viability"] = np.zeros(len(means))
    tube = make_tube(columns)
    k = len(means)
    tube.populations = populations.label(FEATURES, list(tube.channels[:1]) * len(FEATURES), np.ones(len(FEATURES)),
                                         means, np.stack([np.eye(len(FEATURES)) * 0.01] * k), np.array(WEIGHTS),
                                         np.arange(k), np.arange(k), SETTINGS.gating)
    root(tube, "viable")
    return tube


def members(step):
    return {name for name, inside in zip(MARROW, step.mask) if inside}


def test_the_backbone_gates_hold_the_populations_they_are_drawn_around():
    tube = marrow_tube()
    leukocytes = blastgate.leukocytes(tube, "viable")
    assert members(leukocytes) == set(MARROW) - {"debris"}
    tube.steps.append(leukocytes)
    region = blastgate.blast_region(tube, SETTINGS)
    assert {"blasts", "basophils"} <= members(region)
    assert not members(region) & {"T cells", "B cells", "neutrophils", "eosinophils", "monocytes", "debris"}
    lymphocytes = blastgate.lymphocytes(tube, SETTINGS)
    assert members(lymphocytes) == {"T cells", "B cells"}
    tube.steps += [region, lymphocytes]
    marker = take(tube, blastgate.blast_markers(tube, SETTINGS))
    assert marker.parent == "blast_markers" and members(marker.steps[0]) == {"blasts"}
    myeloid = take(tube, blastgate.myeloid(tube, SETTINGS, marker.parent))
    assert myeloid.parent == "myeloid" and members(myeloid.steps[0]) == {"blasts"}
    intact = exclusions.intact(tube, SETTINGS, myeloid.parent)
    assert intact == Proposal((), (), "myeloid")  # a viability dye: no intact gate
    blasts = exclusions.blasts(tube, myeloid.parent)
    assert [s.name for s in blasts.steps] == ["basophils", "blasts"] and blasts.flags == ()
    assert members(blasts.steps[1]) == {"blasts"}


def test_basophils_leave_the_blast_region():
    tube = marrow_tube()
    tube.steps.append(blastgate.leukocytes(tube, "viable"))
    tube.steps.append(blastgate.blast_region(tube, SETTINGS))
    basophils, blasts = exclusions.blasts(tube, "blast_region").steps
    assert basophils.exclusion and members(basophils) == {"basophils"}
    assert members(blasts) == {"blasts"}


def test_without_blast_markers_or_cd123_the_blasts_are_gated_on_what_is_left_and_flagged():
    tube = marrow_tube()
    tube.steps.append(blastgate.leukocytes(tube, "viable"))
    tube.steps.append(blastgate.blast_region(tube, SETTINGS))
    tube.markers = {m: ch for m, ch in tube.markers.items() if m not in ("CD34", "CD117", "HLA-DR", "CD123")}
    marker = blastgate.blast_markers(tube, SETTINGS)
    assert marker == Proposal((), ("no blast marker in the panel: blasts gated on CD45/SSC only",), "blast_region")
    blasts = exclusions.blasts(tube, marker.parent)
    assert blasts.flags == ("CD123 or HLA-DR missing: basophils not excluded from blasts",)
    assert [s.name for s in blasts.steps] == ["blasts"]
    assert members(blasts.steps[0]) == members(tube.step("blast_region"))


def test_without_cd33_no_myeloid_gate():
    tube = marrow_tube()
    del tube.markers["CD33"]
    assert blastgate.myeloid(tube, SETTINGS, "blast_markers") == Proposal((), (), "blast_markers")


def test_intact_cuts_a_lower_fsc_population_without_a_viability_dye():
    fsc = 10.0 ** np.concatenate([normal(4.7, 0.05, 4000, 1), normal(4.2, 0.05, 600, 2)])
    tube = make_tube({"FSC-A": fsc, "SSC-A": np.full(fsc.size, 2e4)})
    root(tube, "myeloid")
    proposal = exclusions.intact(tube, SETTINGS, "myeloid")
    (step,) = proposal.steps
    assert proposal.parent == "intact" and 10 ** 4.2 < step.gate.dimensions[0].min < 10 ** 4.7
    assert step.mask[:4000].mean() > 0.999 and step.mask[4000:].mean() < 0.01


def test_intact_without_a_lower_population_or_with_few_events_draws_nothing():
    one = make_tube({"FSC-A": 10.0 ** normal(4.7, 0.05, 4000, 1), "SSC-A": np.full(4000, 2e4)})
    root(one, "myeloid")
    assert exclusions.intact(one, SETTINGS, "myeloid") == Proposal((), (), "myeloid")
    few = make_tube({"FSC-A": 10.0 ** np.r_[normal(4.7, 0.05, 150, 1), normal(4.2, 0.05, 40, 2)],
                     "SSC-A": np.full(190, 2e4)})
    root(few, "myeloid")
    assert exclusions.intact(few, SETTINGS, "myeloid") == Proposal((), (), "myeloid")


# -- settling and copying ------------------------------------------------------------------------

def test_events_within_the_settle_margin_of_a_bound_are_found():
    bound = 1.0
    tube = make_tube({"FSC-A": [5e4] * 4, "CD125": [bound - 1e-12, bound + 1e-12, 0.2, 3.0]})
    root(tube, "blasts")
    gate = gates.RectangleGate("cd125_pos", [dim(tube, "CD125", lo=bound)])
    tube.steps.append(gate_step(tube, "cd125_pos", "blasts", gate, "CD125", None, ""))
    assert boundaries.near_boundary_rows(tube).tolist() == [0, 1]


def test_reapplied_gives_new_steps_and_leaves_the_old_ones_alone():
    tube = make_tube({"FSC-A": [5e4] * 3, "CD125": [0.5, 1.5, 2.5]})
    root(tube, "blasts")
    gate = gates.RectangleGate("cd125_pos", [dim(tube, "CD125", lo=1.0)])
    tube.steps.append(gate_step(tube, "cd125_pos", "blasts", gate, "CD125", None, ""))
    old = tube.step("cd125_pos")
    tube.data[0, 1] = 2.0  # an event moved across the bound
    new = boundaries.reapplied(tube)
    assert new[1].mask.tolist() == [True, True, True] and new[1] is not old
    assert old.mask.tolist() == [False, True, True]


def test_copied_steps_keep_the_tubes_own_time_qc():
    source = make_tube({"FSC-A": [1.0, 2.0, 3.0]})
    root(source, "time_qc")
    source.steps.append(GateStep("time_anomaly_1", None, None, "FSC-A", None, np.ones(3, bool), 3, exclusion=True))
    cells = gates.RectangleGate("cells", [dim(source, "FSC-A", lo=2.0)])
    source.steps.append(gate_step(source, "cells", "time_qc", cells, "FSC-A", None, "note"))
    target = make_tube({"FSC-A": [3.0, 1.0, 2.5, 0.5]})
    root(target, "time_qc", np.array([True, True, True, False]))
    (copied,) = hierarchy.copied_steps(target, source.steps)
    assert (copied.name, copied.gate, copied.note) == ("cells", source.step("cells").gate, "note")
    assert copied.mask.tolist() == [True, False, True, False]
    assert [s.name for s in target.steps] == ["time_qc"]


# -- the whole hierarchy -----------------------------------------------------------------------------

def test_find_gates_assembles_the_hierarchy_and_the_control_takes_the_same_gates(tmp_path):
    truth = write_case(tmp_path, CaseSpec("tiny", n_events=4000, control_events=4000), 3)
    analysis = analyze_sample(tmp_path / truth["files"]["stained"], tmp_path / truth["files"]["control"],
                              SETTINGS, sample_id="tiny")
    stained, control = analysis.stained, analysis.control
    names = [s.name for s in stained.steps if s.name in GATE_ORDER]
    assert names == [g for g in GATE_ORDER if g in names]
    assert {"time_qc", "margins", "cells", "singlets", "leukocytes", "blast_region", "blasts",
            "cd125_pos"} <= set(names)
    theirs = {s.name: s.gate for s in control.steps}
    for step in stained.steps:
        if not step.name.startswith("time_"):
            assert theirs[step.name] == step.gate, step.name
    assert stained.populations is not None and control.populations is None
    assert stained.time_qc is not None and control.time_qc is not None
