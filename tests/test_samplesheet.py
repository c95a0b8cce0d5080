"""The sample sheet: parsing, path resolution, and one clear message per kind of bad sheet."""

import re
from pathlib import Path

import pytest
import yaml

from cd125gate import cli
from cd125gate.errors import InputError
from cd125gate.io import samplesheet

ROOT = Path(__file__).parents[1]
TEST_DATA = ROOT / "test_data"


@pytest.fixture
def tubes(tmp_path):
    """A folder with three tiny tube files; the sheet reader checks existence (and copies) only."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.fcs", "a_ctrl.fcs", "b.fcs"):
        (data / name).write_bytes(name.encode())
    return data


def write_sheet(folder, text, name="samples.tsv"):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_test_data_sheet_in_order_with_absolute_paths():
    samples = samplesheet.read_sheet(TEST_DATA / "samples.tsv")
    lines = (TEST_DATA / "samples.tsv").read_text().splitlines()[1:]
    assert [s.sample_id for s in samples] == [line.split("\t")[0] for line in lines]
    for sample in samples:
        assert sample.fcs.is_absolute() and sample.fcs.is_file()
        assert sample.fcs.parent == TEST_DATA.resolve()
    no_control = [s for s in samples if s.control is None]
    assert [s.sample_id for s in no_control] == ["low_nocontrol"]
    assert samples[0].specimen == "bone marrow" and samples[0].patient_id == "SIM-001"


def test_relative_paths_resolve_against_the_sheet_folder(tubes, tmp_path, monkeypatch):
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    sheet = write_sheet(sheets, "sample_id\tfcs\tcontrol\nA\t../data/a.fcs\t../data/a_ctrl.fcs\n")
    monkeypatch.chdir(tubes)  # the working folder must not matter
    (sample,) = samplesheet.read_sheet(sheet)
    assert sample.fcs == tubes / "a.fcs"
    assert sample.control == tubes / "a_ctrl.fcs"
    assert sample.compensation is None and sample.notes is None


def test_compensation_is_a_matrix_file_or_the_word_precompensated(tubes):
    (tubes / "m.csv").write_text("A,B\n1,0\n0,1\n")
    text = "sample_id\tfcs\tcompensation\nA\ta.fcs\tm.csv\nB\tb.fcs\tprecompensated\nC\tb.fcs\tPrecompensated\nD\tb.fcs\t\n"
    a, b, c, d = samplesheet.read_sheet(write_sheet(tubes, text))
    assert a.compensation == tubes / "m.csv" and not a.precompensated
    assert b.compensation is None and b.precompensated and c.precompensated
    assert d.compensation is None and not d.precompensated


def test_spreadsheet_quirks_bom_crlf_blank_lines_and_empty_cells(tubes):
    text = "\ufeffsample_id\tfcs\tcontrol\tnotes\r\nA\ta.fcs\ta_ctrl.fcs\tfirst\r\n\r\nB\tb.fcs\t\t\r\n"
    samples = samplesheet.read_sheet(write_sheet(tubes, text))
    assert [s.sample_id for s in samples] == ["A", "B"]
    assert samples[0].notes == "first"
    assert samples[1].control is None and samples[1].notes is None
    assert samples[1].line == 4


def test_paired_quotes_are_read_as_one_cell(tubes):
    text = 'sample_id\tfcs\tnotes\nA\ta.fcs\t"tab\tinside, ""quoted"""\nB\tb.fcs\tsays 5" wide\n'
    samples = samplesheet.read_sheet(write_sheet(tubes, text))
    assert [s.notes for s in samples] == ['tab\tinside, "quoted"', 'says 5" wide']


def test_unclosed_quote_does_not_swallow_later_rows(tubes, capsys):
    # Reproducer from issue 13: this 3-row sheet validated as "1 samples ... OK".
    text = 'sample_id\tfcs\tnotes\nA\ta.fcs\t"started\nB\tb.fcs\t\nC\ta.fcs\t\n'
    sheet = write_sheet(tubes, text)
    assert cli.main(["validate-sheet", str(sheet)]) == 2
    assert capsys.readouterr().err.startswith(f"cd125gate: {sheet}: line 2: a quote")


