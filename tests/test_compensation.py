"""Compensation: matrix CSV reading, validation, choice, and equality with FlowKit."""

import io
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cd125gate.analysis import compensation
from cd125gate.analysis.compensation import (
    Compensation,
    choose_matrix,
    compensate,
    read_matrix_csv,
    validate_matrix,
)
from cd125gate.errors import InputError
from cd125gate.io.fcs import Spillover, read_fcs

DATA = Path(__file__).parents[1] / "test_data" / "flowkit_comp"
FCS = DATA / "test_comp_example.fcs"
CSV = DATA / "comp_complete_example.csv"


@pytest.fixture(scope="module")
def fcs():
    return read_fcs(FCS)


@pytest.fixture(scope="module")
def csv_matrix():
    return read_matrix_csv(CSV)


def flowkit_sample(**kwargs):
    import flowkit as fk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's off-by-one DATA offset
        return fk.Sample(str(FCS), ignore_offset_error=True, **kwargs)


def fake_fcs(names, spillover=None):
    return SimpleNamespace(path="tube.fcs", spillover=spillover, channel_names=lambda: list(names))


# --- read_matrix_csv ----------------------------------------------------------------


def test_reads_flowjo_csv(csv_matrix):
    channels, matrix = csv_matrix
    lines = CSV.read_text().splitlines()
    assert channels == tuple(lines[0].split(","))
    assert matrix.shape == (14, 14) and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, np.loadtxt(CSV, delimiter=",", skiprows=1))


def _variants(channels, matrix):
    """The same matrix written the ways exporters write it."""
    rows = [",".join(f"{v:.6g}" for v in row) for row in matrix]
    header = ",".join(channels)
    labelled = [f"{name},{row}" for name, row in zip(channels, rows)]
    return {
        "bom": "\ufeff" + "\n".join([header, *rows]),
        "hash header (den_comp.csv)": "\n".join(["# " + header, *rows]),
        "tabs and CRLF": "\r\n".join(line.replace(",", "\t") for line in [header, *rows]),
        "spaces, quotes, blank lines, trailing comma": "\n".join(
            ["", " , ".join(f'"{c}"' for c in channels) + ",", "", *[r.replace(",", " , ") + "," for r in rows], ""]),
        "row labels": "\n".join([header, *labelled]),
        "pandas corner cell": "\n".join(["," + header, *labelled]),
    }


@pytest.mark.parametrize("name", list(_variants(("A", "B"), np.eye(2))))  # names only
def test_tolerated_layouts_give_the_same_matrix(tmp_path, csv_matrix, name):
    channels, matrix = csv_matrix
    text = _variants(channels, matrix)[name]
    path = tmp_path / "m.csv"
    path.write_bytes(text.encode("utf-8"))
    got_channels, got = read_matrix_csv(path)
    assert got_channels == channels
    np.testing.assert_allclose(got, matrix, rtol=1e-6)


def test_reads_8_color_csvs_from_shared_corpus():
    folder = Path(__file__).parents[1] / ".." / "shared" / "corpus" / "flowkit" / "8_color_data_set"
    if not folder.is_dir():
        pytest.skip("../shared/corpus is not present")
    channels, matrix = read_matrix_csv(folder / "den_comp.csv")
    assert channels[0] == "TNFa FITC FLR-A" and matrix.shape == (8, 8)
    np.testing.assert_array_equal(np.diag(matrix), np.ones(8))


BAD_CSVS = {
    "": "empty",
    "\n \n": "empty",
    "0.1,0.2\n1,0\n": "no header row",
    "A,B\n1,0\n": "2 channel names but 1 matrix rows",
    "A,B\n1,0\n0,1\n0,0\n": "2 channel names but 3 matrix rows",
    "A,B\n1,0\n0.5\n": "row 3 has 1 values, expected 2",
    "A,B\n1,x\n0,1\n": "row 2: 'x' is not a number",
    "A,,B\n1,0,0\n0,1,0\n0,0,1\n": "empty channel name",
    "A,B\nB,1,0\nA,0,1\n": "row labels (B, A) do not repeat",
}


