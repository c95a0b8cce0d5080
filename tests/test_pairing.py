"""`cd125gate sheet`: a folder of tubes becomes a sample sheet the workflow reads."""

import shutil

import pytest

from cd125gate.cli import main
from cd125gate.errors import InputError
from cd125gate.io import samplesheet
from cd125gate.io.pairing import pair_folder, parse_pattern
from conftest import ROOT


def test_pairs_by_the_default_patterns_and_reports_the_rest():
    pairing = pair_folder(["a_stained.fcs", "a_control.fcs", "b_stained.fcs", "c_control.fcs",
                           "P1.fcs", "P1_FMO.fcs", "Q_FMO.fcs", "bad id.fcs"])
    assert pairing.rows == (("P1", "P1.fcs", "P1_FMO.fcs"), ("a", "a_stained.fcs", "a_control.fcs"),
                            ("b", "b_stained.fcs", None))
    assert dict(pairing.left_out) == {"Q_FMO.fcs": "a control tube without its stained tube",
                                      "c_control.fcs": "a control tube without its stained tube",
                                      "bad id.fcs": "'bad id' cannot be a sample id (letters, digits, . _ -)"}


def test_a_pattern_of_ones_own():
    pairing = pair_folder(["S1-CD125.fcs", "S1-iso.fcs", "S2-CD125.fcs"], ("{id}-CD125.fcs:{id}-iso.fcs",))
    assert pairing.rows == (("S1", "S1-CD125.fcs", "S1-iso.fcs"), ("S2", "S2-CD125.fcs", None))
    with pytest.raises(InputError, match="STAINED:CONTROL"):
        parse_pattern("{id}.fcs")


def test_the_written_sheet_reads_back_and_is_not_written_over(tmp_path, capsys):
    for name in ("high_fmo_stained.fcs", "high_fmo_control.fcs", "low_nocontrol_stained.fcs",
                 "few_blasts_control.fcs"):
        shutil.copy(ROOT / "test_data" / name, tmp_path / name)
    assert main(["sheet", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 samples, 1 with a control tube" in out
    assert "left out few_blasts_control.fcs: a control tube without its stained tube" in out
    samples = samplesheet.read_sheet(tmp_path / "samples.tsv")
    assert [(s.sample_id, s.control and s.control.name) for s in samples] == [
        ("high_fmo", "high_fmo_control.fcs"), ("low_nocontrol", None)]
    assert main(["sheet", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err
