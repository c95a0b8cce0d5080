"""scripts/check_bundled_run.py: CI's check of the newcomer's bundled batch."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("check_bundled_run", ROOT / "scripts" / "check_bundled_run.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def write(tmp_path, rows, truth):
    tsv = tmp_path / "screening.tsv"
    tsv.write_text("sample_id\tcriterion\tfinal\n" + "".join(f"{s}\t{c}\t-\n" for s, c in rows))
    truth_json = tmp_path / "truth.json"
    truth_json.write_text(json.dumps({s: {"expected_criterion": c} for s, c in truth.items()}))
    return str(tsv), str(truth_json)


def test_a_batch_that_matches_its_truth_passes(tmp_path, capsys):
    paths = write(tmp_path, [("a", "MET"), ("b", "FAILED")], {"a": "MET", "b": "FAILED"})
    assert check.main(list(paths)) == 0


def test_a_wrong_or_missing_criterion_is_named(tmp_path, capsys):
    paths = write(tmp_path, [("a", "FAILED")], {"a": "MET", "b": "NOT_MET"})
    assert check.main(list(paths)) == 1
    assert capsys.readouterr().err.splitlines() == [
        "bundled batch: a: FAILED, expected MET",
        f"bundled batch: b: missing from {paths[0]} (expected NOT_MET)"]