@pytest.mark.parametrize("text", list(BAD_CSVS))
def test_bad_csv_is_refused_with_the_problem(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_matrix_csv(path)
    assert err.value.source == str(path)
    assert BAD_CSVS[text] in err.value.problem


def test_unreadable_csvs(tmp_path):
    with pytest.raises(InputError, match="cannot read spillover matrix"):
        read_matrix_csv(tmp_path / "missing.csv")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("Ä,B\n1,0\n0,1\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_matrix_csv(latin)


# --- validate_matrix ----------------------------------------------------------------

FILE = ["FSC-A", "SSC-A", "A", "B", "C", "Time"]
GOOD = np.array([[1, 0.1, 0], [0.05, 1, 0.2], [0, 0.01, 1]])


def test_good_matrix_passes():
    validate_matrix(("A", "B", "C"), GOOD, FILE, "m.csv")


@pytest.mark.parametrize("channels, matrix, problem", [
    (("A", "B", "C"), GOOD[:2], "not square"),
    (("A", "B"), GOOD, "3 rows but 2 channel names"),
    ((), np.zeros((0, 0)), "0 rows but 0 channel names"),
    (("A", "B", "C"), np.where(np.eye(3) > 0, 1.0, np.nan), "non-finite"),
    (("A", "B", "B"), GOOD, "twice: B"),
    (("A", "B", "C"), GOOD * 100, "diagonal must be 1"),
    (("A", "B", "C"), GOOD + np.eye(3) * 2e-6, "diagonal must be 1"),
    (("A", "B", "D"), GOOD, "not in the FCS file: D"),
    (("A", "B", "C"), np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1.0]]), "singular"),
    (("A", "B", "C"), np.array([[1, 1 - 1e-8, 0], [1, 1, 0], [0, 0, 1.0]]), "singular"),
])
def test_each_invalid_matrix_is_refused(channels, matrix, problem):
    with pytest.raises(InputError) as err:
        validate_matrix(channels, matrix, FILE, "m.csv")
    assert err.value.source == "m.csv"
    assert problem in err.value.problem


def test_diagonal_within_tolerance_passes():
    validate_matrix(("A", "B", "C"), GOOD + np.eye(3) * 5e-7, FILE, "m.csv")


# --- choose_matrix ------------------------------------------------------------------


def test_file_matrix_by_default(fcs):
    comp = choose_matrix(fcs)
    assert comp.source == "file"
    assert comp.channels == fcs.spillover.channels
    np.testing.assert_array_equal(comp.matrix, fcs.spillover.matrix)
    assert fcs.spillover.keyword in comp.detail and str(FCS) in comp.detail


def test_override_wins_over_file(fcs, csv_matrix):
    comp = choose_matrix(fcs, override_path=CSV)
    assert comp.source == "override"
    np.testing.assert_array_equal(comp.matrix, csv_matrix[1])
    assert not np.array_equal(comp.matrix, fcs.spillover.matrix)  # the test means something
    assert str(CSV) in comp.detail and "replaces" in comp.detail


def test_no_matrix_fails_unless_allowed():
    tube = fake_fcs(FILE)
    with pytest.raises(InputError) as err:
        choose_matrix(tube)
    assert err.value.source == "tube.fcs" and "no spillover matrix" in err.value.problem
    comp = choose_matrix(tube, allow_uncompensated=True)
    assert comp.source == "none" and comp.channels == () and comp.is_identity


def test_invalid_file_matrix_names_the_file_and_keyword():
    bad = Spillover(channels=("A", "B"), matrix=np.array([[1.0, 0.2], [0.1, 0.9]]), keyword="$SPILLOVER")
    with pytest.raises(InputError) as err:
        choose_matrix(fake_fcs(FILE, bad))
    assert err.value.source == "tube.fcs ($SPILLOVER)" and "diagonal" in err.value.problem


