"""The simulator: physics, truth, file formats, determinism and the bundled test_data."""

import hashlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import flowio
import flowkit
import numpy as np
import pytest

from cd125gate.cli import main
from cd125gate.simulation.instrument import SimulatedTube, spillover_matrix
from cd125gate.simulation.simulate import (
    CaseSpec,
    default_cases,
    expected_criterion,
    simulate_case,
    write_case,
)
from cd125gate.simulation.specimen import CLOG_RATE

ROOT = Path(__file__).parents[1]
TEST_DATA = ROOT / "test_data"


@pytest.fixture(scope="module")
def fmo_case():
    return simulate_case(CaseSpec("physics", n_events=20000), seed=11)


@pytest.fixture(scope="module")
def truth():
    return json.loads((TEST_DATA / "truth.json").read_text())


def blasts(tube, label=None):
    mask = tube.truth_blasts()
    return mask & (tube.labels == label) if label else mask


def test_positive_blasts_clear_the_fmo_cutoff(fmo_case):
    stained, control, _ = fmo_case
    cut = np.percentile(control.compensated("PE-A")[blasts(control)], 99.5)
    positive = stained.compensated("PE-A")[blasts(stained, "blast_cd125pos")]
    negative = stained.compensated("PE-A")[blasts(stained, "blast_cd125neg")]
    assert (positive > cut).mean() >= 0.99
    assert (negative > cut).mean() < 0.01
    assert np.median(positive) > 5 * cut


def test_fmo_cd125_is_spillover_and_autofluorescence_only(fmo_case):
    _, control, _ = fmo_case
    m = blasts(control)
    raw_pe, raw_fitc = control.column("PE-A")[m], control.column("FITC-A")[m]
    # Without the antibody, PE-A on blasts follows CD34-FITC at the FITC->PE coefficient...
    slope = np.polyfit(raw_fitc, raw_pe, 1)[0]
    assert slope == pytest.approx(spillover_matrix()[0, 1], abs=0.02)
    # ...and compensation leaves autofluorescence: near zero, some values negative.
    comp = control.compensated("PE-A")[m]
    assert abs(np.median(comp)) < 100
    assert (comp < 0).mean() > 0.01
    assert abs(np.polyfit(raw_fitc, comp, 1)[0]) < 0.02


def test_negative_blasts_look_like_fmo_blasts(fmo_case):
    stained, control, _ = fmo_case
    neg = np.percentile(stained.compensated("PE-A")[blasts(stained, "blast_cd125neg")], [50, 95])
    fmo = np.percentile(control.compensated("PE-A")[blasts(control)], [50, 95])
    assert np.allclose(neg, fmo, atol=15)


def test_isotype_control_shifts_a_little():
    spec = CaseSpec("iso", n_events=8000, control="isotype")
    stained, isotype, _ = simulate_case(spec, seed=3)
    _, fmo, _ = simulate_case(replace(spec, control="fmo"), seed=3)
    iso_med = np.median(isotype.compensated("PE-A")[blasts(isotype)])
    fmo_med = np.median(fmo.compensated("PE-A")[blasts(fmo)])
    pos_med = np.median(stained.compensated("PE-A")[blasts(stained, "blast_cd125pos")])
    assert fmo_med + 20 < iso_med < pos_med / 5


def test_control_cd125_label_follows_the_spec():
    spec = CaseSpec("label", n_events=500)
    assert simulate_case(replace(spec, control_cd125_stain="CD125"), 1)[1].stains[5] == "CD125"
    unlabelled = simulate_case(spec, 1)[1]
    assert unlabelled.channels[5] == "PE-A" and unlabelled.stains[5] is None


def test_populations_where_a_cytometrist_expects_them(fmo_case):
    stained = fmo_case[0]

    def median(channel, label, comp=True):
        values = stained.compensated(channel) if comp else stained.column(channel)
        return np.median(values[stained.labels == label])

    assert median("BV510-A", "blast_cd125neg") < median("BV510-A", "lymphocyte") / 4   # CD45 dim
    assert median("SSC-A", "blast_cd125neg", False) < median("SSC-A", "neutrophil", False) / 4
    assert median("PE-Cy7-A", "basophil") > 5 * median("PE-Cy7-A", "blast_cd125neg")  # CD123
    assert median("PE-A", "eosinophil") > 5 * median("PE-A", "blast_cd125pos")
    assert median("BV421-A", "dead") > 20 * median("BV421-A", "lymphocyte")            # viability
    assert median("PE-A", "dead") > 200                     # nonspecific binding
    assert median("FSC-A", "debris", False) < median("FSC-A", "lymphocyte", False) / 3
    # Eosinophils are autofluorescent, most in the violet detector.
    assert median("BV421-A", "eosinophil") > 4 * median("BV421-A", "neutrophil")


