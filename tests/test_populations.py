"""Gate proposers, population naming and self-checks on tiny arrays, and degenerate tubes failing cleanly."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cd125gate.analysis import checks
from cd125gate.analysis.gating import blastgate, exclusions, gatestep, geometry, populations, scatter
from cd125gate.analysis.model import Threshold
from cd125gate.analysis.numeric import density
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.analysis.transforms import Scale
from cd125gate.errors import InputError
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import CaseSpec, simulate_case, tube_bytes
from conftest import MARROW, MARROW_FEATURES

SETTINGS = load_settings().gating
FEATURES = MARROW_FEATURES


# -- proposers ---------------------------------------------------------------------------------

def test_debris_cut_lies_between_debris_and_the_smallest_cells():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3.9, 0.2, 500), rng.normal(4.65, 0.04, 3000), rng.normal(4.95, 0.05, 6000)])
    cut = scatter.debris_cut(x)
    assert 4.0 < cut < 4.5


def test_debris_cut_never_takes_the_valley_between_agranular_cells_and_granulocytes():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(4.65, 0.04, 1000), rng.normal(4.95, 0.05, 8000)])
    cut = scatter.debris_cut(x)
    assert cut is None or cut < 4.5  # below every lymphocyte


def test_debris_cut_of_a_constant_channel_is_none():
    assert scatter.debris_cut(np.full(100, 4.5)) is None


def test_boundary_moves_towards_the_smaller_population():
    even = density.boundary((0.0, 1.0, 0.5), (4.0, 1.0, 0.5))
    assert even == pytest.approx(2.0, abs=0.02)
    assert density.boundary((0.0, 1.0, 0.01), (4.0, 1.0, 0.99)) < even


def test_hull_and_clip_of_a_square():
    square = geometry.hull([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)])
    assert len(square) == 4
    half = geometry.clip(square, (1.0, 0.0), 0.5)  # x <= 0.5
    assert half[:, 0].max() == pytest.approx(0.5) and len(half) == 4
    assert len(geometry.clip(square, (1.0, 0.0), -1.0)) == 0


def test_separating_line_keeps_own_population_out_of_the_other():
    own = (np.array([0.0, 0.0]), np.eye(2) * 0.01, 0.1)
    other = (np.array([1.0, 0.0]), np.eye(2) * 0.01, 0.9)
    normal, offset = geometry.separating_line(own, other, odds=10.0)
    assert normal @ own[0] <= offset < normal @ other[0]


def test_ellipse_points_lie_at_the_radius():
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    pts = geometry.ellipse_points([1.0, 2.0], cov, 3.0, n=8)
    d = pts - [1.0, 2.0]
    assert np.allclose(np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d), 9.0)



def split_lymphocytes(blast_cd45=3.0):
    """Stub populations in (CD45, SSC): a broad blast population reaching towards lymphocytes that the
    mixture split into T cells and a smaller B-cell component (as it does on HLA-DR)."""
    rng = np.random.default_rng(0)
    parts = [("blasts", [blast_cd45, 4.26], [0.17, 0.08], 500), ("lymphocytes", [3.48, 4.04], [0.05, 0.05], 1200),
             ("lymphocytes", [3.48, 4.06], [0.05, 0.05], 250)]
    labels = [p[0] for p in parts]
    x = np.concatenate([rng.normal(m, s, (n, 2)) for _, m, s, n in parts])
    assigned = np.repeat(np.arange(len(parts)), [n for *_, n in parts])
    means = np.array([x[assigned == i].mean(0) for i in range(len(parts))])
    covs = np.array([np.pad(np.cov(x[assigned == i].T), (0, 2)) for i in range(len(parts))])
    features = ["CD45", "SSC", "CD34", "CD117"]
    return SimpleNamespace(labels=labels, features=features, x=np.column_stack([x, np.zeros((len(x), 2))]),
                           assigned=assigned, means=np.column_stack([means, np.zeros((len(parts), 2))]),
                           covariances=covs, weights=np.bincount(assigned) / len(x),
                           components=lambda name: [i for i, label in enumerate(labels) if label == name],
                           feature=features.index, share=lambda name: 0.25)


def test_the_lymphocytes_are_spared_as_one_population_however_the_mixture_splits_them():
    """Each lymphocyte component's line alone takes few blasts (the B cells' < 5 %), together more:
    the blast-marker gate separates lymphocytes, so the region is cut against neither."""
    from matplotlib.path import Path as MplPath

    pops = split_lymphocytes()
    own = geometry.plane(pops, [0])
    lines = [geometry.separating_line(own, geometry.plane(pops, [i]), SETTINGS.region_odds) for i in (1, 2)]
    assert blastgate._share_beyond(pops, [0], lines[1:]) < blastgate.MAX_BLASTS_CUT
    assert blastgate._share_beyond(pops, [0], lines) > blastgate.MAX_BLASTS_CUT
    polygon, note = blastgate.blast_region_polygon(pops, SETTINGS)
    assert "not cut against lymphocytes" in note and "likely as lymphocytes" not in note, note
    assert MplPath(polygon).contains_points(pops.x[pops.assigned == 0][:, :2]).mean() > 0.98


# -- naming ------------------------------------------------------------------------------------



def named(components, weights=None):
    means = np.array(list(components.values()))
    k = len(means)
    weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights)
    covs = np.stack([np.eye(len(FEATURES)) * 0.01] * k)
    return populations.label(FEATURES, ["ch"] * len(FEATURES), np.ones(len(FEATURES)), means, covs, weights,
                             np.arange(k), np.arange(k), SETTINGS)


def test_every_marrow_population_is_named_by_the_phenotype_table():
    pops = named(MARROW, [0.3, 0.05, 0.2, 0.03, 0.25, 0.1, 0.05, 0.02])
    expected = ["lymphocytes", "lymphocytes", "blasts", "basophils", "neutrophils", "eosinophils",
                "monocytes", "debris"]
    assert pops.labels == expected


def test_levels_are_read_against_the_t_cells_not_the_hla_dr_positive_b_cells():
    pops = named(MARROW, [0.3, 0.05, 0.2, 0.03, 0.25, 0.1, 0.05, 0.02])
    assert pops.reference == 0
    assert pops.levels[6]["HLA-DR"] == "bright"  # monocytes


def test_cd45_bright_blasts_are_called_blasts_only_by_cd34_or_cd117():
    """As CD45-bright as lymphocytes: CD34+/CD117+ is blasts (as a cytometrist gates them), HLA-DR alone is not."""
    pops = named(dict(MARROW, blasts=[4.78, 4.26, 3.45, 2.8, 2.6, 2.7, 2.2, 2.6]))
    assert pops.labels[2] == "blasts"
    pops = named(dict(MARROW, blasts=[4.78, 4.26, 3.45, 0.6, 0.6, 2.7, 2.2, 2.6]))
    assert pops.labels[2] != "blasts"


def test_a_cd34_population_lacking_cd117_and_cd33_is_not_called_blasts():
    """CD34+ hematogones-like events (CD117-, CD33-) are not myeloid blasts."""
    pops = named(dict(MARROW, blasts=[4.78, 4.26, 2.6, 2.8, 0.6, 0.6, 2.2, 0.6]))
    assert pops.labels[2] != "blasts"


def test_cd123_high_hla_dr_negative_cd34_negative_blasts_are_taken_for_basophils():
    pops = named(dict(MARROW, blasts=[4.78, 4.26, 2.6, 0.8, 0.6, 0.5, 3.2, 2.6]))
    assert pops.labels[2] == "basophils"


def test_a_few_stray_events_in_the_lymphocyte_component_do_not_move_the_reference():
    """Blast-rich marrow: 28 lymphocytes share their component with 17 debris events."""
    lymphs = np.tile(MARROW["T cells"], (28, 1))
    stray = np.tile(MARROW["debris"], (17, 1))
    blasts = np.tile(MARROW["blasts"], (200, 1))
    x = np.vstack([lymphs, stray, blasts])
    assigned = np.repeat([0, 0, 1], [28, 17, 200])
    means = np.array([np.vstack([lymphs, stray]).mean(0), blasts.mean(0)])
    assert means[0][2] - MARROW["blasts"][2] < 0.3  # the merged mean: blasts barely CD45-dimmer
    covs = np.stack([np.eye(len(FEATURES)) * 0.01] * 2)
    args = (FEATURES, ["ch"] * len(FEATURES), np.ones(len(FEATURES)), means, covs, np.array([0.2, 0.8]),
            np.arange(len(x)), assigned, SETTINGS)
    assert populations.label(*args).labels[1] != "blasts"
    pops = populations.label(*args, x)
    assert pops.reference_mean("CD45") == MARROW["T cells"][2]
    assert pops.labels == ["lymphocytes", "blasts"]


def test_without_a_lymphocyte_reference_nothing_is_named():
    pops = named({"blasts": MARROW["blasts"]}, [1.0])
    pops_none = populations.label(["SSC"], ["c"], np.ones(1), np.zeros((1, 1)), np.ones((1, 1, 1)),
                                  np.ones(1), np.arange(1), np.arange(1), SETTINGS)
    assert pops.labels == ["lymphocytes"]  # the only component is its own reference
    assert pops_none.labels == ["unknown"] and pops_none.reference is None


def test_basophil_cuts_keep_cd123_high_hla_dr_positive_blasts_by_their_hla_dr():
    pops = named(dict(MARROW, blasts=[4.78, 4.26, 2.6, 2.8, 2.6, 2.7, 3.1, 2.6]))
    c123, cdr, note = exclusions.basophil_cuts(pops)
    assert c123 < 3.25 and 0.48 < cdr < 2.7 and "HLA-DR between" in note


def test_basophil_cuts_without_basophils_lie_above_the_blasts():
    pops = named({k: v for k, v in MARROW.items() if k != "basophils"})
    c123, cdr, _ = exclusions.basophil_cuts(pops)
    assert c123 > 2.2 and cdr < 2.7


# -- guards ------------------------------------------------------------------------------------

def stub_tube(columns, masks=None):
    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=float) for n in names])
    return SimpleNamespace(fcs=SimpleNamespace(path="t.fcs"), channels=names, data=data,
                           column=lambda ch: data[:, names.index(ch)])


@pytest.mark.parametrize("values, mask, problem", [
    ([1.0, 2.0, 3.0], [False, False, False], "no events left in 'parent'"),
    ([1.0, np.nan, 3.0], [True, True, True], "non-finite"),
    ([5.0, 5.0, 5.0], [True, True, True], "constant (5)"),
    ([0.0, 0.0, 0.0], [True, True, True], "constant (0)"),
])
def test_guarded_names_the_step_and_the_problem(values, mask, problem):
    tube = stub_tube({"X": values})
    with pytest.raises(InputError) as err:
        gatestep.guarded(tube, "cells", "X", np.array(mask), "parent")
    assert str(err.value).startswith("t.fcs: cells: ") and problem in str(err.value)


def degenerate_pair(tmp_path, change):
    """A small simulated tube pair whose stained events are changed by ``change(events, channels)``."""
    stained, control, _ = simulate_case(CaseSpec("deg", n_events=3000, control_events=3000), 2)
    events = stained.events.copy()
    change(events, stained.channels)
    path = tmp_path / "deg.fcs"
    path.write_bytes(tube_bytes(replace(stained, events=events), "fcs31"))
    return path


@pytest.mark.parametrize("change, expected", [
    (lambda e, ch: e.__setitem__((slice(None), ch.index("SSC-A")), 5000.0), "SSC-A is constant"),
    (lambda e, ch: e.__setitem__((slice(None), slice(0, -1)), 0.0), "is constant"),
    (lambda e, ch: e.__setitem__((slice(None), slice(0, -1)), e[0, :-1]), "is constant"),
    (lambda e, ch: e.__setitem__((slice(None), ch.index("FSC-A")), 1e30), "no events left in 'margins'"),
])
def test_degenerate_tubes_fail_with_the_step_and_the_problem(tmp_path, change, expected):
    # Whichever guard meets the tube first names it: the reader's plausibility checks (a constant
    # channel) or the gate proposer's own guard (the unit tests above call those directly).
    result = analyze_sample(degenerate_pair(tmp_path, change), None, load_settings()).result
    assert result.criterion == "FAILED"
    assert any(expected in r or "implausible data: " in r for r in result.reasons), result.reasons


# -- self-checks -------------------------------------------------------------------------------

LOGICLE = Scale("x", "logicle", {"T": 262144.0, "W": 0.5, "M": 4.5, "A": 0.0})


def checked_tube(blast_values, lymph_values, n=400):
    """A stub tube: ``n`` lymphocytes then ``n`` gated blasts, each marker at a level (decades)."""
    markers = ["CD45", "SSC-A", "CD34", "CD117", "HLA-DR", "CD123", "CD125"]
    rng = np.random.default_rng(0)
    columns = {}
    for m in markers:
        lv, bv = lymph_values.get(m, 0.5), blast_values.get(m, 0.5)
        values = np.concatenate([np.full(n, lv), np.full(n, bv)]) + rng.normal(0, 0.05, 2 * n)
        columns[m] = 10.0 ** values if m == "SSC-A" else values / 4.5
    tube = stub_tube(columns)
    lymph = np.arange(2 * n) < n
    steps = {"lymphocytes": SimpleNamespace(mask=lymph), "blasts": SimpleNamespace(mask=~lymph)}
    tube.markers = {m: m for m in markers}
    tube.scales = {m: LOGICLE for m in markers}
    tube.step = steps.__getitem__
    # the blast population's fitted events: every gated blast
    tube.populations = SimpleNamespace(found=lambda name: True, rows_of=lambda name: np.arange(n, 2 * n))
    return tube


LYMPH = {"CD45": 3.5, "SSC-A": 4.0}
BLAST = {"CD45": 2.6, "SSC-A": 4.2, "CD34": 2.5, "CD117": 2.4, "HLA-DR": 2.6, "CD123": 2.0}


def test_real_blasts_pass_every_blast_check():
    assert checks.blast_checks(checked_tube(BLAST, LYMPH), SETTINGS) == []


@pytest.mark.parametrize("change, name", [
    ({"CD45": 3.4}, "CD45 check"),
    ({"SSC-A": 4.8}, "SSC check"),
    ({"CD34": 0.5, "CD117": 0.5, "HLA-DR": 0.5}, "blast marker check"),
    ({"CD34": 0.5, "CD117": 0.5, "HLA-DR": 0.5, "CD123": 3.5}, "basophil check"),
])
def test_each_blast_check_names_itself(change, name):
    reasons = checks.blast_checks(checked_tube(dict(BLAST, **change), LYMPH), SETTINGS)
    assert any(r.startswith(name) for r in reasons), reasons


def test_too_few_blasts_among_crowding_cells_are_recognised():
    tube = checked_tube(BLAST, LYMPH, n=300)
    blasts = tube.step("blasts").mask
    tube.column("CD34")[np.flatnonzero(blasts)[150:]] = 0.1  # half the gated events carry no marker
    tube.column("CD117")[np.flatnonzero(blasts)[150:]] = 0.1
    tube.column("HLA-DR")[np.flatnonzero(blasts)[150:]] = 0.1
    reasons = checks.blast_checks(tube, SETTINGS, min_blasts=200)
    assert any(r.startswith("blast count check: only 150 of the 300") for r in reasons), reasons


def test_no_named_blast_population_is_a_reason():
    tube = checked_tube(BLAST, LYMPH)
    tube.populations = SimpleNamespace(found=lambda name: False)
    assert any(r.startswith("population check") for r in checks.blast_checks(tube, SETTINGS))


def control(role, events, share, above):
    return {"role": role, "events": events, "cd125_pos_share": share, "median_above_cut": above}


def test_internal_control_reasons():
    c = SETTINGS.checks
    good = {"eosinophils": control("positive", 500, 0.99, 1.7), "lymphocytes": control("negative", 500, 0.01, -0.5)}
    assert checks.control_reasons(good, c) == []
    failed_stain = dict(good, eosinophils=control("positive", 500, 0.85, 0.4))
    assert "eosinophils (CD125+ by nature)" in checks.control_reasons(failed_stain, c)[0]
    off = dict(good, lymphocytes=control("negative", 500, 0.8, 0.3))
    assert "lymphocytes (CD125- by nature) are 80% CD125+" in checks.control_reasons(off, c)[0]
    few = dict(good, eosinophils=control("positive", 10, 0.0, -1.0))
    assert checks.control_reasons(few, c) == []


@pytest.mark.parametrize("name, share, above, fails", [
    ("basophils", 0.97, 0.5, False),    # wholly above the cut-off: never a failed stain
    ("eosinophils", 0.95, 0.2, False),
    ("basophils", 0.8, 0.4, False),     # basophils carry less IL-5Ra: 0.3 decades suffice
    ("basophils", 0.8, 0.2, True),
    ("eosinophils", 0.8, 0.4, True),    # eosinophils are expected 0.8 decades above
    ("basophils", 0.3, 1.0, True),      # most of them below the cut-off
])
def test_positive_controls_are_judged_by_their_own_margin(name, share, above, fails):
    controls = {name: control("positive", 500, share, above)}
    reasons = checks.control_reasons(controls, SETTINGS.checks)
    assert bool(reasons) == fails
    if fails:
        assert reasons[0].startswith(f"internal control check: {name} (CD125+ by nature) are {share:.0%}")


def test_internal_controls_count_the_named_populations_against_the_cut():
    tube = stub_tube({"PE": np.array([0.1, 0.9, 0.8, 0.2])})
    tube.markers, tube.scales = {"CD125": "PE"}, {"PE": LOGICLE}
    tube.populations = SimpleNamespace(rows_of=lambda name: {"eosinophils": np.array([1, 2]),
                                                             "lymphocytes": np.array([0, 3])}.get(
        name, np.array([], dtype=int)))
    out = checks.internal_controls(tube, Threshold("fixed", 0.5, 0.0, None, 0, ""))
    assert out["eosinophils"]["cd125_pos_share"] == 1.0 and out["lymphocytes"]["cd125_pos_share"] == 0.0
    assert out["basophils"]["events"] == 0 and out["basophils"]["cd125_pos_share"] is None


def test_dim_cd125_check_withholds_a_not_met_piled_at_the_cut():
    def tube(values):
        t = stub_tube({"PE": np.asarray(values) / 4.5})
        t.markers, t.scales = {"CD125": "PE"}, {"PE": LOGICLE}
        t.step = {"blasts": SimpleNamespace(mask=np.ones(len(values), dtype=bool))}.__getitem__
        return t

    cut = Threshold("control_percentile", 1.0 / 4.5, 0.0, 99.5, 100, "")
    settings = load_settings().criterion  # positive_fraction 0.5
    piled = tube([0.5] * 60 + [1.1] * 40)     # 40 % counted, all of them just above the cut
    resolved = tube([0.5] * 60 + [2.5] * 40)  # 40 % counted, well above it
    assert checks.cd125_checks(piled, object(), cut, settings)[0].startswith("dim CD125 check")
    assert checks.cd125_checks(resolved, object(), cut, settings) == []
    assert checks.cd125_checks(piled, None, cut, settings) == []


def test_basophils_are_excluded_against_cd34_when_the_blasts_lack_hla_dr():
    pops = named(dict(MARROW, blasts=[4.78, 4.26, 2.6, 2.8, 0.7, 0.5, 3.0, 2.6]))  # CD117-low too
    assert exclusions.separating_marker(pops) == "CD34"
    c123, c34, note = exclusions.basophil_cuts(pops, "CD34")
    assert 0.87 < c34 < 2.8 and "CD34 between" in note
    assert exclusions.separating_marker(named(MARROW)) == "HLA-DR"


@pytest.mark.parametrize("lymph_share, two_peaks, fails", [
    (0.01, False, False),  # lymphocytes clean under the same cut-off: eosinophils read as neutrophils
    (0.20, True, False),   # a second CD125 peak: neutrophils mixed with eosinophils, no negative reference
    (0.20, False, True),   # the whole SSC-high population and the lymphocytes above it: the cut-off is off
])
def test_cd125_positive_neutrophils_fail_the_check_only_when_the_cut_off_is_to_blame(lymph_share, two_peaks, fails):
    neutrophils = dict(control("negative", 500, 0.6, 0.2), two_peaks=two_peaks)
    controls = {"lymphocytes": control("negative", 500, lymph_share, -0.4), "neutrophils": neutrophils}
    reasons = checks.control_reasons(controls, SETTINGS.checks)
    assert any(r.startswith("internal control check: neutrophils") for r in reasons) is fails


def internal_cut(reference, decades=1.0):
    return Threshold("internal_negative", decades / 4.5, 100.0, 99.5, 400, "internal", reference)



NEGATIVE_BLASTS, POSITIVE_BLASTS = (0.145, 0.088, 0.41), (0.412, 0.046, 0.59)  # cohort2_0173's blasts
LYMPH_CUT = Threshold("internal_negative", 0.241, 133.0, 99.5, 19000, "lymphocytes' 99.5th", "lymphocytes")


@pytest.mark.parametrize("fit, taken", [
    ((NEGATIVE_BLASTS, POSITIVE_BLASTS), True),   # 14 % of the negative blasts above the lymphocytes' cut
    (((0.13, 0.045, 0.41), POSITIVE_BLASTS), False),  # negative blasts as narrow as lymphocytes: they hold
    (((0.26, 0.05, 0.41), POSITIVE_BLASTS), False),   # the lower peak above the lymphocytes' cut: dim positives
    ((NEGATIVE_BLASTS, (0.30, 0.06, 0.59)), False),   # no valley between the peaks
    (None, False),                                   # too few blasts to fit
])
def test_the_blast_valley_replaces_a_lymphocyte_cut_off_inside_the_negative_blasts(fit, taken):
    from cd125gate.analysis import threshold

    scale = Scale("CD125", "arcsinh", {"cofactor": 150.0, "T": 262144.0})
    cut = threshold._blast_valley(fit, LYMPH_CUT, scale, 2000)
    assert (cut is not None) is taken
    if taken:
        assert cut.reference == "blast_valley" and cut.method == "internal_negative"
        assert LYMPH_CUT.value < cut.value < POSITIVE_BLASTS[0] - 2 * POSITIVE_BLASTS[1]
        assert "14% of the negative blasts" in cut.description


def reference_tube(lymph_cd125=(0.5, 0.05), blasts=None, **lymph_markers):
    """The checked stub with CD125 on its lymphocytes drawn as asked (decades) and no neutrophils."""
    tube = checked_tube(blasts or BLAST, dict(LYMPH, **lymph_markers))
    rng = np.random.default_rng(1)
    lymph = tube.step("lymphocytes").mask
    column = tube.channels.index("CD125")
    if isinstance(lymph_cd125, tuple):
        tube.data[lymph, column] = rng.normal(*lymph_cd125, lymph.sum()) / 4.5
    else:
        tube.data[lymph, column] = np.asarray(lymph_cd125) / 4.5
    # the fitted lymphocytes' own centre: every marker at 0.5 decades
    tube.populations = SimpleNamespace(rows_of=lambda name: np.array([], dtype=int), reference_point=True,
                                       reference_mean=lambda marker: 0.5)
    return tube


def test_a_clean_lymphocyte_reference_passes():
    assert checks.reference_checks(reference_tube(), internal_cut("lymphocytes"), SETTINGS.checks) == []


def test_a_lymphocyte_reference_holding_blasts_is_a_reason():
    """The B-ALL tube: the 'lymphocyte' gate held CD34+ blasts, so its cut-off lay in the blasts' CD125."""
    tube = reference_tube(CD34=2.5)
    reasons = checks.reference_checks(tube, internal_cut("lymphocytes"), SETTINGS.checks)
    assert any("carry a blast marker: the reference holds blasts" in r for r in reasons), reasons


