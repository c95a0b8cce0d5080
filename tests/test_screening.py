"""The screening table: rows from results, TSV/JSON formats, schema checks, batch summary."""

import csv
import json

import pytest
from jsonschema import Draft202012Validator

from cd125gate import cli, results
from cd125gate.analysis.antigen import assay
from cd125gate.errors import InputError
from cd125gate.review import screening

DIGEST = "ab" * 32
REQUIRED_TSV_COLUMNS = (
    "sample_id criterion cd125_pos_fraction ci_low ci_high blast_events cd125_pos_events"
    " threshold_method reasons flags patient_id specimen fcs_sha256 control_sha256"
    " cd125gate_version config_digest"
).split()


def make_result(sample_id, criterion="MET", fraction=0.6, reasons=(), control=True):
    """A result that follows data/result.schema.json."""
    failed = criterion == "FAILED"
    return {
        "schema_version": "1",
        "sample_id": sample_id,
        "patient_id": f"P-{sample_id}",
        "specimen": "bone marrow",
        "criterion": criterion,
        "reasons": list(reasons),
        "flags": [] if failed else ["uncompensated"],
        "warnings": [],
        "cd125_pos_fraction": None if failed else fraction,
        "ci_low": None if failed else fraction - 0.05,
        "ci_high": None if failed else fraction + 0.05,
        "blast_events": None if failed else 1000,
        "cd125_pos_events": None if failed else round(1000 * fraction),
        "threshold": None if failed else {
            "method": "control_percentile", "value": 1.2, "value_raw": 850.0,
            "percentile": 99.5, "reference_events": 1400, "description": "99.5th pct of FMO blasts",
        },
        "gates": [],
        "inputs": {
            "fcs": {"path": f"/data/{sample_id}.fcs", "sha256": "f" * 64},
            "control": {"path": f"/data/{sample_id}_c.fcs", "sha256": "c" * 64} if control else None,
        },
        "provenance": {"cd125gate_version": "0.1.0", "config_digest": DIGEST},
    }


def write_results(folder, results):
    paths = []
    for result in results:
        path = folder / result["sample_id"] / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(result))
        paths.append(path)
    return paths


@pytest.fixture
def batch(tmp_path):
    return write_results(tmp_path, [
        make_result("s2", "NOT_MET", 0.2),
        make_result("s1", "MET", 0.8, control=False),
        make_result("s3", "REVIEW", 0.51, reasons=["CI straddles 50%"]),
        make_result("s4", "FAILED", reasons=["s4.fcs: truncated\tDATA segment", "second\nline"]),
    ])


def test_rows_follow_the_given_order_and_carry_the_result_values(batch):
    rows = screening.collect(batch)
    assert [row.sample_id for row in rows] == ["s2", "s1", "s3", "s4"]
    met = rows[1]
    assert met.criterion == "MET"
    assert met.cd125_pos_fraction == 0.8 and met.cd125_pos_events == 800
    assert (met.ci_low, met.ci_high) == (pytest.approx(0.75), pytest.approx(0.85))
    assert met.threshold_method == "control_percentile"
    assert met.control_sha256 is None and met.fcs_sha256 == "f" * 64
    assert met.patient_id == "P-s1" and met.config_digest == DIGEST
    failed = rows[3]
    assert failed.threshold_method is None and failed.cd125_pos_fraction is None
    assert failed.reasons == ("s4.fcs: truncated\tDATA segment", "second\nline")


def test_tsv_has_one_row_per_sample_and_blank_cells_for_missing_values(batch, tmp_path):
    text = screening.format_tsv(screening.collect(batch))
    table = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    assert set(REQUIRED_TSV_COLUMNS) <= set(table[0])
    assert len(text.splitlines()) == 5  # tabs and newlines inside reasons did not split rows
    assert [row["criterion"] for row in table] == ["NOT_MET", "MET", "REVIEW", "FAILED"]
    assert float(table[0]["cd125_pos_fraction"]) == 0.2
    assert table[1]["control_sha256"] == "" and table[1]["flags"] == "uncompensated"
    assert table[3]["cd125_pos_fraction"] == "" and table[3]["blast_events"] == ""
    assert table[3]["reasons"] == "s4.fcs: truncated DATA segment; second line"


def test_json_document_follows_its_schema_and_counts_criteria(batch):
    document = screening.screening_document(screening.collect(batch))
    Draft202012Validator(results.load_schema("screening.schema.json")).validate(document)
    summary = document["summary"]
    assert summary["samples"] == 4
    assert summary["criteria"] == {"MET": 1, "NOT_MET": 1, "REVIEW": 1, "FAILED": 1}
    assert summary["config_digests"] == [DIGEST]
    assert document["samples"][0]["sample_id"] == "s2"