def test_invalid_override_names_the_csv(tmp_path):
    path = tmp_path / "other_panel.csv"
    path.write_text("X,Y\n1,0\n0,1\n")
    with pytest.raises(InputError) as err:
        choose_matrix(fake_fcs(FILE), override_path=path)
    assert err.value.source == str(path) and "not in the FCS file: X, Y" in err.value.problem


def test_identity_file_matrix_is_reported_as_identity(tmp_path):
    spill = Spillover(channels=("A", "B"), matrix=np.eye(2), keyword="SPILL")
    assert choose_matrix(fake_fcs(FILE, spill)).is_identity
    path = tmp_path / "abc.csv"
    path.write_text("A,B,C\n" + "\n".join(",".join(map(str, row)) for row in GOOD))
    assert not choose_matrix(fake_fcs(FILE), override_path=path).is_identity


# --- compensate -----------------------------------------------------------------------


def test_reader_gives_flowkits_raw_events(fcs):
    # test_comp_example.npy holds FlowKit's *uncompensated* events of this file
    # (read without preprocessing, so Time is not multiplied by $TIMESTEP).
    expected = np.fromfile(DATA / "test_comp_example.npy", dtype=np.float64).reshape(fcs.events.shape)
    names = fcs.channel_names()
    time = names.index("Time")
    keep = [i for i in range(len(names)) if i != time]
    np.testing.assert_array_equal(fcs.events[:, keep], expected[:, keep])
    np.testing.assert_allclose(fcs.events[:, time], expected[:, time] * fcs.timestep)


@pytest.mark.parametrize("override", [None, CSV])
def test_compensation_equals_flowkit(fcs, override):
    comp = choose_matrix(fcs, override_path=override)
    ours = compensate(fcs.events, fcs.channel_names(), comp)
    sample = flowkit_sample()
    sample.apply_compensation(str(override) if override else sample.metadata["spill"])
    np.testing.assert_allclose(ours, sample.get_events(source="comp"), rtol=1e-12, atol=1e-9)


def test_compensation_undoes_spillover_and_touches_only_matrix_channels(fcs):
    comp = choose_matrix(fcs, override_path=CSV)
    before = fcs.events.copy()
    ours = compensate(fcs.events, fcs.channel_names(), comp)
    np.testing.assert_array_equal(fcs.events, before)  # input untouched
    idx = [fcs.channel_names().index(c) for c in comp.channels]
    others = [i for i in range(len(fcs.channels)) if i not in idx]
    np.testing.assert_array_equal(ours[:, others], before[:, others])
    # spilling the compensated signal again gives the measured signal back
    np.testing.assert_allclose(ours[:, idx] @ comp.matrix, before[:, idx], rtol=1e-9, atol=1e-6)
    assert not np.allclose(ours[:, idx], before[:, idx])


def test_blocks_of_rows_give_flowutils_whole_tube_numbers_to_the_bit(fcs):
    from flowutils.compensate import compensate as flowutils_compensate

    comp = choose_matrix(fcs, override_path=CSV)
    rng = np.random.default_rng(4)
    events = rng.normal(2000, 5000, (3 * compensation.BLOCK_EVENTS + 123, len(fcs.channels)))
    idx = [fcs.channel_names().index(c) for c in comp.channels]
    whole = flowutils_compensate(events, comp.matrix, idx)
    assert np.array_equal(compensate(events, fcs.channel_names(), comp), whole)


def test_uncompensated_is_a_float_copy():
    events = np.arange(12, dtype=np.float32).reshape(4, 3)
    comp = choose_matrix(fake_fcs(["A", "B", "C"]), allow_uncompensated=True)
    out = compensate(events, ["A", "B", "C"], comp)
    assert out.dtype == np.float64 and out is not events
    np.testing.assert_array_equal(out, events)


def test_compensate_refuses_events_without_the_matrix_channels():
    comp = Compensation(("A", "B"), np.eye(2), "file", "")
    with pytest.raises(ValueError, match="B"):
        compensate(np.zeros((2, 2)), ["A", "C"], comp)


# --- FlowKit export -------------------------------------------------------------------