def test_cd34_negative_blasts():
    stained, _, _ = simulate_case(CaseSpec("neg34", n_events=4000, cd34_negative=True), seed=2)
    cd34 = stained.compensated("FITC-A")[blasts(stained)]
    lymph = stained.compensated("FITC-A")[stained.labels == "lymphocyte"]
    assert np.median(cd34) < np.percentile(lymph, 99)


def test_doublets_fall_off_the_fsc_diagonal(fmo_case):
    stained = fmo_case[0]
    ratio = stained.column("FSC-H") / stained.column("FSC-A")
    singlet = ratio[np.isin(stained.labels, ["lymphocyte", "monocyte", "blast_cd125pos"])]
    doublet = ratio[stained.labels == "doublet"]
    assert (doublet < np.percentile(singlet, 0.5)).mean() > 0.95


def test_ceiling_events_are_clipped_and_not_truth_blasts(fmo_case):
    stained = fmo_case[0]
    ceiling = stained.labels == "ceiling"
    assert stained.at_ceiling()[ceiling].all()
    assert stained.events[:, :-1].max() <= 262143
    assert not (stained.at_ceiling() & stained.truth_blasts()).any()


def test_clog_window_has_a_flow_rate_jump_and_lower_signal():
    stained, _, truth = simulate_case(CaseSpec("clog", n_events=20000, clog=True), seed=5)
    t = stained.column("Time") * 0.01
    clog = stained.labels == "clog"
    start, stop = t[clog].min(), t[clog].max()
    inside = clog.sum() / (stop - start)
    outside = (~clog).sum() / (t.max() - t.min() - (stop - start))
    assert inside / outside == pytest.approx(CLOG_RATE, rel=0.15)
    assert ((t >= start) & (t <= stop) == clog).all()
    assert np.median(stained.column("FSC-A")[clog]) < 0.9 * np.median(stained.column("FSC-A")[~clog])
    assert truth["populations"]["stained"]["clog"] == clog.sum()
    assert np.all(np.diff(t) >= 0)


def test_truth_counts_match_the_tube(fmo_case):
    stained, control, truth = fmo_case
    assert sum(truth["populations"]["stained"].values()) == truth["events"]["stained"] == 20000
    assert truth["blasts"] == stained.truth_blasts().sum()
    assert truth["true_fraction"] == pytest.approx(0.6, abs=0.01)
    assert truth["cd125_pos_blasts"] == blasts(stained, "blast_cd125pos").sum()
    assert truth["expected_criterion"] == "MET"
    json.dumps(truth, allow_nan=False)


def test_missing_cd125_channel(tmp_path):
    spec = CaseSpec("nocd125", n_events=2000, drop_cd125_channel=True)
    truth = write_case(tmp_path, spec, seed=1)
    flow = flowio.FlowData(str(tmp_path / truth["files"]["stained"]))
    assert "PE-A" not in flow.pnn_labels and "CD125" not in flow.text.values()
    assert flow.text["spillover"].startswith("7,FITC-A,PerCP-Cy5-5-A,")
    assert truth["expected_criterion"] == "FAILED"


def test_expected_criterion():
    spec = CaseSpec("x")
    assert expected_criterion(spec, 150, 140)[0] == "REVIEW"
    assert expected_criterion(spec, 3000, int(0.51 * 3000))[0] == "REVIEW"  # the interval holds 50 %
    # near50_fmo made larger: 51 % of 30,000 blasts is MET for the simulator as for the tool
    assert expected_criterion(spec, 30000, int(0.51 * 30000))[0] == "MET"
    assert expected_criterion(spec, 300, 165)[0] == "REVIEW"  # 55%, but the interval straddles 50%
    assert expected_criterion(spec, 2000, 1100)[0] == "MET"
    assert expected_criterion(spec, 2000, 800)[0] == "NOT_MET"
    assert expected_criterion(replace(spec, corrupt=True), 2000, 1600)[0] == "FAILED"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    spec = CaseSpec("det", n_events=3000)
    for folder, seed in (("a", 4), ("b", 4), ("c", 5)):
        write_case(tmp_path / folder, spec, seed)
    def read(folder, role="stained"):
        return (tmp_path / folder / f"det_{role}.fcs").read_bytes()

    assert read("a") == read("b") and read("a", "control") == read("b", "control")
    assert read("a") != read("c") and read("a", "control") != read("c", "control")


def test_diva_format_is_big_endian_fcs30_with_spill(tmp_path):
    truth = write_case(tmp_path, CaseSpec("diva", n_events=2000), seed=1, fmt="diva30")
    path = tmp_path / truth["files"]["stained"]
    flow = flowio.FlowData(str(path))
    assert path.read_bytes()[:6] == b"FCS3.0"
    assert flow.text["byteord"] == "4,3,2,1"
    assert "spill" in flow.text and "spillover" not in flow.text
    sample = flowkit.Sample(str(path))
    sample.apply_compensation(sample.metadata["spill"])
    assert np.allclose(sample.compensation.matrix, spillover_matrix())


