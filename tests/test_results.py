"""SampleResult: the bundled batch's results are the same to the byte as before the restructure,
the value round-trips through result.json, and one loader with one message reads results back."""

import json
from pathlib import Path

import pytest

from cd125gate import results
from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.settings import load_settings
from conftest import input_error

ROOT = Path(__file__).parents[1]
GOLDEN = ROOT / "tests/golden/results.json"


def bundled_results():
    """Each bundled sample's result document, analysed from the repository root with relative paths."""
    rows = [line.split("\t") for line in (ROOT / "test_data/samples.tsv").read_text().splitlines()[1:]]
    documents = {}
    for sample_id, fcs, control, patient_id, specimen, notes in rows:
        analysis = analyze_sample(f"test_data/{fcs}", f"test_data/{control}" if control else None,
                                  load_settings(), sample_id=sample_id,
                                  meta={"patient_id": patient_id, "specimen": specimen, "notes": notes})
        documents[sample_id] = json.dumps(analysis.result.to_json(), indent=2, sort_keys=True,
                                          allow_nan=False)
    return documents


@pytest.mark.slow
def test_bundled_results_are_byte_identical_to_the_recorded_ones(monkeypatch):
    # Recorded from the code before results/criterion were split out of analyze; a
    # deliberate change of the analysis re-records them (python tests/test_results.py).
    monkeypatch.chdir(ROOT)
    recorded = json.loads(GOLDEN.read_text())
    now = bundled_results()
    assert sorted(now) == sorted(recorded)
    for sample_id in recorded:
        assert now[sample_id] == recorded[sample_id], sample_id


def _minimal(**changes):
    base = results.header("s1", {"fcs": {"path": "a.fcs", "sha256": "0" * 64}, "control": None,
                                 "compensation": None},
                          {"cd125gate_version": "0", "config_digest": "0" * 64, "flowkit_version": "1"},
                          {"positive_fraction": 0.5, "min_blasts": 200, "confidence": 0.95}, {})
    return base.replace(**changes)


def test_a_result_round_trips_through_its_json(tmp_path):
    result = _minimal(criterion="REVIEW", reasons=("only 3 blasts",), flags=("no control tube",),
                      gates=({"name": "blasts", "parent": None, "count": 3, "parent_count": 9,
                              "percent_of_parent": 33.3333, "note": "", "exclusion": False},),
                      outputs={"result": "result.json"})
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result.to_json()))
    assert results.load(path) == result
    assert "outputs" not in _minimal().to_json()  # written only once the files exist


@pytest.mark.parametrize("content, message", [
    ("{", "cannot read result"),
    ('{"sample_id": "x"}', "not a cd125gate result: top level: 'schema_version' is a required property"),
])
def test_one_loader_one_message(tmp_path, content, message):
    path = tmp_path / "result.json"
    path.write_text(content)
    error = input_error(results.load, path)
    assert message in error and str(path) in error


def test_a_result_breaking_its_schema_is_our_bug_not_bad_input():
    with pytest.raises(ValueError, match="breaks its own schema"):
        results.validate(_minimal(criterion="MAYBE"))


def test_counts_table_and_screening_row_come_from_the_value():
    gate = {"name": "blasts", "parent": "blast_region", "count": 3, "parent_count": 9,
            "percent_of_parent": 33.33333, "note": "", "exclusion": False}
    result = _minimal(gates=(gate,), control_gates=(dict(gate, count=2),))
    assert results.counts_tsv(result).splitlines()[1:] == [
        "stained\tblasts\tblast_region\t3\t9\t33.3333", "control\tblasts\tblast_region\t2\t9\t33.3333"]
    from cd125gate.review.screening import ScreeningRow

    row = ScreeningRow.of_result(result)
    assert row.sample_id == "s1" and row.fcs_sha256 == "0" * 64 and row.control_sha256 is None


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    GOLDEN.write_text(json.dumps(bundled_results(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {GOLDEN}")
