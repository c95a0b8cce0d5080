"""`cd125gate inspect`: summaries, JSON, and one-line errors that do not stop the other files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cd125gate.cli import main
from conftest import TEST_CORPUS

GOOD = TEST_CORPUS / "flowkit/index_sorted/index_sorted_example.fcs"
MULTI = TEST_CORPUS / "flowkit/multi_dataset_fcs/coulter.lmd"
CORRUPT = TEST_CORPUS / "fcsparser/corrupted/corrupted.fcs"
TRUNCATED = TEST_CORPUS / "fcsparser/cytek-nl-2000/sample_header.fcs"


def test_text_summary(capsys):
    assert main(["inspect", str(GOOD), str(MULTI)]) == 0
    out = capsys.readouterr().out
    assert "FCS3.0 (big-endian, $DATATYPE F)" in out
    assert "FACSAria-3 (FACSAriaIII)" in out
    assert "events      384" in out
    assert "spillover   SPILL, " in out
    assert "data sets   2" in out and "only the first is read" in out
    assert "Cytomics FC 500" in out


def test_json_lists_every_readable_file(capsys, make_fcs):
    crafted = make_fcs(np.ones((3, 2), dtype=np.float32), names=["FSC-A", "CD125"], keywords={"$P2S": "CD125 PE"})
    assert main(["inspect", "--json", str(GOOD), str(crafted)]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [item["path"] for item in items] == [str(GOOD), str(crafted)]
    assert items[0]["spillover"]["keyword"] == "SPILL"
    n = len(items[0]["spillover"]["channels"])
    assert np.array(items[0]["spillover"]["matrix"]).shape == (n, n)
    assert items[1]["event_count"] == 3 and items[1]["spillover"] is None
    assert items[1]["channels"][1] == {
        "index": 2, "name": "CD125", "stain": "CD125 PE", "range": 1024.0, "bits": 32,
        "amplification": [0.0, 0.0], "gain": None,
    }


def test_unreadable_file_reported_and_others_continue(capsys):
    assert main(["inspect", str(CORRUPT), str(GOOD), str(TRUNCATED)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"cd125gate: {CORRUPT}: ")
    assert errors[1].startswith(f"cd125gate: {TRUNCATED}: ") and "truncated" in errors[1]
    assert str(GOOD) in captured.out


def test_json_with_a_failure_still_prints_the_others(capsys):
    assert main(["inspect", "--json", str(GOOD), str(CORRUPT)]) == 2
    captured = capsys.readouterr()
    assert [item["path"] for item in json.loads(captured.out)] == [str(GOOD)]
    assert captured.err.count("\n") == 1


def test_console_script_exit_status_and_one_line_error(tmp_path):
    script = Path(sys.executable).parent / "cd125gate"
    missing = tmp_path / "absent.fcs"
    result = subprocess.run([str(script), "inspect", str(GOOD), str(missing), str(CORRUPT)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"cd125gate: {missing}: cannot read file: No such file or directory",
        f"cd125gate: {CORRUPT}: file is 10 bytes, too short for an FCS HEADER (58 bytes)",
    ]
    assert "Traceback" not in result.stderr and str(GOOD) in result.stdout
    ok = subprocess.run([str(script), "inspect", "--json", str(GOOD)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)[0]["event_count"] == 384


def test_json_is_strict_for_non_finite_keywords(capsys, make_fcs):
    # Issue 13: inspect printed bare NaN/Infinity, which strict JSON parsers refuse.
    crafted = make_fcs(np.ones((3, 2), dtype=np.float32), keywords={"$TIMESTEP": "inf"})
    assert main(["inspect", "--json", str(crafted)]) == 0
    out = capsys.readouterr().out
    items = json.loads(out, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))
    assert items[0]["timestep"] is None
    assert any("$TIMESTEP is not a positive number" in w for w in items[0]["warnings"])


def test_strict_json_nulls_non_finite_numbers_with_a_reason():
    from cd125gate.io.fcsinfo import strict_json

    item = strict_json({"timestep": float("nan"), "channels": [{"range": float("inf")}], "warnings": ["w"]})
    assert item["timestep"] is None and item["channels"][0]["range"] is None
    assert item["warnings"] == ["w", "timestep is nan, not a finite number; written as null",
                                "channels[0].range is inf, not a finite number; written as null"]
    json.dumps(item, allow_nan=False)


def test_max_bytes_option_and_non_regular_files(capsys, make_fcs, tmp_path):
    crafted = make_fcs(np.ones((3, 2), dtype=np.float32))
    assert main(["inspect", "--max-bytes", "100", str(crafted), "/dev/zero", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3
    assert errors[0].startswith(f"cd125gate: {crafted}: file is ") and "100-byte limit" in errors[0]
    assert errors[1] == "cd125gate: /dev/zero: cannot read file: it is a character device, not a regular file"
    assert errors[2].startswith(f"cd125gate: {tmp_path}: cannot read file: it is a folder")


def test_channel_name_with_a_line_break_keeps_errors_on_one_line(capsys, make_fcs):
    # The panel lists the file's channels when a required marker is missing; a name
    # holding a line break must not split the message.
    crafted = make_fcs(np.ones((600, 2), dtype=np.float32), names=["A\nB", "C"])
    assert main(["analyze", str(crafted), "--out", str(crafted.parent / "out"), "--plot-formats", ""]) in (0, 2, 4)
    result = json.loads((crafted.parent / "out" / "result.json").read_text())
    assert result["criterion"] == "FAILED" and "A\\nB" in result["reasons"][0]
    assert "\n" not in result["reasons"][0]