def test_simulated_file_round_trips_events_and_spillover(tmp_path):
    spec = CaseSpec("rt", n_events=2000)
    stained, _, _ = simulate_case(spec, seed=9)
    truth = write_case(tmp_path, spec, seed=9)
    sample = flowkit.Sample(str(tmp_path / truth["files"]["stained"]))
    assert sample.channels.pnn.tolist() == stained.channels
    assert sample.channels.pns.tolist()[4:12] == stained.stains[4:12]
    raw = sample.get_events(source="raw")
    assert np.array_equal(raw[:, :-1], stained.events[:, :-1])
    sample.apply_compensation(sample.metadata["spillover"])
    assert sample.compensation.detectors == stained.fluor_channels
    assert np.allclose(sample.compensation.matrix, stained.spillover)


def test_corrupt_case_is_unreadable(tmp_path):
    truth = write_case(tmp_path, CaseSpec("bad", n_events=2000, corrupt=True), seed=1)
    with pytest.raises(flowio.exceptions.FCSParsingError):
        flowio.FlowData(str(tmp_path / truth["files"]["stained"]))
    flowio.FlowData(str(tmp_path / truth["files"]["control"]))  # the control tube is intact
    assert truth["expected_criterion"] == "FAILED"


def test_default_cases_cover_the_required_situations():
    cases = {c.name: c for c in default_cases()}
    assert len(cases) == len(default_cases())
    assert {c.control for c in cases.values()} == {"fmo", "isotype", None}
    assert any(c.clog for c in cases.values()) and any(c.cd34_negative for c in cases.values())
    assert any(c.drop_cd125_channel for c in cases.values()) and any(c.corrupt for c in cases.values())
    assert any(c.fmt == "diva30" for c in cases.values())
    assert max(c.basophil_fraction for c in cases.values()) >= 0.08


def test_decided_cases_have_enough_blasts_and_margin(truth):
    decided = [t for t in truth.values() if t["expected_criterion"] in ("MET", "NOT_MET")]
    assert len(decided) >= 8
    for t in decided:
        assert t["blasts"] >= 1000 and abs(t["true_fraction"] - 0.5) >= 0.05, t["name"]
    assert {t["expected_criterion"] for t in truth.values()} == {"MET", "NOT_MET", "REVIEW", "FAILED"}


def test_committed_files_match_truth(truth):
    for t in truth.values():
        for role, fname in t["files"].items():
            if fname is None or (role == "stained" and t["spec"]["corrupt"]):
                continue
            flow = flowio.FlowData(str(TEST_DATA / fname))
            assert flow.event_count == t["events"][role], fname
            assert sum(t["populations"][role].values()) == flow.event_count, fname


def test_sample_sheet_lists_every_case(truth):
    lines = (TEST_DATA / "samples.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["sample_id", "fcs", "control", "patient_id", "specimen", "notes"]
    rows = [line.split("\t") for line in lines[1:]]
    assert sorted(r[0] for r in rows) == sorted(truth)
    for r in rows:
        assert (TEST_DATA / r[1]).is_file() and (r[2] == "" or (TEST_DATA / r[2]).is_file())


def test_committed_test_data_is_what_the_script_makes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_test_data", ROOT / "scripts" / "make_test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_test_data(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in TEST_DATA.iterdir() if p.is_file())
    for name in made:
        made_hash = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert made_hash == hashlib.sha256((TEST_DATA / name).read_bytes()).hexdigest(), name


def test_cli_writes_the_chosen_cases(tmp_path, capsys):
    code = main(["simulate", str(tmp_path), "--events", "1500", "--seed", "3",
                 "--cases", "low_fmo,diva_high", "--format", "fcs31"])
    assert code == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert sorted(truth) == ["diva_high", "low_fmo"]
    assert all(t["events"]["stained"] == 1500 for t in truth.values())
    assert (tmp_path / "diva_high_stained.fcs").read_bytes()[:6] == b"FCS3.1"
    assert "low_fmo" in capsys.readouterr().out


def test_cli_refuses_unknown_cases(tmp_path, capsys):
    assert main(["simulate", str(tmp_path), "--cases", "low_fmo,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "--cases" in err


def test_tube_helpers_agree_with_numpy():
    tube = SimulatedTube(
        events=np.array([[10.0, 5.0, 262143.0], [1.0, 2.0, 3.0]], dtype=np.float32),
        channels=["A", "B", "Time"], stains=[None, None, None], ranges=[262144.0, 262144.0, 10.0],
        spillover=np.array([[1.0, 0.5], [0.0, 1.0]]), fluor_channels=["A", "B"],
        labels=np.array(["blast_cd125pos", "blast_cd125neg"]), keywords={})
    assert tube.compensated("B").tolist() == [0.0, 1.5]
    assert tube.at_ceiling().tolist() == [False, False]  # Time is not a detector
