"""Reviews file: each rule of a decision line, the final status, the append-only audit trail."""

import pytest

from cd125gate import reviews
from cd125gate.errors import InputError

A = "a" * 64
B = "b" * 64
HEADER = "sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\n"


def write(tmp_path, *lines, header=HEADER):
    path = tmp_path / "reviews.tsv"
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def line(sample="s1", digest=A, decision="ACCEPT", reviewer="Dr Ada", day="2026-11-30", reason="", gates=""):
    return "\t".join([sample, digest, decision, reviewer, day, reason, gates])


def test_good_lines_are_read_with_their_line_numbers(tmp_path):
    (tmp_path / "edit.xml").write_text("<x/>")
    path = write(tmp_path, "# a comment", line(), "",
                 line("s2", B, "REGATE", reason="blast gate too wide", gates="edit.xml"))
    got = reviews.read_reviews(path)
    assert [(r.sample_id, r.decision, r.line) for r in got] == [("s1", "ACCEPT", 3), ("s2", "REGATE", 5)]
    assert got[1].gates == (tmp_path / "edit.xml").resolve()
    assert got[1].reason == "blast gate too wide"


@pytest.mark.parametrize("bad, problem", [
    (line(decision="APPROVE"), "line 2: unknown decision 'APPROVE' for sample 's1'"),
    (line(decision="OVERRIDE_MET"), "line 2: OVERRIDE_MET of sample 's1' gives no reason"),
    (line(decision="REJECT"), "line 2: REJECT of sample 's1' gives no reason"),
    (line(day="30/11/2026"), "line 2: date '30/11/2026' of sample 's1' is not a date YYYY-MM-DD"),
    (line(day="2026-02-30"), "line 2: date '2026-02-30'"),
    (line(digest="abc"), "line 2: result_sha256 of sample 's1' is not a SHA-256 digest"),
    (line(reviewer=""), "line 2: ACCEPT of sample 's1' names no reviewer"),
    (line(decision="REGATE", reason="x"), "line 2: REGATE of sample 's1' names no edited Gating-ML"),
    (line(decision="REGATE", reason="x", gates="nope.xml"), "does not exist"),
    (line(gates="x.xml"), "line 2: ACCEPT of sample 's1' names a gates file; only REGATE uses one"),
    (line() + "\textra", "line 2: 8 cells but the header has 7"),
])
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path, bad, problem):
    path = write(tmp_path, bad)
    with pytest.raises(InputError) as err:
        reviews.read_reviews(path)
    assert str(err.value).startswith(f"{path}: ")
    assert problem in str(err.value)
    assert "\n" not in str(err.value)


def test_header_must_name_the_required_columns(tmp_path):
    path = write(tmp_path, line(), header="sample_id\tdecision\n")
    with pytest.raises(InputError, match="line 1: header lacks column"):
        reviews.read_reviews(path)


def test_gates_column_is_optional_without_regate(tmp_path):
    path = write(tmp_path, "\t".join(["s1", A, "ACCEPT", "Dr Ada", "2026-11-30", ""]),
                 header="\t".join(reviews.REQUIRED_COLUMNS) + "\n")
    assert reviews.read_reviews(path)[0].gates is None


def test_check_refuses_unknown_sample_stale_digest_and_missing_result(tmp_path):
    path = write(tmp_path, line("s1", A), line("zz", A))
    with pytest.raises(InputError, match=r"line 3: unknown sample 'zz'"):
        reviews.check(reviews.read_reviews(path), {"s1": A})
    path = write(tmp_path, line("s1", B))
    with pytest.raises(InputError, match=r"line 2: stale digest for sample 's1'"):
        reviews.check(reviews.read_reviews(path), {"s1": A})
    with pytest.raises(InputError, match=r"line 2: sample 's1' has no result.json yet"):
        reviews.check(reviews.read_reviews(path), {"s1": None})


def test_check_lets_an_old_recorded_review_through_as_history(tmp_path):
    path = write(tmp_path, line("s1", B), line("s1", A, "REJECT", reason="clot"))
    reviews.check(reviews.read_reviews(path), {"s1": A}, known={"s1": {B}})


def test_check_refuses_decisions_that_do_not_fit_the_result(tmp_path):
    path = write(tmp_path, line("s1", A, "ACCEPT"))
    with pytest.raises(InputError, match="line 2: ACCEPT of sample 's1': a REVIEW result has no answer"):
        reviews.check(reviews.read_reviews(path), {"s1": A}, criteria={"s1": "REVIEW"})
    path = write(tmp_path, line("s1", A, "OVERRIDE_MET", reason="looks fine"))
    with pytest.raises(InputError, match="a FAILED analysis cannot be overridden"):
        reviews.check(reviews.read_reviews(path), {"s1": A}, criteria={"s1": "FAILED"})


