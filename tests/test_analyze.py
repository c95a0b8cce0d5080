"""One sample end to end: outputs, FlowKit reproduction of the counts, determinism, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.cli import main
from cd125gate.io import gatingml
from cd125gate.results.outputs import write_outputs
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import CaseSpec, write_case

TEST_DATA = Path(__file__).parents[1] / "test_data"


@pytest.fixture(scope="module")
def clog_case(tmp_path_factory):
    """A case with every kind of gate: time anomalies (Boolean), polygons, rectangles."""
    folder = tmp_path_factory.mktemp("clog")
    truth = write_case(folder, CaseSpec("clog", n_events=20000, clog=True, basophil_fraction=0.05), 3)
    return folder / truth["files"]["stained"], folder / truth["files"]["control"]


@pytest.mark.slow
def test_flowkit_reproduces_every_count_from_the_exported_gates(clog_case, tmp_path):
    stained, control = clog_case
    analysis = analyze_sample(stained, control, load_settings(), sample_id="clog")
    result = write_outputs(analysis, tmp_path)
    ours = {g["name"]: g["count"] for g in result.gates}
    assert any(name.startswith("time_anomaly_") for name in ours)
    assert gatingml.reapply(tmp_path / "gates.xml", stained) == ours
    ours_control = {g["name"]: g["count"] for g in result.control_gates}
    assert gatingml.reapply(tmp_path / "control_gates.xml", control) == ours_control


@pytest.mark.slow
def test_a_sample_job_imports_none_of_the_heavy_packages(tmp_path):
    """flowkit, scikit-learn, scipy.stats and pandas each cost ~1-2 s of start-up per job."""
    code = ("import sys; from cd125gate.cli import main\n"
            f"code = main(['analyze', {str(TEST_DATA / 'high_fmo_stained.fcs')!r}, '--control', "
            f"{str(TEST_DATA / 'high_fmo_control.fcs')!r}, '--out', {str(tmp_path)!r}, '--exit-zero'])\n"
            "heavy = {'flowkit', 'sklearn', 'scipy.stats', 'pandas', 'bokeh'} & set(sys.modules)\n"
            "assert code == 0 and not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "result.json").is_file() and (tmp_path / "qc.png").is_file()


@pytest.mark.slow
def test_same_input_gives_byte_identical_outputs(clog_case, tmp_path):
    stained, control = clog_case
    runs = {"a": 1, "b": 1, "two_threads": 2}
    for run, threads in runs.items():
        write_outputs(analyze_sample(stained, control, load_settings(), sample_id="s", threads=threads),
                      tmp_path / run)
    for name in ("result.json", "gates.xml", "control_gates.xml", "gate_counts.tsv", "qc.png"):
        for run in ("b", "two_threads"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / run / name).read_bytes(), (run, name)


@pytest.mark.slow
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
                              load_settings(), sample_id=case, threads=threads)
    write_outputs(analysis, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["criterion"] == "FAILED"
    assert any(reason in r and f"{case}_stained.fcs" in r for r in result["reasons"]), result["reasons"]
    assert (tmp_path / "qc.png").stat().st_size > 0 and (tmp_path / "gates.xml").is_file()


@pytest.mark.parametrize("threads", [1, 2])
def test_unreadable_control_sends_to_review(tmp_path, threads):
    analysis = analyze_sample(TEST_DATA / "high_fmo_stained.fcs", TEST_DATA / "corrupt_stained.fcs",
                              load_settings(), sample_id="x", threads=threads)
    result = analysis.result
    assert result.criterion == "REVIEW"
    assert any("control tube unusable" in r for r in result.reasons)
    assert result.threshold["method"] == "internal_negative"


def test_inputs_are_not_modified(tmp_path):
    files = [TEST_DATA / "clog_stained.fcs", TEST_DATA / "clog_control.fcs"]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    write_outputs(analyze_sample(*files, load_settings(), sample_id="clog"), tmp_path)
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before


def _matrix_csv(path, channels, matrix):
    rows = [",".join(channels)] + [",".join(f"{v:.10g}" for v in row) for row in matrix]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_matrix_csv_overrides_the_file_and_a_wrong_one_is_refused(tmp_path):
    from cd125gate.io.fcs import read_fcs

    fcs = TEST_DATA / "high_fmo_stained.fcs"
    spill = read_fcs(fcs).spillover
    same = _matrix_csv(tmp_path / "same.csv", spill.channels, spill.matrix)
    base = analyze_sample(fcs, TEST_DATA / "high_fmo_control.fcs", load_settings()).result
    override = analyze_sample(fcs, TEST_DATA / "high_fmo_control.fcs", load_settings(),
                              compensation_path=same).result
    assert override.qc["compensation"] == "override"
    assert override.cd125_pos_events == base.cd125_pos_events
    assert override.inputs["compensation"]["sha256"]

    bad = spill.matrix.copy()
    bad[0, 0] = 0.5  # not a unit diagonal
    wrong = _matrix_csv(tmp_path / "wrong.csv", spill.channels, bad)
    failed = analyze_sample(fcs, None, load_settings(), compensation_path=wrong).result
    assert failed.criterion == "FAILED"
    assert "wrong.csv" in failed.reasons[0]


def test_uncompensated_only_when_allowed_and_then_reviewed(tmp_path):
    import numpy as np

    from cd125gate.io.fcs import read_fcs
    from cd125gate.io.fcs_write import write_fcs

    source = read_fcs(TEST_DATA / "high_fmo_stained.fcs")
    plain = tmp_path / "nospill.fcs"
    write_fcs(plain, source.events.astype(np.float32), source.channel_names(),
              stains=[c.stain for c in source.channels], ranges=[c.range for c in source.channels])
    refused = analyze_sample(plain, None, load_settings()).result
    assert refused.criterion == "FAILED"
    allowed = analyze_sample(plain, None, load_settings(overrides={
        "compensation": {"allow_uncompensated": True}})).result
    assert allowed.criterion == "REVIEW"
    assert "uncompensated" in allowed.flags


def test_arcsinh_gates_also_reproduce_in_flowkit(clog_case, tmp_path):
    stained, control = clog_case
    settings = load_settings(overrides={"transform": {"kind": "arcsinh"}})
    analysis = analyze_sample(stained, control, settings, sample_id="asinh")
    result = write_outputs(analysis, tmp_path)
    ours = {g["name"]: g["count"] for g in result.gates}
    assert gatingml.reapply(tmp_path / "gates.xml", stained) == ours
    assert result.criterion in ("MET", "NOT_MET")


def test_control_from_another_specimen_is_sent_to_review():
    # The blast-rich stained tube with the blast-poor tube's control: not the same specimen.
    analysis = analyze_sample(TEST_DATA / "high_fmo_stained.fcs", TEST_DATA / "few_blasts_control.fcs",
                              load_settings(), sample_id="mixup")
    assert analysis.result.criterion == "REVIEW"
    assert any("control may be from another specimen" in r for r in analysis.result.reasons)


# --- outputs a bench user can trust ------------------------------------------------------------

@pytest.mark.parametrize("control", ["same_file", "same_events"])
def test_a_control_that_is_the_stained_tube_is_refused(tmp_path, capsys, control):
    stained = TEST_DATA / "high_fmo_stained.fcs"
    copy = stained if control == "same_file" else tmp_path / "copy.fcs"
    if control == "same_events":  # the same events written again: another file, another SHA-256
        from cd125gate.io.fcs import read_fcs
        from cd125gate.io.fcs_write import write_fcs

        source = read_fcs(stained)
        write_fcs(copy, source.events, source.channel_names(), stains=[c.stain for c in source.channels],
                  ranges=[c.range for c in source.channels], spillover=source.spillover.matrix,
                  spill_channels=source.spillover.channels)
    status = main(["analyze", str(stained), "--control", str(copy), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"cd125gate: {copy}: the control tube is the same")
    assert json.loads((tmp_path / "out/result.json").read_text())["criterion"] == "FAILED"


@pytest.mark.slow
def test_a_sample_folder_holds_exactly_one_runs_files(tmp_path):
    out = tmp_path / "out"
    stained, control = TEST_DATA / "high_fmo_stained.fcs", TEST_DATA / "high_fmo_control.fcs"
    assert main(["analyze", str(stained), "--control", str(control), "--out", str(out), "--quiet",
                 "--plot-formats", "png,svg"]) == 0
    with_control = json.loads((out / "result.json").read_text())["outputs"]
    assert with_control["qc_png"] == "qc.png" and with_control["qc_control_png"] == "qc_control.png"
    assert with_control["qc_svg"] == "qc.svg" and with_control["control_gates"] == "control_gates.xml"
    assert with_control["qc_key_blast_gate_png"] == "qc_key_blast_gate.png"  # the printed key panels, PNG only
    assert with_control["qc_key_cd125_png"] == "qc_key_cd125.png" and "qc_key_cd125_svg" not in with_control
    (out / "notes.txt").write_text("the user's own file")
    assert main(["analyze", str(stained), "--out", str(out), "--quiet"]) == 0  # control taken off
    outputs = json.loads((out / "result.json").read_text())["outputs"]
    assert sorted(p.name for p in out.iterdir()) == sorted(list(outputs.values()) + ["notes.txt"])
    assert not (out / "qc_control.png").exists() and not (out / "control_gates.xml").exists()
    main(["analyze", str(TEST_DATA / "corrupt_stained.fcs"), "--out", str(out), "--quiet"])
    assert json.loads((out / "result.json").read_text())["criterion"] == "FAILED"
    assert not list(out.glob("qc_key_*"))  # a FAILED card has no key panels: the earlier run's are gone


@pytest.mark.slow
def test_exit_status_tells_the_outcomes_apart(tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    truth = write_case(few, CaseSpec("tiny", n_events=300, control=None), 1)
    cases = {
        "met": ([str(TEST_DATA / "high_fmo_stained.fcs"), "--control", str(TEST_DATA / "high_fmo_control.fcs")], 0),
        "review": ([str(TEST_DATA / "few_blasts_stained.fcs"), "--control",
                    str(TEST_DATA / "few_blasts_control.fcs")], 3),
        "failed": ([str(few / truth["files"]["stained"])], 4),
        "missing": ([str(tmp_path / "nowhere.fcs")], 2),
    }
    for name, (args, expected) in cases.items():
        assert main(["analyze", *args, "--out", str(tmp_path / name), "--quiet"]) == expected, name
        assert main(["analyze", *args, "--out", str(tmp_path / name), "--quiet", "--exit-zero"]) == 0, name
    err = capsys.readouterr().err
    assert err.count(f"cd125gate: {tmp_path / 'nowhere.fcs'}: ") == 1 and "Traceback" not in err
    assert json.loads((tmp_path / "missing/result.json").read_text())["criterion"] == "FAILED"


def test_progress_on_stderr_unless_quiet(tmp_path, capsys):
    args = ["analyze", str(TEST_DATA / "high_fmo_stained.fcs"), "--out", str(tmp_path)]
    main(args)
    err = capsys.readouterr().err
    for stage in ("read", "compensate_transform", "gate", "threshold_statistics", "figures and files"):
        assert f"  {stage} " in err
    assert f"results: {tmp_path / 'result.json'}" in err
    main(args + ["--quiet"])
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    import subprocess
    import sys

    files = [str(p) for p in sorted(TEST_DATA.glob("*_stained.fcs"))]
    script = "import sys; from cd125gate.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(f"{sys.executable} -c '{script}' inspect {' '.join(files)} | head -c 10",
                          shell=True, capture_output=True, text=True)
    assert proc.stdout and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_assay_metadata_and_the_cd125_reagent_are_recorded(tmp_path):
    settings = load_settings(overrides={"panel": {"cd125_reagent": {"clone": "A14", "fluorochrome": "PE",
                                                                     "lot": "L1"}}})
    result = analyze_sample(TEST_DATA / "high_fmo_stained.fcs", None, settings,
                            meta={"cd125_lot": "L2"}).result
    assert (result.assay["cd125_clone"], result.assay["cd125_fluorochrome"], result.assay["cd125_lot"]) == \
        ("A14", "PE", "L2")   # the sample's own lot wins over the panel's
    assert set(result.assay) >= {"acquisition_date", "instrument", "operator", "tube_name"}
    failed = analyze_sample(TEST_DATA / "no_cd125_stained.fcs", None, settings).result
    assert failed.criterion == "FAILED" and failed.assay["cd125_lot"] == "L1"


# --- already compensated data -------------------------------------------------------------------

def _precompensated_copy(source_path, path, comp_names, keywords=None):
    """``source_path``'s events compensated with its own $SPILLOVER and written without a matrix,
    its fluorescence channels renamed ``Comp-...`` (as FlowJo exports them) when ``comp_names``."""
    from cd125gate.analysis.compensation import choose_matrix, compensate
    from cd125gate.io.fcs import read_fcs
    from cd125gate.io.fcs_write import write_fcs

    source = read_fcs(source_path)
    comp = choose_matrix(source)
    assert comp.source == "file" and not comp.is_identity
    events = compensate(source.events, source.channel_names(), comp)
    names = [f"Comp-{n}" if comp_names and n in comp.channels else n for n in source.channel_names()]
    keywords = dict(keywords or {})
    if "$TIMESTEP" in source.keywords:
        keywords["$TIMESTEP"] = source.keywords["$TIMESTEP"]
    if "Time" in names:  # the reader multiplied Time by $TIMESTEP: store it as the instrument did
        events[:, names.index("Time")] /= float(source.keywords.get("$TIMESTEP", 1))
    write_fcs(path, events.astype(np.float32), names, stains=[c.stain for c in source.channels],
              ranges=[c.range for c in source.channels], keywords=keywords)
    return path


def test_exported_compensated_tubes_are_analysed_flagged_and_reproduce_in_flowkit(clog_case, tmp_path):
    """Comp- channels, no matrix: events used as they are, a flag (not REVIEW), gates FlowKit re-applies."""
    stained, control = (_precompensated_copy(p, tmp_path / f"comp_{p.name}", True) for p in clog_case)
    analysis = analyze_sample(stained, control, load_settings(), sample_id="comp")
    result = write_outputs(analysis, tmp_path / "out")
    assert result.qc["compensation"] == "precompensated"
    assert "precompensated: Comp- channels: exported compensated" in result.flags
    assert not any("compensat" in reason for reason in result.reasons)
    assert "uncompensated" not in result.flags
    assert not any("prior compensation" in w for w in result.warnings)
    gates_xml = (tmp_path / "out" / "gates.xml").read_text()
    assert "spectrumMatrix" not in gates_xml and 'compensation-ref="spill"' not in gates_xml
    ours = {g["name"]: g["count"] for g in result.gates}
    assert gatingml.reapply(tmp_path / "out" / "gates.xml", stained) == ours
    ours_control = {g["name"]: g["count"] for g in result.control_gates}
    assert gatingml.reapply(tmp_path / "out" / "control_gates.xml", control) == ours_control
    # The same tubes compensated by us from their $SPILLOVER give the same answer.
    original = analyze_sample(*clog_case, load_settings(), sample_id="clog").result
    assert original.qc["compensation"] == "file"
    assert not any(flag.startswith("precompensated") for flag in original.flags)
    assert result.criterion == original.criterion
    assert result.cd125_pos_fraction == pytest.approx(original.cd125_pos_fraction, abs=0.01)


def test_declared_precompensated_is_not_sent_to_review_for_no_compensation(tmp_path):
    stained = _precompensated_copy(TEST_DATA / "high_fmo_stained.fcs", tmp_path / "s.fcs", False)
    control = _precompensated_copy(TEST_DATA / "high_fmo_control.fcs", tmp_path / "c.fcs", False)
    # No matrix and no sign in the file: refused, as before.
    assert analyze_sample(stained, control, load_settings()).result.criterion == "FAILED"
    # Per sample, as the workflow passes it: `cd125gate analyze --compensation precompensated`.
    status = main(["analyze", str(stained), "--control", str(control), "--out", str(tmp_path / "out"),
                   "--compensation", "precompensated", "--quiet"])
    per_sample = json.loads((tmp_path / "out" / "result.json").read_text())
    assert status == 0 and per_sample["criterion"] == "MET" and per_sample["reasons"] == []
    assert "precompensated: declared for this sample (compensation: precompensated)" in per_sample["flags"]
    assert per_sample["inputs"]["compensation"] is None and per_sample["qc"]["compensation"] == "precompensated"
    settings = load_settings(overrides={"compensation": {"precompensated": True}})
    in_settings = analyze_sample(stained, control, settings).result
    assert in_settings.criterion == "MET"
    assert "precompensated: declared in the settings (compensation.precompensated)" in in_settings.flags
    assert in_settings.cd125_pos_events == per_sample["cd125_pos_events"]


def test_declared_precompensated_is_not_compensated_again(tmp_path):
    """Declared for a tube that still carries a real $SPILLOVER: the matrix is not applied."""
    declared = analyze_sample(TEST_DATA / "high_fmo_stained.fcs", TEST_DATA / "high_fmo_control.fcs",
                              load_settings(), compensation_path="precompensated")
    assert declared.compensation.source == "precompensated" and not declared.compensation.applied
    assert any("the file's $SPILLOVER is not applied" in f for f in declared.result.flags)
    stained = declared.stained
    cd125 = stained.markers["CD125"]
    raw = stained.fcs.column(cd125)
    # settle recomputed a few events' values from the raw events: all are the raw values, transformed.
    from cd125gate.analysis.transforms import forward

    np.testing.assert_allclose(stained.column(cd125), forward(stained.scales[cd125], raw), atol=1e-9)


def test_a_control_without_the_stained_tubes_sign_of_compensation_is_warned_about(tmp_path):
    stained = _precompensated_copy(TEST_DATA / "high_fmo_stained.fcs", tmp_path / "s.fcs", False,
                                   {"$CYT": "Cytomics FC 500", "$DFC1TO2": "21.10"})
    control = _precompensated_copy(TEST_DATA / "high_fmo_control.fcs", tmp_path / "c.fcs", False)
    result = analyze_sample(stained, control, load_settings()).result
    assert "precompensated: compensated by the instrument: $DFCnTOm keywords (Cytomics FC 500)" in result.flags
    assert ("control tube: no sign of prior compensation in the file, unlike the stained tube "
            "(compensated by the instrument: $DFCnTOm keywords (Cytomics FC 500)); used as it is") in result.warnings
    assert result.criterion == "MET"