def test_schema_rejects_a_row_with_a_missing_column(batch):
    document = screening.screening_document(screening.collect(batch))
    del document["samples"][0]["criterion"]
    errors = list(Draft202012Validator(results.load_schema("screening.schema.json"))
                  .iter_errors(document))
    assert errors


def test_mixed_settings_are_visible_in_the_summary(tmp_path):
    other = make_result("b")
    other["provenance"]["config_digest"] = "cd" * 32
    rows = screening.collect(write_results(tmp_path, [make_result("a"), other]))
    assert screening.summarize(rows)["config_digests"] == sorted([DIGEST, "cd" * 32])


def test_invalid_result_stops_the_table_naming_file_and_field(tmp_path):
    broken = make_result("x")
    broken["criterion"] = "MAYBE"
    (path,) = write_results(tmp_path, [broken])
    with pytest.raises(InputError) as caught:
        screening.collect([path])
    assert caught.value.source == str(path)
    assert "not a cd125gate result: criterion: " in caught.value.problem


def test_unreadable_and_duplicate_results_are_refused(tmp_path):
    torn = tmp_path / "torn.json"
    torn.write_text('{"sample_id": "x", ')
    with pytest.raises(InputError, match="cannot read result"):
        screening.collect([torn])
    first, second = write_results(tmp_path, [make_result("x"), make_result("X")])
    second.write_text(first.read_text())
    with pytest.raises(InputError, match="sample_id 'x' was already given by"):
        screening.collect([first, second])


def test_screening_command_writes_both_tables(batch, tmp_path, capsys):
    tsv, js = tmp_path / "out" / "screening.tsv", tmp_path / "out" / "screening.json"
    argv = ["screening", *map(str, batch), "--tsv", str(tsv), "--json", str(js)]
    assert cli.main(argv) == 0
    assert "MET 1, NOT_MET 1, REVIEW 1, FAILED 1 (4 samples)" in capsys.readouterr().out
    assert tsv.read_text() == screening.format_tsv(screening.collect(batch))
    assert json.loads(js.read_text())["summary"]["samples"] == 4
    assert sorted(p.name for p in tsv.parent.iterdir()) == ["screening.json", "screening.tsv"]


# --- reviews applied, assay metadata --------------------------------------------------------------

def reviews_file(tmp_path, lines):
    path = tmp_path / "reviews.tsv"
    path.write_text("sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\n"
                    + "".join("\t".join(line) + "\n" for line in lines))
    return path


def digest(path):
    from cd125gate.io.fileio import sha256_file

    return sha256_file(path)


def test_unreviewed_final_status_follows_the_signoff_rule(batch):
    rows = screening.collect(batch)
    assert [(r.criterion, r.final) for r in rows] == [
        ("NOT_MET", "NOT_MET"), ("MET", "MET"), ("REVIEW", "PENDING_REVIEW"), ("FAILED", "FAILED")]
    rows = screening.collect(batch, signoff="all")
    assert [r.final for r in rows] == ["PENDING_REVIEW", "PENDING_REVIEW", "PENDING_REVIEW", "FAILED"]
    assert all(r.result_sha256 == digest(p) for r, p in zip(rows, batch))


def test_reviews_set_final_and_who_when_why(batch, tmp_path):
    from cd125gate.review import reviews

    path = reviews_file(tmp_path, [
        ("s2", digest(batch[0]), "ACCEPT", "Dr Ada", "2026-11-30", ""),
        ("s3", digest(batch[2]), "OVERRIDE_NOT_MET", "Dr Bo", "2026-11-30", "dim tail is debris"),
        ("s4", digest(batch[3]), "REJECT", "Dr Bo", "2026-12-01", "clot; re-acquire"),
    ])
    rows = screening.collect(batch, reviews.read_reviews(path), signoff="all")
    got = [(r.final, r.review_decision, r.reviewed_by, r.reviewed_at, r.review_reason)
           for r in rows]
    assert got == [("NOT_MET", "ACCEPT", "Dr Ada", "2026-11-30", None),
                   ("PENDING_REVIEW", None, None, None, None),   # s1: MET, but `all` wants sign-off
                   ("NOT_MET", "OVERRIDE_NOT_MET", "Dr Bo", "2026-11-30", "dim tail is debris"),
                   ("REJECTED", "REJECT", "Dr Bo", "2026-12-01", "clot; re-acquire")]
    assert [r.criterion for r in rows] == ["NOT_MET", "MET", "REVIEW", "FAILED"]  # kept
    document = screening.screening_document(rows)
    Draft202012Validator(results.load_schema("screening.schema.json")).validate(document)
    assert document["summary"]["finals"] == {"MET": 0, "NOT_MET": 2, "PENDING_REVIEW": 1, "REJECTED": 1,
                                             "FAILED": 0}


