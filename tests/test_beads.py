"""CD125 antigen density from calibration beads: the lot, the standard curve, its QC, and ABC against the truth."""

import json
from dataclasses import replace

import numpy as np
import pytest

from cd125gate.analysis.antigen import bead_curve, beads
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.errors import InputError
from cd125gate.io.fcs import read_fcs
from cd125gate.settings import load_settings
from cd125gate.simulation.beads import LOT, UNITS_PER_MOLECULE, BeadSpec, lot_text, write_beads
from cd125gate.simulation.simulate import CaseSpec, default_cases, write_set
from conftest import input_error

SETTINGS = load_settings()
GOOD_LOT = bead_curve.make_lot(LOT["lot"], "PE", LOT["molecules"], "test")


def curve_of(tmp_path, spec=None, lot=GOOD_LOT, seed=3):
    files = write_beads(tmp_path, spec or BeadSpec(), seed=seed)
    return bead_curve.standard_curve(read_fcs(tmp_path / files["beads"]), "PE-A", lot, SETTINGS)


# -- the lot -------------------------------------------------------------------------------------

def test_a_lot_file_gives_the_dye_and_molecules(tmp_path):
    path = tmp_path / "lot.yaml"
    path.write_text(lot_text())
    lot = bead_curve.read_lot(path)
    assert (lot.name, lot.dye, lot.molecules, lot.source) == ("SIM-QB-0001", "PE", tuple(LOT["molecules"]), str(path))


@pytest.mark.parametrize("text, problem", [
    ("dye: PE\nmolecules: [5359, 474, 23843, 62336]\n", "ascending"),
    ("dye: PE\nmolecules: [474, 5359]\n", "3 or more"),
    ("molecules: [474, 5359, 23843, 62336]\n", "dye must be named"),
    ("dye: PE\nmolecules: [474, 5359, 23843, 62336]\nmolecule: 1\n", "unknown key(s) molecule"),
    ("dye: PE\nmolecules: [474, five, 23843]\n", "ascending positive numbers"),
    ("[1, 2]\n", "a mapping"),
])
def test_a_bad_lot_file_is_one_line_naming_it(tmp_path, text, problem):
    path = tmp_path / "lot.yaml"
    path.write_text(text)
    message = input_error(bead_curve.read_lot, path)
    assert message.startswith(str(path)) and problem in message


def test_the_settings_hold_no_lot_by_default_and_one_when_molecules_are_set():
    assert bead_curve.settings_lot(SETTINGS.beads) is None
    settings = load_settings(overrides={"beads": {"lot": "L7", "molecules": [474, 5359, 23843, 62336]}})
    assert bead_curve.settings_lot(settings.beads).molecules == tuple(LOT["molecules"])
    with pytest.raises(InputError, match="beads.molecules"):
        load_settings(overrides={"beads": {"molecules": [5359, 474, 23843]}})
    with pytest.raises(InputError, match="beads.slope_min"):
        load_settings(overrides={"beads": {"slope_min": 1.2, "slope_max": 1.1}})


# -- the standard curve --------------------------------------------------------------------------

def test_the_curve_reads_the_simulated_instrument_back(tmp_path):
    curve = curve_of(tmp_path)
    assert curve.reason is None and len(curve.peaks) == 4
    # One PE molecule is UNITS_PER_MOLECULE detector units: slope 1, intercept -log10 of it.
    assert curve.slope == pytest.approx(1.0, abs=0.01)
    assert curve.intercept == pytest.approx(-np.log10(UNITS_PER_MOLECULE), abs=0.02)
    assert curve.r2 > 0.999 and max(abs(r) for r in curve.residuals) < 0.01
    medians = [p.median for p in curve.peaks]
    assert medians == pytest.approx([m * UNITS_PER_MOLECULE for m in LOT["molecules"]], rel=0.02)


def test_bead_doublets_are_off_the_singlet_gate(tmp_path):
    from cd125gate.analysis.panel import map_panel
    from cd125gate.simulation.beads import simulate_beads

    files = write_beads(tmp_path, BeadSpec(doublet_fraction=0.2), seed=3)
    fcs = read_fcs(tmp_path / files["beads"])
    keep = bead_curve.singlet_beads(fcs, map_panel(fcs.channels, SETTINGS.panel, "x").markers, 4.0)
    labels = simulate_beads(BeadSpec(doublet_fraction=0.2), 3).labels
    assert (labels[keep] == "doublet").mean() < 0.005
    assert keep[labels != "doublet"].mean() > 0.97