def test_to_flowkit_matrix_compensates_like_ours(fcs):
    comp = choose_matrix(fcs, override_path=CSV)
    matrix = compensation.to_flowkit(comp)
    assert matrix.detectors == list(comp.channels) == matrix.fluorochromes
    np.testing.assert_array_equal(matrix.matrix, comp.matrix)
    sample = flowkit_sample()
    sample.apply_compensation(matrix)
    ours = compensate(fcs.events, fcs.channel_names(), comp)
    np.testing.assert_allclose(ours, sample.get_events(source="comp"), rtol=1e-12, atol=1e-9)
    assert compensation.to_flowkit(Compensation((), np.zeros((0, 0)), "none", "")) is None


def test_matrix_survives_gatingml_round_trip(fcs):
    import flowkit as fk

    comp = choose_matrix(fcs, override_path=CSV)
    strategy = fk.GatingStrategy()
    strategy.add_comp_matrix("spill", compensation.to_flowkit(comp))
    dim = fk.Dimension("PE-A", compensation_ref="spill", range_min=0)
    strategy.add_gate(fk.gates.RectangleGate("pe_pos", [dim]), ("root",))
    handle = io.BytesIO()
    fk.export_gatingml(strategy, handle)
    handle.seek(0)
    parsed = fk.parse_gating_xml(handle)
    np.testing.assert_allclose(parsed.get_comp_matrix("spill").matrix, comp.matrix, rtol=0, atol=0)
    count = parsed.gate_sample(flowkit_sample()).get_gate_count("pe_pos")
    ours = compensate(fcs.events, fcs.channel_names(), comp)[:, fcs.channel_names().index("PE-A")]
    assert count == int((ours >= 0).sum())
    assert 0 < count < len(ours)


# --- already compensated data: how compensation is established -------------------------------

REALDATA = Path(__file__).parents[1] / "test_data" / "realdata"  # copies of ../shared/realdata files
FC500 = REALDATA / "clarient_FI05_000599_tube6.fcs"
AURORA = REALDATA / "aurora_unmixed_INF071.fcs"
SPILL = Spillover(channels=("A", "B"), matrix=np.array([[1.0, 0.2], [0.1, 1.0]]), keyword="$SPILLOVER")


def tube(names=FILE, spillover=None, keywords=None, cytometer=None):
    return SimpleNamespace(path="tube.fcs", spillover=spillover, channel_names=lambda: list(names),
                           keywords=keywords or {}, cytometer=cytometer)


def dfc(**values):
    return {f"$DFC{key[1]}TO{key[3]}": value for key, value in values.items()}


def test_dfc_keywords_mean_compensated_by_the_instrument():
    comp = choose_matrix(tube(keywords=dfc(D1T2="21.10", D2T1="0.70"), cytometer="Cytomics FC 500"))
    assert comp.source == "precompensated" and not comp.applied
    assert comp.detail == "compensated by the instrument: $DFCnTOm keywords (Cytomics FC 500)"
    assert comp.channels == () and compensation.to_flowkit(comp) is None


def test_dfc_keywords_of_zero_are_no_compensation():
    zero = tube(keywords=dfc(D1T2="0.00", D2T1="0"))
    assert compensation.prior_compensation(zero) is None
    with pytest.raises(InputError) as err:
        choose_matrix(zero)
    assert "all 0: the instrument applied no compensation" in err.value.problem
    assert choose_matrix(zero, allow_uncompensated=True).source == "none"


@pytest.mark.parametrize("names, recognised", [
    (["FSC-A", "SSC-A", "Comp-FITC-A", "Comp-PE-A", "Time"], True),
    (["FSC-A", "FSC-H", "SSC-A", "comp-FL1-A", "COMP-FL2-A", "HDR-T"], True),
    (["FSC-A", "SSC-A", "Comp-FITC-A", "PE-A", "Time"], False),   # one channel left raw
    (["FSC-A", "SSC-A", "FITC-A", "PE-A", "Time"], False),
    (["FSC-A", "SSC-A", "Time"], False),                          # no fluorescence at all
])
def test_comp_channels_mean_exported_compensated(names, recognised):
    found = compensation.prior_compensation(tube(names))
    assert found == ("Comp- channels: exported compensated" if recognised else None)