def review(decision="ACCEPT", digest=A, reason="because"):
    return reviews.Review("s1", digest, decision, "Dr Ada", "2026-11-30", reason, None, "r.tsv", 2)


@pytest.mark.parametrize("criterion, signoff, final", [
    ("MET", "review_only", "MET"), ("NOT_MET", "review_only", "NOT_MET"),
    ("REVIEW", "review_only", "PENDING_REVIEW"), ("FAILED", "review_only", "FAILED"),
    ("MET", "all", "PENDING_REVIEW"), ("NOT_MET", "all", "PENDING_REVIEW"),
    ("REVIEW", "all", "PENDING_REVIEW"), ("FAILED", "all", "FAILED"),
])
def test_final_without_review(criterion, signoff, final):
    assert reviews.final_status(criterion, A, None, signoff).final == final


@pytest.mark.parametrize("criterion, decision, final", [
    ("MET", "ACCEPT", "MET"), ("NOT_MET", "ACCEPT", "NOT_MET"),
    ("REVIEW", "OVERRIDE_MET", "MET"), ("REVIEW", "OVERRIDE_NOT_MET", "NOT_MET"),
    ("MET", "OVERRIDE_NOT_MET", "NOT_MET"), ("REVIEW", "REJECT", "REJECTED"),
    ("FAILED", "REJECT", "REJECTED"), ("FAILED", "ACCEPT", "FAILED"),
])
def test_final_with_a_valid_review(criterion, decision, final):
    status = reviews.final_status(criterion, A, review(decision), "all")
    assert status.final == final
    assert status.review.decision == decision
    assert status.columns()["reviewed_by"] == "Dr Ada"


def test_a_review_that_does_not_fit_leaves_the_sample_pending():
    status = reviews.final_status("REVIEW", A, review("ACCEPT"), "review_only")
    assert status.final == "PENDING_REVIEW" and status.review is None


@pytest.mark.parametrize("regated, final", [
    (None, "PENDING_REVIEW"), ("MET", "MET"), ("NOT_MET", "NOT_MET"), ("REVIEW", "PENDING_REVIEW"),
    ("FAILED", "FAILED"),
])
def test_regate_final_comes_from_the_reviewed_result(regated, final):
    assert reviews.final_status("REVIEW", A, review("REGATE"), regated_criterion=regated).final == final


def test_a_stale_review_does_not_apply():
    status = reviews.final_status("MET", B, review("OVERRIDE_NOT_MET"), "review_only")
    assert status.final == "PENDING_REVIEW"
    assert status.review is None and status.stale.decision == "OVERRIDE_NOT_MET"
    assert "stale" in status.note
    assert status.columns()["reviewed_by"] is None


def test_latest_line_of_a_sample_wins():
    first, second = review("REJECT"), review("OVERRIDE_MET")
    assert reviews.latest_by_sample([first, second])["s1"] is second


def test_audit_is_appended_once_per_decision(tmp_path):
    audit = tmp_path / "audit.tsv"
    regate = reviews.Review("s2", B, "REGATE", "Dr Bo", "2026-11-30", "edit", tmp_path / "g.xml", "r.tsv", 3)
    applied = [(reviews.final_status("MET", A, review("ACCEPT")), A),
               (reviews.final_status("REVIEW", B, regate, regated_criterion="MET"), B)]
    rows = reviews.audit_rows(applied, {"s2": "c" * 64})
    assert [(r["result_sha256_before"], r["result_sha256_after"]) for r in rows] == [(A, A), (B, "c" * 64)]
    assert len(reviews.append_audit(audit, rows, "2026-12-01T10:00:00Z")) == 2
    # A rerun records nothing new, even at another time.
    assert reviews.append_audit(audit, rows, "2026-12-01T11:00:00Z") == []
    lines = audit.read_text().splitlines()
    assert len(lines) == 3 and lines[0].split("\t") == list(reviews.AUDIT_COLUMNS)
    assert reviews.known_digests(reviews.read_audit(audit)) == {"s1": {A}, "s2": {B}}
    # A new decision is appended below the old lines, which stay as they were.
    newer = reviews.audit_rows([(reviews.final_status("MET", A, review("REJECT")), A)])
    assert len(reviews.append_audit(audit, newer, "2026-12-02T09:00:00Z")) == 1
    assert audit.read_text().splitlines()[:3] == lines


def test_a_foreign_audit_file_is_refused(tmp_path):
    audit = tmp_path / "audit.tsv"
    audit.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="not a cd125gate audit trail"):
        reviews.read_audit(audit)