def test_a_changed_result_makes_its_review_stale(batch, tmp_path):
    from cd125gate.review import reviews

    path = reviews_file(tmp_path, [("s3", digest(batch[2]), "OVERRIDE_MET", "Dr Bo", "2026-11-30", "ok")])
    lines = reviews.read_reviews(path)
    assert screening.collect(batch, lines)[2].final == "MET"
    changed = json.loads(batch[2].read_text())
    changed["flags"].append("re-analysed")
    batch[2].write_text(json.dumps(changed))
    row = screening.collect(batch, lines)[2]
    assert row.final == "PENDING_REVIEW" and row.reviewed_by is None
    assert "stale" in row.review_note


def test_screening_command_applies_reviews_and_appends_the_audit(batch, tmp_path, capsys):
    path = reviews_file(tmp_path, [("s3", digest(batch[2]), "REJECT", "Dr Bo", "2026-11-30", "clot")])
    tsv, js, audit = (tmp_path / "out" / name for name in ("screening.tsv", "screening.json", "audit.tsv"))
    argv = ["screening", *map(str, batch), "--tsv", str(tsv), "--json", str(js), "--reviews", str(path),
            "--audit", str(audit)]
    assert cli.main(argv) == 0
    assert "final: MET 1, NOT_MET 1, PENDING_REVIEW 0, REJECTED 1, FAILED 1" in capsys.readouterr().out
    table = list(csv.DictReader(tsv.open(), delimiter="\t"))
    assert table[2]["final"] == "REJECTED" and table[2]["criterion"] == "REVIEW"
    assert cli.main(argv) == 0  # a rerun adds no audit line
    lines = audit.read_text().splitlines()
    assert len(lines) == 2 and lines[1].split("\t")[1:4] == ["s3", "REJECT", "Dr Bo"]
    row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
    assert row["result_sha256_before"] == row["result_sha256_after"] == digest(batch[2])


def test_assay_metadata_from_fcs_keywords():
    meta = assay.from_keywords({"$DATE": "01-JAN-2025", "$BTIM": "09:00:00", "$CYT": "FACSCanto II",
                                     "$CYTSN": "V123", "$OP": "jdoe", "TUBE NAME": "CD125 stained"})
    assert meta == {"acquisition_date": "2025-01-01", "acquisition_time": "09:00:00",
                    "instrument": "FACSCanto II", "instrument_serial": "V123", "operator": "jdoe",
                    "tube_name": "CD125 stained"}
    assert assay.fcs_date("3-feb-99") == "1999-02-03"
    # Not dates we can convert, kept as written (int() raised on these).
    for odd in ("01-JAN-\u00b2", "\u00b2-JAN-2020", "01-JAN-" + "9" * 5000):
        assert assay.fcs_date(odd) == odd
    assert assay.from_keywords({})["instrument"] is None


def test_assay_metadata_is_read_from_the_stained_fcs_file(tmp_path):
    from pathlib import Path

    fcs = Path(__file__).parents[1] / "test_data" / "low_fmo_stained.fcs"
    result = make_result("m")
    result["inputs"]["fcs"]["path"] = str(fcs)
    row = screening.collect(write_results(tmp_path, [result]))[0]
    assert (row.acquisition_date, row.acquisition_time, row.instrument, row.tube_name) == \
        ("2025-01-01", "09:00:00", "cd125gate simulator", "CD125 stained")


def test_a_regate_that_could_not_be_done_is_pending_with_its_problem_and_not_audited(batch, tmp_path):
    from cd125gate.review import reviews

    (tmp_path / "edit.xml").write_text("<edited/>")
    path = tmp_path / "reviews.tsv"
    path.write_text("sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\tgates_sha256\n"
                    f"s3\t{digest(batch[2])}\tREGATE\tDr Bo\t2026-11-30\tcut-off\tedit.xml\t{digest(tmp_path / 'edit.xml')}\n")
    line = reviews.read_reviews(path)[0]
    folder = screening.reviewed_result_path(batch[2], line).parent
    folder.mkdir(parents=True)
    (folder / "failed.txt").write_text("edit.xml (applied to s3.fcs): FlowKit cannot apply the gates: no PE-Z-A\n")
    samples = screening.collect_samples(batch, [line])
    row = samples[2].row
    assert (row.final, row.review_decision) == ("PENDING_REVIEW", "REGATE")
    assert row.review_note == "re-gating failed: edit.xml (applied to s3.fcs): FlowKit cannot apply the gates: no PE-Z-A"
    assert screening.record_audit(tmp_path / "audit.tsv", samples) == []