def test_a_comp_named_file_is_recognised_from_the_file(tmp_path):
    from cd125gate.io.fcs_write import write_fcs

    names = ["FSC-A", "SSC-A", "Comp-FITC-A", "Comp-PE-A", "Time"]
    path = tmp_path / "exported.fcs"
    write_fcs(path, np.ones((10, 5)), names, stains=[None, None, "CD45", "CD125", None])
    comp = choose_matrix(read_fcs(path))
    assert comp.source == "precompensated" and comp.detail == "Comp- channels: exported compensated"


UNMIXED = ["FSC-A", "SSC-A", "SSC-B-A", "BV421-A", "PE-A", "AF-A", "Time"]


@pytest.mark.parametrize("keywords, cytometer", [
    ({"CREATOR": "SpectroFlo 3.0.3"}, "Aurora"),
    ({}, "Aurora"),
    ({"CREATOR": "SpectroFlo 2.2"}, None),
    ({}, "Northern Lights"),
])
def test_cytek_unmixed_data_with_an_identity_spillover(keywords, cytometer):
    identity = Spillover(("BV421-A", "PE-A", "AF-A"), np.eye(3) + 1e-6 * np.tri(3, k=-1), "$SPILLOVER")
    comp = choose_matrix(tube(UNMIXED, identity, keywords, cytometer))
    assert comp.source == "precompensated" and not comp.applied
    assert comp.detail.startswith("unmixed spectral data (Cytek ") and comp.detail.endswith(
        "identity $SPILLOVER)")


def test_cytek_post_unmixing_compensation_is_applied():
    """A non-identity $SPILLOVER of unmixed data is the user's compensation after unmixing: applied."""
    matrix = np.eye(3)
    matrix[0, 1] = 0.08
    spill = Spillover(("BV421-A", "PE-A", "AF-A"), matrix, "$SPILLOVER")
    comp = choose_matrix(tube(UNMIXED, spill, {"CREATOR": "SpectroFlo 3.0.3"}, "Aurora"))
    assert comp.source == "file" and comp.applied
    np.testing.assert_array_equal(comp.matrix, matrix)
    assert "compensation applied after unmixing" in comp.detail
    # Raw Aurora data (detector names) with a matrix: a plain file matrix, nothing about unmixing.
    raw = ["FSC-A", "SSC-A", "V1-A", "B2-A", "R3-A"]
    raw_spill = Spillover(("V1-A", "B2-A", "R3-A"), matrix, "$SPILLOVER")
    raw_comp = choose_matrix(tube(raw, raw_spill, {"CREATOR": "SpectroFlo 3.0.3"}, "Aurora"))
    assert raw_comp.source == "file" and "unmixing" not in raw_comp.detail


def test_an_identity_spillover_alone_is_no_evidence():
    """Conventional instruments write an identity matrix when no compensation was set up."""
    names = ["FSC-A", "SSC-A", "FITC-A", "PE-A"]
    identity = Spillover(("FITC-A", "PE-A"), np.eye(2), "SPILL")
    assert choose_matrix(tube(names, identity, cytometer="LSRFortessa")).source == "file"
    # Cytek conventional (DxP) data, and raw Aurora data named after the detectors, are not unmixed.
    assert choose_matrix(tube(names, identity, cytometer="Cytek xP5")).source == "file"
    raw = ["FSC-A", "SSC-A", "UV1-A", "V3-A", "B2-A", "YG5-A", "R8-A"]
    raw_spill = Spillover(tuple(raw[2:]), np.eye(5), "$SPILLOVER")
    assert choose_matrix(tube(raw, raw_spill, cytometer="Aurora")).source == "file"


