"""One sample end to end: outputs, FlowKit reproduction of the counts, determinism, bad input."""

import json
from pathlib import Path

import pytest

from cd125gate import gatingml
from cd125gate.analyze import analyze_sample
from cd125gate.outputs import write_outputs
from cd125gate.cli import main
from cd125gate.config import load_config
from cd125gate.simulate import CaseSpec, write_case

TEST_DATA = Path(__file__).parents[1] / "test_data"


@pytest.fixture(scope="module")
def clog_case(tmp_path_factory):
    """A case with every kind of gate: time anomalies (Boolean), polygons, rectangles."""
    folder = tmp_path_factory.mktemp("clog")
    truth = write_case(folder, CaseSpec("clog", n_events=20000, clog=True, basophil_fraction=0.05), 3)
    return folder / truth["files"]["stained"], folder / truth["files"]["control"]


def test_flowkit_reproduces_every_count_from_the_exported_gates(clog_case, tmp_path):
    stained, control = clog_case
    analysis = analyze_sample(stained, control, load_config(), sample_id="clog")
    write_outputs(analysis, tmp_path)
    ours = {g["name"]: g["count"] for g in analysis.result.gates}
    assert any(name.startswith("time_anomaly_") for name in ours)
    assert gatingml.reapply(tmp_path / "gates.xml", stained) == ours
    ours_control = {g["name"]: g["count"] for g in analysis.result.control_gates}
    assert gatingml.reapply(tmp_path / "control_gates.xml", control) == ours_control


def test_same_input_gives_byte_identical_outputs(clog_case, tmp_path):
    stained, control = clog_case
    runs = {"a": 1, "b": 1, "two_threads": 2}
    for run, threads in runs.items():
        write_outputs(analyze_sample(stained, control, load_config(), sample_id="s", threads=threads),
                      tmp_path / run)
    for name in ("result.json", "gates.xml", "control_gates.xml", "gate_counts.tsv", "qc.png"):
        for run in ("b", "two_threads"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / run / name).read_bytes(), (run, name)


def test_cli_writes_a_schema_valid_result(tmp_path, capsys):
    status = main(["analyze", str(TEST_DATA / "high_fmo_stained.fcs"),
                   "--control", str(TEST_DATA / "high_fmo_control.fcs"),
                   "--out", str(tmp_path), "--sample-id", "high_fmo", "--patient-id", "P1"])
    assert status == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["criterion"] == "MET"
    assert result["patient_id"] == "P1"
    assert result["inputs"]["fcs"]["sha256"] and result["inputs"]["control"]["sha256"]
    assert "high_fmo: MET" in capsys.readouterr().out
    for name in result["outputs"].values():
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case, reason", [
    ("corrupt", "truncated"),
    ("no_cd125", "CD125 not found"),
])
def test_unanalysable_tube_fails_with_its_reason(tmp_path, case, reason, threads):
    analysis = analyze_sample(TEST_DATA / f"{case}_stained.fcs", TEST_DATA / f"{case}_control.fcs",
                              load_config(), sample_id=case, threads=threads)
    write_outputs(analysis, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["criterion"] == "FAILED"
    assert any(reason in r and f"{case}_stained.fcs" in r for r in result["reasons"]), result["reasons"]
    assert (tmp_path / "qc.png").stat().st_size > 0 and (tmp_path / "gates.xml").is_file()


@pytest.mark.parametrize("threads", [1, 2])
def test_unreadable_control_sends_to_review(tmp_path, threads):
    analysis = analyze_sample(TEST_DATA / "high_fmo_stained.fcs", TEST_DATA / "corrupt_stained.fcs",
                              load_config(), sample_id="x", threads=threads)
    result = analysis.result
    assert result.criterion == "REVIEW"
    assert any("control tube unusable" in r for r in result.reasons)
    assert result.threshold["method"] == "internal_negative"


def test_inputs_are_not_modified(tmp_path):
    files = [TEST_DATA / "clog_stained.fcs", TEST_DATA / "clog_control.fcs"]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    write_outputs(analyze_sample(*files, load_config(), sample_id="clog"), tmp_path)
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before


def _matrix_csv(path, channels, matrix):
    rows = [",".join(channels)] + [",".join(f"{v:.10g}" for v in row) for row in matrix]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_matrix_csv_overrides_the_file_and_a_wrong_one_is_refused(tmp_path):
    from cd125gate.fcs import read_fcs

    fcs = TEST_DATA / "high_fmo_stained.fcs"
    spill = read_fcs(fcs).spillover
    same = _matrix_csv(tmp_path / "same.csv", spill.channels, spill.matrix)
    base = analyze_sample(fcs, TEST_DATA / "high_fmo_control.fcs", load_config()).result
    override = analyze_sample(fcs, TEST_DATA / "high_fmo_control.fcs", load_config(),
                              compensation_path=same).result
    assert override.qc["compensation"] == "override"
    assert override.cd125_pos_events == base.cd125_pos_events
    assert override.inputs["compensation"]["sha256"]

    bad = spill.matrix.copy()
    bad[0, 0] = 0.5  # not a unit diagonal
    wrong = _matrix_csv(tmp_path / "wrong.csv", spill.channels, bad)
    failed = analyze_sample(fcs, None, load_config(), compensation_path=wrong).result
    assert failed.criterion == "FAILED"
    assert "wrong.csv" in failed.reasons[0]


def test_uncompensated_only_when_allowed_and_then_reviewed(tmp_path):
    import numpy as np

    from cd125gate.fcs_write import write_fcs
    from cd125gate.fcs import read_fcs

    source = read_fcs(TEST_DATA / "high_fmo_stained.fcs")
    plain = tmp_path / "nospill.fcs"
    write_fcs(plain, source.events.astype(np.float32), source.channel_names(),
              stains=[c.stain for c in source.channels], ranges=[c.range for c in source.channels])
    refused = analyze_sample(plain, None, load_config()).result
    assert refused.criterion == "FAILED"
    allowed = analyze_sample(plain, None, load_config(overrides={
        "compensation": {"allow_uncompensated": True}})).result
    assert allowed.criterion == "REVIEW"
    assert "uncompensated" in allowed.flags


def test_arcsinh_gates_also_reproduce_in_flowkit(clog_case, tmp_path):
    stained, control = clog_case
    config = load_config(overrides={"transform": {"kind": "arcsinh"}})
    analysis = analyze_sample(stained, control, config, sample_id="asinh")
    write_outputs(analysis, tmp_path)
    ours = {g["name"]: g["count"] for g in analysis.result.gates}
    assert gatingml.reapply(tmp_path / "gates.xml", stained) == ours
    assert analysis.result.criterion in ("MET", "NOT_MET")


def test_control_from_another_specimen_is_sent_to_review():
    # The blast-rich stained tube with the blast-poor tube's control: not the same specimen.
    analysis = analyze_sample(TEST_DATA / "high_fmo_stained.fcs", TEST_DATA / "few_blasts_control.fcs",
                              load_config(), sample_id="mixup")
    assert analysis.result.criterion == "REVIEW"
    assert any("control may be from another specimen" in r for r in analysis.result.reasons)