def test_a_lymphocyte_reference_with_two_cd125_peaks_is_a_reason():
    rng = np.random.default_rng(2)
    two_peaks = np.concatenate([rng.normal(0.5, 0.05, 300), rng.normal(2.5, 0.05, 100)])
    reasons = checks.reference_checks(reference_tube(two_peaks), internal_cut("lymphocytes"), SETTINGS.checks)
    assert any("has two peaks" in r for r in reasons), reasons


def test_a_blast_peak_cut_off_under_the_lymphocytes_is_a_reason():
    """Lymphocytes at 0.5 decades, the 'negative blast peak' cut-off at 0.3: that peak is no negative."""
    tube = reference_tube()
    reasons = checks.reference_checks(tube, internal_cut("blast_peak", decades=0.3), SETTINGS.checks)
    assert reasons and reasons[0].startswith("reference check: ") and "not a negative population" in reasons[0]
    assert checks.reference_checks(tube, internal_cut("blast_peak", decades=1.5), SETTINGS.checks) == []


def test_a_control_tube_cut_off_is_not_judged_as_a_reference():
    cut = Threshold("control_percentile", 0.1, 100.0, 99.5, 400, "control")
    assert checks.reference_checks(reference_tube(CD34=2.5), cut, SETTINGS.checks) == []