@pytest.mark.slow
def test_flowcal_mef_calibration_agrees_on_the_same_beads_and_lot(tmp_path):
    FlowCal = pytest.importorskip("FlowCal")
    files = write_beads(tmp_path, BeadSpec(), seed=3)
    path = tmp_path / files["beads"]
    ours = bead_curve.standard_curve(read_fcs(path), "PE-A", GOOD_LOT, SETTINGS)
    data = FlowCal.io.FCSData(str(path))
    data = FlowCal.gate.high_low(data, channels=["FSC-A", "SSC-A"])
    data = FlowCal.gate.density2d(data, channels=["FSC-A", "SSC-A"], gate_fraction=0.85)
    peer = FlowCal.mef.get_transform_fxn(data, mef_values=[LOT["molecules"]], mef_channels=["PE-A"],
                                         clustering_channels=["PE-A"], verbose=False, full_output=True)
    slope, intercept_ln, autofluorescence = peer.fitting["beads_params"][0]
    medians = np.array([p.median for p in ours.peaks])
    assert np.asarray(peer.statistic["values"][0]) == pytest.approx(medians, rel=0.005)
    assert ours.slope == pytest.approx(slope, rel=0.02)
    assert ours.intercept == pytest.approx(intercept_ln / np.log(10), rel=0.02)
    assert ours.autofluorescence == pytest.approx(autofluorescence, abs=0.02 * LOT["molecules"][0])
    grid = np.geomspace(medians[0], medians[-1], 20)
    assert beads.abc(grid, ours) == pytest.approx(peer.fitting["std_crv"][0](grid), rel=0.02)


# -- bead QC: every case that withholds the density ----------------------------------------------

def test_a_missing_peak_is_named(tmp_path):
    curve = curve_of(tmp_path, BeadSpec(levels=(1, 3, 4)))
    assert curve.reason == "bead peak 2 of 4 missing (expected near 5359 molecules)"
    assert curve.slope is None


def test_two_merged_peaks(tmp_path):
    merged = (474.0, 5359.0, 5800.0, 62336.0)  # levels 2 and 3 as good as equal
    curve = curve_of(tmp_path, BeadSpec(molecules=merged))
    assert curve.reason.startswith("two bead peaks merged: peak 2 of 3 holds")


def test_a_saturated_top_peak(tmp_path):
    curve = curve_of(tmp_path, BeadSpec(gain=9.0))  # the brightest level past the detector's range
    assert curve.reason.startswith("bead peak 4 (the brightest) is saturated: ")


@pytest.mark.parametrize("molecules, reason", [
    ((474.0, 5359.0 * 4, 23843.0 * 10, 62336.0 * 30), "bead curve slope 1.67"),   # another product's values
    ((474.0, 23843.0, 30000.0, 62336.0), "bead curve R² 0.9"),                    # a value typed wrong
])
def test_a_fit_outside_its_checks(tmp_path, molecules, reason):
    curve = curve_of(tmp_path, lot=bead_curve.make_lot("L", "PE", list(molecules), "test"))
    assert curve.reason.startswith(reason)
    assert curve.slope is not None  # the fit is reported with the reason


