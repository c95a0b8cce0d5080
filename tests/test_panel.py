"""Marker names as labs write them: `cd125gate panel`, the mapping, the batch's panel check."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cd125gate.analysis import panel
from cd125gate.analysis.panel import sheet_problems
from cd125gate.cli import main
from cd125gate.errors import InputError
from cd125gate.io.samplesheet import read_sheet
from cd125gate.settings import load_settings

ROOT = Path(__file__).parents[1]
TEST_DATA = ROOT / "test_data"
REALDATA = ROOT / "test_data" / "realdata"
PANEL = load_settings().panel

# (stain as written, marker): stains of real panels and vendors' catalogues.
STAINS = [
    ("CD45-ECD", "CD45"), ("CD45 V500-C", "CD45"), ("CD45 KrO", "CD45"), ("CD45 Krome Orange", "CD45"),
    ("CD45_APC-H7", "CD45"), ("CD45 BV510", "CD45"), ("CD45-PerCP", "CD45"), ("CD45 FITC", "CD45"),
    ("CD34 PerCP-Cy5.5", "CD34"), ("CD34-PC5", "CD34"), ("CD34-PC7", "CD34"), ("CD34 APC", "CD34"),
    ("CD34 BV421", "CD34"), ("CD34-PE-Cy7", "CD34"), ("CD34 PerCP-Cy5-5", "CD34"),
    ("HLA DR-FITC", "HLA-DR"), ("HLA-DR-FITC", "HLA-DR"), ("HLA-DR V450", "HLA-DR"),
    ("HLA-DR APC-H7", "HLA-DR"), ("HLADR PacBlue", "HLA-DR"), ("HLA-DR Pacific Blue", "HLA-DR"),
    ("CD117-PE", "CD117"), ("CD117 PC5.5", "CD117"), ("CD117 BV605", "CD117"), ("CD117-APC", "CD117"),
    ("CD125 PE", "CD125"), ("CD125-PE", "CD125"), ("PE-CD125", "CD125"), ("PE CD125", "CD125"),
    ("IL-5Rα BV421", "CD125"), ("IL5RA APC", "CD125"), ("IL-5Ra-PE", "CD125"), ("CD125_PE", "CD125"),
    ("CD125 PE-Dazzle 594", "CD125"), ("CD125 Alexa Fluor 647", "CD125"), ("CD125", "CD125"),
    ("CD33 PE-Cy7", "CD33"), ("CD33-APC", "CD33"), ("CD33 BV786", "CD33"), ("CD33 PC7", "CD33"),
    ("CD123 PE", "CD123"), ("CD123-BV650", "CD123"), ("IL-3Rα PerCP-Cy5.5", "CD123"),
    ("7-AAD", "viability"), ("Zombie NIR", "viability"), ("Viability", "viability"),
    ("FVS780", "viability"), ("LIVE/DEAD", "viability"),
    ("CD21;FITC;530/30@488/B", None),       # BD index-sort style, a marker not in the panel
    ("viability;7-AAD;695/40@488/A", "viability"),
    ("CD45;V500;510/50@405/E", "CD45"),
    ("PE/Cy7 CD34", "CD34"), ("APC/Fire 750 CD45", "CD45"), ("CD45 VioGreen", "CD45"),
    ("CD34 cFluor B515", "CD34"), ("CD117 Super Bright 600", "CD117"), ("CD45 eFluor 450", "CD45"),
    ("IgG1-PE", None), ("IgG1 isotype", None), ("CD38-PC7", None), ("CD45RA BV510", None),
    ("Lineage-", None), ("FL2 Log", None), ("CD125 SomeNewDye", None),
]


@pytest.mark.parametrize("stain, marker", STAINS)
def test_a_stain_as_labs_write_it_names_its_marker(stain, marker):
    named, why = panel.markers_named(stain, panel.alias_keys(PANEL.markers))
    assert why is None
    assert named == ({marker} if marker else set())


@pytest.mark.parametrize("stain, both", [("CD34/CD117 PE", "CD117 or CD34"),
                                         ("CD45 CD125 PE", "CD125 or CD45"),
                                         ("HLA-DR CD34 FITC", "CD34 or HLA-DR")])
def test_a_stain_naming_two_markers_is_ambiguous(stain, both):
    named, why = panel.markers_named(stain, panel.alias_keys(PANEL.markers))
    assert named == set() and why == f"{stain!r} could be {both}"


def channel(name, stain=None):
    return SimpleNamespace(name=name, stain=stain)


@pytest.mark.parametrize("names, wanted", [
    (["FS Lin", "SS Log"], {"FSC-A": "FS Lin", "SSC-A": "SS Log"}),           # Beckman FC500
    (["FS INT", "FS PEAK", "SS INT", "SS PEAK", "TIME"],                     # Navios / Gallios
     {"FSC-A": "FS INT", "FSC-H": "FS PEAK", "SSC-A": "SS INT", "SSC-H": "SS PEAK", "Time": "TIME"}),
    (["Time", "SSC-B-A", "SSC-A", "FSC-A"], {"SSC-A": "SSC-A", "FSC-A": "FSC-A"}),  # Cytek: SSC-A first
    (["FSC-A", "SSC-B-A", "SSC-B-H"], {"SSC-A": "SSC-B-A", "SSC-H": "SSC-B-H"}),    # violet SSC alone
    (["FSC-A", "FSC-H", "BSC-A", "BSC-H"], {"SSC-A": "BSC-A", "SSC-H": "BSC-H"}),    # Sony back scatter
    (["FSC-A", "VSSC-A", "SSC-A"], {"SSC-A": "SSC-A"}),                      # CytoFLEX violet SSC
    (["FSC-HLin", "SSC-HLin"], {"FSC-H": "FSC-HLin", "SSC-H": "SSC-HLin"}),  # Guava
    (["HDR-T", "FSC-A"], {"Time": "HDR-T"}),                                  # MACSQuant
])
def test_scatter_and_time_names_of_the_main_vendors(names, wanted):
    mapped = panel.map_panel([channel(n) for n in names], PANEL, "f.fcs")
    assert {k: v for k, v in mapped.markers.items() if k in wanted} == wanted


def test_a_marker_on_two_channels_is_refused_naming_both():
    channels = [channel("FSC-A"), channel("SSC-A"), channel("FL1-A", "CD45 FITC"),
                channel("FL3-A", "CD45-ECD"), channel("FL2-A", "CD125 PE")]
    with pytest.raises(InputError, match="marker CD45 matches several channels: FL1-A, FL3-A"):
        panel.resolve_markers(channels, PANEL, "f.fcs")


def test_a_spelling_given_for_two_markers_is_refused():
    with pytest.raises(InputError, match="'DR' is given for both HLA-DR and CD125"):
        panel.alias_keys({"HLA-DR": ["HLA-DR", "DR"], "CD125": ["CD125", "DR"]})


def test_a_channel_name_carries_the_marker_when_there_is_no_stain():
    mapped = panel.map_panel([channel("FSC-A"), channel("SSC-A"), channel("CD45 V500-A"),
                              channel("CD125 PE-A")], PANEL, "f.fcs")
    assert mapped.markers["CD45"] == "CD45 V500-A" and mapped.markers["CD125"] == "CD125 PE-A"


@pytest.mark.parametrize("name", sorted(p.name for p in REALDATA.glob("*tube6.fcs")))
def test_real_fc500_tubes_map_their_backbone(name):
    mapped = panel.map_panel(panel_channels(REALDATA / name), PANEL, name)
    assert mapped.markers == {"FSC-A": "FS Lin", "SSC-A": "SS Log", "HLA-DR": "FL1 Log",
                              "CD117": "FL2 Log", "CD45": "FL3 Log", "CD34": "FL4 Log"}
    assert mapped.missing == ["CD125"] and mapped.unrecognised == [("FL5 Log", "CD38-PC7")]
    assert "required marker(s) CD125 not found; unrecognised channel(s): FL5 Log (CD38-PC7)" in mapped.blocking


def panel_channels(path):
    from cd125gate.io.fcs import read_channels
    return read_channels(path)


def test_a_tube_whose_every_channel_is_known_but_lacks_cd125_does_not_block():
    mapped = panel.map_panel(panel_channels(TEST_DATA / "no_cd125_stained.fcs"), PANEL, "x")
    assert mapped.missing == ["CD125"] and mapped.unrecognised == [] and mapped.blocking is None


def test_panel_command_prints_each_marker_and_what_is_missing(capsys):
    status = main(["panel", str(REALDATA / "clarient_FI05_000599_tube6.fcs"),
                   str(TEST_DATA / "low_fmo_stained.fcs")])
    out = capsys.readouterr().out
    assert status == 1
    assert "  CD45       FL3 Log  (CD45-ECD)" in out
    assert "  HLA-DR     FL1 Log  (HLA-DR-FITC)" in out
    assert "  missing required: CD125" in out
    assert out.rstrip().endswith("  OK")


def test_panel_command_json_and_exit_zero_when_complete(capsys):
    assert main(["panel", str(TEST_DATA / "low_fmo_stained.fcs"), "--json"]) == 0
    record, = json.loads(capsys.readouterr().out)
    assert record["markers"]["CD125"] == "PE-A" and record["cannot_be_mapped"] is None


def test_panel_command_says_one_line_for_an_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(b"FCS3.1    garbage")
    assert main(["panel", str(bad)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"cd125gate: {bad}:")


def sheet(tmp_path, rows):
    path = tmp_path / "samples.tsv"
    path.write_text("sample_id\tfcs\tcontrol\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_the_sheet_check_names_each_unmappable_file_and_nothing_else(tmp_path):
    shutil.copy(REALDATA / "clarient_FI05_000599_tube6.fcs", tmp_path / "fc500.fcs")
    path = sheet(tmp_path, [
        ("ok", str(TEST_DATA / "low_fmo_stained.fcs"), str(TEST_DATA / "low_fmo_control.fcs")),
        ("no_cd125", str(TEST_DATA / "no_cd125_stained.fcs"), ""),   # fails alone, in its job
        ("corrupt", str(TEST_DATA / "corrupt_stained.fcs"), ""),     # DATA is checked in its job
        ("fc500", "fc500.fcs", ""),
    ])
    lines = sheet_problems(read_sheet(path), PANEL)
    assert len(lines) == 1 and lines[0].startswith(f"sample fc500: stained tube {tmp_path / 'fc500.fcs'}: "
                                                   "required marker(s) CD125 not found")


def test_validate_sheet_stops_on_an_unmappable_panel(tmp_path, capsys):
    shutil.copy(REALDATA / "clarient_FI05_000599_tube6.fcs", tmp_path / "fc500.fcs")
    path = sheet(tmp_path, [("fc500", "fc500.fcs", "")])
    assert main(["validate-sheet", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample fc500: stained tube" in err[0] and "CD38-PC7" in err[0]
    config = tmp_path / "cd38.yaml"
    config.write_text(yaml.safe_dump({"panel": {"markers": {**PANEL.markers, "CD125": ["CD38"]}}}))
    assert main(["validate-sheet", str(path), "--config", str(config)]) == 0