def test_the_order_override_declared_file_evidence_file_matrix(tmp_path):
    both = tube(["FSC-A", "SSC-A", "A", "B"], SPILL, dfc(D1T2="5"), "Cytomics FC 500")
    path = tmp_path / "ab.csv"
    path.write_text("A,B\n1,0.3\n0,1\n")
    override = choose_matrix(both, override_path=path)
    assert override.source == "override" and "yet the file shows prior compensation" in override.detail
    declared = choose_matrix(both, declared="declared for this sample")
    assert declared.source == "precompensated"
    assert declared.detail == "declared for this sample; the file's $SPILLOVER is not applied"
    evidence = choose_matrix(both)
    assert evidence.source == "precompensated" and evidence.detail.startswith("compensated by the instrument")
    # Declared with nothing in the file: precompensated, not an error.
    assert choose_matrix(tube(), declared="declared in the settings").source == "precompensated"


def test_a_real_spillover_is_still_applied():
    # (test_comp_example.fcs's own SPILL is the identity; the simulated tubes carry a real one)
    fcs = read_fcs(Path(__file__).parents[1] / "test_data" / "high_fmo_stained.fcs")
    assert compensation.prior_compensation(fcs) is None
    comp = choose_matrix(fcs)
    assert comp.source == "file" and comp.applied and not comp.is_identity
    ours = compensate(fcs.events, fcs.channel_names(), comp)
    assert not np.allclose(ours, fcs.events)


def test_precompensated_events_are_used_as_they_are():
    events = np.arange(12, dtype=np.float32).reshape(4, 3)
    comp = choose_matrix(tube(["A", "B", "C"]), declared="declared for this sample")
    out = compensate(events, ["A", "B", "C"], comp)
    assert out.dtype == np.float64 and out is not events
    np.testing.assert_array_equal(out, events)


def test_real_fc500_tube_is_compensated_by_the_instrument():
    fcs = read_fcs(FC500)
    assert fcs.spillover is None and fcs.keywords["@COMPENSATIONMODE"] == "Advanced"
    assert fcs.keywords["$DFC1TO2"] == "21.10"
    comp = choose_matrix(fcs)
    assert comp.source == "precompensated"
    assert comp.detail == "compensated by the instrument: $DFCnTOm keywords (Cytomics FC 500)"
    np.testing.assert_array_equal(compensate(fcs.events, fcs.channel_names(), comp), fcs.events)


def test_real_aurora_unmixed_file_has_an_identity_spillover():
    fcs = read_fcs(AURORA)
    spill = fcs.spillover
    assert len(spill.channels) == 30 and "AF-A" in spill.channels
    off = spill.matrix - np.eye(30)
    # The identity as SpectroFlo writes it: six decimals, one stray 0.000001 (BUV395-A into BUV496-A).
    assert np.count_nonzero(off) == 1 and off[1, 0] == pytest.approx(1e-6)
    assert compensation.is_near_identity(spill.matrix) and not np.array_equal(spill.matrix, np.eye(30))
    assert fcs.keywords["CREATOR"].startswith("SpectroFlo") and fcs.keywords["APPLY COMPENSATION"] == "FALSE"
    comp = choose_matrix(fcs)
    assert comp.source == "precompensated"
    assert comp.detail == "unmixed spectral data (Cytek Aurora, identity $SPILLOVER)"


def test_real_aurora_file_with_a_post_unmixing_matrix_is_compensated():
    import copy

    fcs = copy.copy(read_fcs(AURORA))
    matrix = fcs.spillover.matrix.copy()
    matrix[fcs.spillover.channels.index("PE-A"), fcs.spillover.channels.index("PE-Dazzle594-A")] = 0.12
    fcs.spillover = Spillover(fcs.spillover.channels, matrix, "$SPILLOVER")
    comp = choose_matrix(fcs)
    assert comp.source == "file" and "after unmixing" in comp.detail
    out = compensate(fcs.events, fcs.channel_names(), comp)
    dazzle = fcs.channel_names().index("PE-Dazzle594-A")
    assert not np.allclose(out[:, dazzle], fcs.events[:, dazzle])