@pytest.mark.parametrize("molecules", [[474, 5359, 23843], [100, 474, 2000, 5359, 23843, 62336]])
def test_a_lot_whose_number_of_peaks_does_not_match(tmp_path, molecules):
    curve = curve_of(tmp_path, lot=bead_curve.make_lot("L", "PE", molecules, "test"))
    assert curve.reason == f"the bead lot lists {len(molecules)} peaks but 4 were found"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Simulated cases with a bead tube, analysed: name -> (truth, density record)."""
    folder = tmp_path_factory.mktemp("beads_batch")
    wanted = {"low_fmo", "high_fmo", "near50_fmo", "high_isotype", "low_nocontrol", "eosinophil_rich"}
    specs = [replace(s, beads=True) for s in default_cases() if s.name in wanted]
    specs.append(CaseSpec("bright", n_events=5000, control_events=4000, cd125_median=6000.0, beads=True))
    # Dim CD125 (~700 molecules, resolved from the control): the blasts' autofluorescence
    # (~60 ABC after compensation) is ~10 % of it.
    specs.append(CaseSpec("dim", n_events=8000, control_events=8000, cd125_median=350.0, cd125_sd=0.12,
                          cd125_pos_fraction=0.8, beads=True))
    truths = write_set(folder, specs, seed=5)
    out = {}
    for name, truth in truths.items():
        control = truth["files"]["control"]
        analysis = analyze_sample(folder / truth["files"]["stained"], control and folder / control, SETTINGS,
                                  beads=folder / "beads.fcs", bead_lot=folder / "beads_lot.yaml")
        out[name] = (truth, analysis.result)
    return folder, out


def test_abc_of_cd125_positive_blasts_is_within_10_percent_of_the_truth(batch):
    _, cases = batch
    checked = 0
    for name, (truth, result) in cases.items():
        density = result.density
        assert density["status"] == "measured", (name, density["reason"])
        if result.cd125_pos_events < 200:
            continue
        true = truth["cd125_abc"]["cd125_pos_blasts_median"]
        if density["control_blasts"] is not None:  # less the background the control tube measures
            assert density["cd125_pos_blasts_specific"] == pytest.approx(true, rel=0.10), name
        if name != "dim":
            assert density["cd125_pos_blasts"]["median"] == pytest.approx(true, rel=0.10), name
        checked += 1
    assert checked >= 6
    # Dim CD125: the blasts' own autofluorescence reads as >10 % more molecules; the control shows it.
    truth, result = cases["dim"]
    true = truth["cd125_abc"]["cd125_pos_blasts_median"]
    assert result.cd125_pos_events >= 200 and result.density["cd125_pos_blasts"]["median"] > 1.10 * true
    assert result.density["cd125_pos_blasts_specific"] == pytest.approx(true, rel=0.05)


@pytest.mark.slow
def test_on_a_varied_cohort_the_abc_is_within_10_percent_wherever_200_blasts_are_positive(tmp_path):
    from cd125gate.simulation.cohort import write_cohort

    truths = write_cohort(tmp_path, 16, 3, (20_000, 60_000), beads=True)
    errors = {}
    for name, truth in truths.items():
        files = truth["files"]
        control = files["control"] and tmp_path / files["control"]
        result = analyze_sample(tmp_path / files["stained"], control, SETTINGS, beads=tmp_path / files["beads"],
                                bead_lot=tmp_path / files["bead_lot"]).result
        if result.cd125_pos_events is None or result.cd125_pos_events < 200:
            continue
        density, true = result.density, truth["cd125_abc"]["cd125_pos_blasts_median"]
        measured = density["cd125_pos_blasts_specific"] or density["cd125_pos_blasts"]["median"]
        errors[name] = measured / true - 1
    assert len(errors) >= 8
    assert max(abs(e) for e in errors.values()) < 0.10, errors


def test_the_density_record_carries_its_lot_fit_and_background(batch):
    folder, cases = batch
    truth, result = cases["high_fmo"]
    density = result.density
    assert density["lot"] == {"name": "SIM-QB-0001", "dye": "PE", "molecules": LOT["molecules"],
                              "source": str(folder / "beads_lot.yaml")}
    assert density["curve"]["r2"] > 0.999 and len(density["curve"]["peaks"]) == 4
    assert density["beads"]["sha256"] and density["unit"] == "ABC"
    # The control tube's blasts (background) sit far below the positive blasts.
    assert density["control_blasts"]["median"] < 0.1 * density["cd125_pos_blasts"]["median"]
    assert cases["low_nocontrol"][1].density["control_blasts"] is None
    from cd125gate import results

    results.validate(result)
    assert json.loads(json.dumps(result.to_json()))["density"] == density


def test_beads_from_another_instrument_or_voltage_withhold_the_density(tmp_path):
    write_set(tmp_path, [CaseSpec("s1", n_events=3000, control=None, beads=True)], seed=2)
    tube = read_fcs(tmp_path / "s1_stained.fcs")
    assert beads.acquisition_problem(tube, read_fcs(tmp_path / "beads.fcs"), "PE-A") is None
    other = write_beads(tmp_path, BeadSpec(name="other", instrument="FACSCanto II"))
    assert beads.acquisition_problem(tube, read_fcs(tmp_path / other["beads"]), "PE-A") == \
        "beads from another instrument ($CYT 'FACSCanto II', the tube's 'cd125gate simulator')"
    volts = write_beads(tmp_path, BeadSpec(name="volts", voltage="530"))
    assert beads.acquisition_problem(tube, read_fcs(tmp_path / volts["beads"]), "PE-A") == \
        "beads at another PE-A detector setting ($PnV 530, the tube's 480)"


def test_another_serial_withholds_and_the_whole_sample_still_decides(tmp_path):
    write_set(tmp_path, [CaseSpec("s1", n_events=4000, cd125_pos_fraction=0.8, beads=True)], seed=2)
    tube = (tmp_path / "s1_stained.fcs").read_bytes()
    (tmp_path / "s1_stained.fcs").write_bytes(tube.replace(b"SIM-0001", b"SIM-0002"))
    before = (tmp_path / "beads.fcs").read_bytes()
    result = analyze_sample(tmp_path / "s1_stained.fcs", tmp_path / "s1_control.fcs", SETTINGS,
                            beads=tmp_path / "beads.fcs", bead_lot=tmp_path / "beads_lot.yaml").result
    assert result.criterion == "MET"
    assert result.density["status"] == "withheld"
    assert result.density["reason"] == ("density withheld: beads from another instrument serial "
                                        "($CYTSN 'SIM-0001', the tube's 'SIM-0002')")
    assert "cd125_pos_blasts" not in result.density
    assert (tmp_path / "beads.fcs").read_bytes() == before  # inputs are never modified


def test_an_unreadable_bead_file_or_no_lot_withholds_and_never_fails_the_sample(tmp_path):
    write_set(tmp_path, [CaseSpec("s1", n_events=4000, cd125_pos_fraction=0.8, beads=True)], seed=2)
    broken = tmp_path / "broken.fcs"
    broken.write_bytes((tmp_path / "beads.fcs").read_bytes()[:3000])
    result = analyze_sample(tmp_path / "s1_stained.fcs", tmp_path / "s1_control.fcs", SETTINGS,
                            beads=broken, bead_lot=tmp_path / "beads_lot.yaml").result
    assert result.criterion == "MET" and result.density["status"] == "withheld"
    assert result.density["reason"].startswith(f"density withheld: {broken}: ")
    nolot = analyze_sample(tmp_path / "s1_stained.fcs", tmp_path / "s1_control.fcs", SETTINGS,
                           beads=tmp_path / "beads.fcs").result
    assert nolot.density["reason"].startswith("density withheld: no bead lot")


def test_beads_of_another_dye_measure_nothing(tmp_path):
    write_set(tmp_path, [CaseSpec("s1", n_events=3000, control=None, beads=True)], seed=2)
    result = analyze_sample(tmp_path / "s1_stained.fcs", None, SETTINGS, beads=tmp_path / "beads.fcs",
                            bead_lot=tmp_path / "beads_lot.yaml", meta={"cd125_fluorochrome": "APC"}).result
    assert result.density["status"] == "not_measured"
    assert result.density["reason"] == "not measured: beads are PE, CD125 is on APC"
    assert result.density["curve"] is None and result.density["beads"]["sha256"] is None


def test_the_cd125_dye_is_read_from_the_channel_when_not_recorded():
    from cd125gate.io.fcs import Channel

    def channel(name, stain):
        return Channel(1, name, stain, 262144.0, 32, (0.0, 0.0), None)

    assert beads.cd125_fluorochrome(None, channel("PE-A", "CD125")) == "PE"
    assert beads.cd125_fluorochrome(None, channel("FL2-A", "CD125 PE-Cy7")) == "PE-Cy7"
    assert beads.cd125_fluorochrome(None, channel("FL4-A", "IL-5Ra APC")) == "APC"
    assert beads.cd125_fluorochrome("BV421", channel("PE-A", "CD125")) == "BV421"
    assert beads.cd125_fluorochrome(None, channel("FL2-A", "CD125")) is None


def test_the_screening_table_carries_the_density_lot_and_fit(batch):
    from cd125gate import results
    from cd125gate.review import screening

    _, cases = batch
    rows = [screening.ScreeningRow.of_result(result) for _, result in cases.values()]
    document = screening.screening_document(rows)
    assert results.schema_error(json.loads(json.dumps(document)), "screening.schema.json") is None
    row = next(r for r in rows if r.sample_id == "high_fmo_stained")
    density = cases["high_fmo"][1].density
    assert (row.density, row.abc_cd125_pos_median, row.abc_control_blasts_median, row.bead_lot) == \
        ("measured", density["cd125_pos_blasts"]["median"], density["control_blasts"]["median"], "SIM-QB-0001")
    assert row.bead_r2 == density["curve"]["r2"] and row.bead_slope == density["curve"]["slope"]
    header, *lines = screening.format_tsv(rows).splitlines()
    assert "abc_cd125_pos_median" in header.split("\t") and len(lines) == len(rows)


def test_a_result_without_beads_has_no_density_and_empty_columns(batch):
    from cd125gate.review import screening

    result = batch[1]["high_fmo"][1].replace(density=None)
    assert "density" not in result.to_json()
    row = screening.ScreeningRow.of_result(result)
    assert {getattr(row, name) for name in beads.SCREENING_COLUMNS} == {None}


def test_the_page_and_the_signout_show_the_density_with_lot_and_fit_and_link_the_bead_figure(tmp_path):
    from cd125gate.results.outputs import write_outputs
    from cd125gate.review import report, report_samples, signout

    data = tmp_path / "data"
    write_set(data, [CaseSpec("s1", n_events=4000, cd125_pos_fraction=0.8, beads=True)], seed=2)
    analysis = analyze_sample(data / "s1_stained.fcs", data / "s1_control.fcs", SETTINGS, sample_id="s1",
                              beads=data / "beads.fcs", bead_lot=data / "beads_lot.yaml")
    result = write_outputs(analysis, tmp_path / "out" / "s1")
    assert result.outputs["beads_png"] == "beads.png" and (tmp_path / "out/s1/beads.png").is_file()
    density = result.density
    median = f"{density['cd125_pos_blasts']['median']:,.0f}"
    fit = f"{density['curve']['slope']:.4f} × log10(CD125) + {density['curve']['intercept']:.4f}"

    report.write_page(report_samples.load_samples(tmp_path / "out"), tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert f"CD125+ blasts: median {median} ABC" in page and "lot SIM-QB-0001" in page and fit in page
    assert '<a href="report_files/s0/beads.png" target="_blank" class="bead-qc">bead QC figure</a>' in page
    assert (tmp_path / "report_files/s0/beads.png").read_bytes() == (tmp_path / "out/s1/beads.png").read_bytes()

    figure = signout.signout_figure(result)
    text = " ".join(t.get_text() for t in figure.texts)
    assert "CD125 antigen density (calibration beads)" in text
    assert f"median {median} ABC" in text and "lot SIM-QB-0001" in text and f"{density['curve']['r2']:.5f}" in text


def test_a_sample_without_beads_shows_no_density():
    from cd125gate.analysis.antigen import beads as module

    assert module.density_lines(None) == []


@pytest.mark.slow
def test_the_workflow_passes_the_bead_tube_and_lot_and_a_sample_without_beads_has_no_density(tmp_path):
    from conftest import run_snakemake, screening_rows

    data = tmp_path / "data"
    write_set(data, [CaseSpec("with_beads", n_events=4000, cd125_pos_fraction=0.8, beads=True),
                     CaseSpec("no_beads", n_events=4000, cd125_pos_fraction=0.2)], seed=4)
    sheet = (data / "samples.tsv").read_text()
    assert sheet.splitlines()[0].endswith("\tbeads\tbead_lot") and sheet.splitlines()[2].endswith("\t\t")
    outdir = tmp_path / "out"
    proc = run_snakemake(tmp_path, data / "samples.tsv", outdir, "analyze_chunk=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = screening_rows(outdir)
    assert rows["with_beads"]["density"] == "measured" and rows["with_beads"]["bead_lot"] == "SIM-QB-0001"
    assert rows["no_beads"]["density"] is None and rows["no_beads"]["abc_cd125_pos_median"] is None
    assert (outdir / "samples/with_beads/beads.png").is_file()
    assert not (outdir / "samples/no_beads/beads.png").exists()
    assert "bead QC figure" in (outdir / "report.html").read_text()


def test_the_bead_model_recovers_a_known_bead_autofluorescence():
    """slope * log10(median) + intercept = log10(molecules + autofluorescence), as FlowCal models beads."""
    molecules = np.array([474.0, 5359.0, 23843.0, 62336.0])
    medians = 10 ** ((np.log10(molecules + 60.0) - 0.35) / 1.02)
    slope, intercept, r2, residuals, auto = bead_curve._bead_model(medians, molecules)
    assert (slope, intercept, auto) == pytest.approx((1.02, 0.35, 60.0), rel=1e-3)
    assert r2 == pytest.approx(1.0) and np.abs(residuals).max() < 1e-6