BAD_SHEETS = {
    "empty file": ("", "the sheet is empty"),
    "header only": ("sample_id\tfcs\n", "lists no samples"),
    "missing required column": ("sample_id\tcontrol\nA\ta.fcs\n", "line 1: required column 'fcs'"),
    "unknown column": ("sample_id\tfcs\tdonor\nA\ta.fcs\tx\n", "line 1: unknown column 'donor'"),
    "column twice": ("sample_id\tfcs\tfcs\nA\ta.fcs\tb.fcs\n", "line 1: column 'fcs' appears twice"),
    "duplicate id": ("sample_id\tfcs\nA\ta.fcs\nB\tb.fcs\nA\tb.fcs\n",
                     "line 4: sample_id 'A' duplicates 'A' on line 2"),
    "duplicate id by case": ("sample_id\tfcs\nA\ta.fcs\na\tb.fcs\n", "line 3: sample_id 'a' duplicates 'A'"),
    "parent folder id": ("sample_id\tfcs\n../x\ta.fcs\n", "line 2: sample_id '../x' is not allowed"),
    "slash in id": ("sample_id\tfcs\na/b\ta.fcs\n", "line 2: sample_id 'a/b' is not allowed"),
    "space in id": ("sample_id\tfcs\na b\ta.fcs\n", "line 2: sample_id 'a b' is not allowed"),
    "hidden id": ("sample_id\tfcs\n.a\ta.fcs\n", "line 2: sample_id '.a' is not allowed"),
    "empty id": ("sample_id\tfcs\n\ta.fcs\n", "line 2: sample_id '' is not allowed"),
    "no fcs": ("sample_id\tfcs\tcontrol\nA\t\ta_ctrl.fcs\n", "line 2: sample 'A' has no fcs file"),
    "missing fcs": ("sample_id\tfcs\nA\tnope.fcs\n", "line 2: sample 'A': fcs file nope.fcs"),
    "missing control": ("sample_id\tfcs\tcontrol\nA\ta.fcs\tnope.fcs\n",
                        "line 2: sample 'A': control file nope.fcs"),
    "missing matrix": ("sample_id\tfcs\tcompensation\nA\ta.fcs\tm.csv\n",
                       "line 2: sample 'A': compensation file m.csv"),
    "folder as fcs": ("sample_id\tfcs\nA\t.\n", "is a folder, not a file"),
    "too many cells": ("sample_id\tfcs\nA\ta.fcs\textra\n", "line 2: 3 cells but the header has 2"),
    "too few cells": ("sample_id\tfcs\tcontrol\nA\ta.fcs\ta_ctrl.fcs\nB\tb.fcs\n",
                      "line 3: 2 cells but the header has 3"),
    "text after a closing quote": ('sample_id\tfcs\nA\t"a.fcs"x\n', "line 2: a quote"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHEETS))
def test_bad_sheet_is_refused_naming_sheet_line_and_problem(tubes, case):
    text, expected = BAD_SHEETS[case]
    sheet = write_sheet(tubes, text)
    with pytest.raises(InputError) as caught:
        samplesheet.read_sheet(sheet)
    assert caught.value.source == str(sheet)
    assert expected in caught.value.problem
    assert "\n" not in str(caught.value)


def test_missing_and_undecodable_sheets(tmp_path):
    with pytest.raises(InputError, match="sample sheet not found"):
        samplesheet.read_sheet(tmp_path / "nope.tsv")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("sample_id\tfcs\nA\tb\xe9.fcs\n".encode("latin-1"))
    with pytest.raises(InputError, match="cannot read sample sheet"):
        samplesheet.read_sheet(latin1)


def test_validate_sheet_command(tubes, capsys):
    good = write_sheet(tubes, "sample_id\tfcs\tcontrol\nA\ta.fcs\ta_ctrl.fcs\nB\tb.fcs\t\n")
    assert cli.main(["validate-sheet", str(good)]) == 0
    out = capsys.readouterr().out
    assert "2 rows read after the header (last on line 3): 2 samples, 1 with a control tube: OK" in out
    bad = write_sheet(tubes, "sample_id\tfcs\nA\ta.fcs\nA\tb.fcs\n", name="bad.tsv")
    assert cli.main(["validate-sheet", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"cd125gate: {bad}: line 3: sample_id 'A' duplicates 'A' on line 2\n"


def test_workflow_schema_states_the_same_format():
    schema = yaml.safe_load((ROOT / "workflow/schemas/samples.schema.yaml").read_text())
    assert tuple(schema["properties"]) == samplesheet.COLUMNS
    assert tuple(schema["required"]) == samplesheet.REQUIRED_COLUMNS
    assert schema["additionalProperties"] is False
    assert schema["properties"]["sample_id"]["pattern"] == samplesheet.SAMPLE_ID_PATTERN
    assert re.fullmatch(samplesheet.SAMPLE_ID_PATTERN, "x" * 100)
    assert not re.fullmatch(samplesheet.SAMPLE_ID_PATTERN, "x" * 101)


def test_non_regular_sheet_is_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "sheet.tsv"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(InputError, match="the sample sheet is not a regular file"):
            samplesheet.read_sheet(path)


def test_a_stained_tube_as_its_own_control_is_refused(tmp_path, capsys):
    import shutil

    from cd125gate.cli import main

    stained = tmp_path / "a.fcs"
    shutil.copy(Path(__file__).parents[1] / "test_data/high_fmo_stained.fcs", stained)
    shutil.copy(stained, tmp_path / "copy.fcs")
    sheet = tmp_path / "s.tsv"
    sheet.write_text("sample_id\tfcs\tcontrol\nS1\ta.fcs\ta.fcs\n")
    with pytest.raises(InputError, match=r"line 2: sample 'S1' names the stained tube as its own control"):
        samplesheet.read_sheet(sheet)
    sheet.write_text("sample_id\tfcs\tcontrol\nS1\ta.fcs\tcopy.fcs\n")
    assert len(samplesheet.read_sheet(sheet)) == 1  # the workflow's read compares paths only
    assert main(["validate-sheet", str(sheet)]) == 2
    assert "line 2: sample 'S1': the control copy.fcs is a copy of the stained tube" in capsys.readouterr().err
