"""Reviews file: each rule of a decision line, the final status, the append-only audit trail."""

import pytest

from cd125gate.errors import InputError
from cd125gate.review import audit as audit_trail
from cd125gate.review import reviews

A = "a" * 64
B = "b" * 64
G = "c" * 64
HEADER = "sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\tgates_sha256\n"


def write(tmp_path, *lines, header=HEADER):
    path = tmp_path / "reviews.tsv"
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def line(sample="s1", digest=A, decision="ACCEPT", reviewer="Dr Ada", day="2026-11-30", reason="", gates="",
         gates_sha256=None):
    if gates_sha256 is None:
        gates_sha256 = G if decision == "REGATE" else ""
    return "\t".join([sample, digest, decision, reviewer, day, reason, gates, gates_sha256])


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
    (line() + "\textra", "line 2: 9 cells but the header has 8"),
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
    with pytest.raises(InputError, match=r"line 2: result_sha256 of sample 's1' is not its current result.json"):
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
    rows = audit_trail.audit_rows(applied, {"s2": "c" * 64})
    assert [(r["result_sha256_before"], r["result_sha256_after"]) for r in rows] == [(A, A), (B, "c" * 64)]
    assert len(audit_trail.append_audit(audit, rows, "2026-12-01T10:00:00Z")) == 2
    # A rerun records nothing new, even at another time.
    assert audit_trail.append_audit(audit, rows, "2026-12-01T11:00:00Z") == []
    lines = audit.read_text().splitlines()
    assert len(lines) == 3 and lines[0].split("\t") == list(audit_trail.AUDIT_COLUMNS)
    assert audit_trail.known_digests(audit_trail.read_audit(audit)) == {"s1": {A}, "s2": {B}}
    # A new decision is appended below the old lines, which stay as they were.
    newer = audit_trail.audit_rows([(reviews.final_status("MET", A, review("REJECT")), A)])
    assert len(audit_trail.append_audit(audit, newer, "2026-12-02T09:00:00Z")) == 1
    assert audit.read_text().splitlines()[:3] == lines


def test_a_foreign_audit_file_is_refused(tmp_path):
    audit = tmp_path / "audit.tsv"
    audit.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="not a cd125gate audit trail"):
        audit_trail.read_audit(audit)


# --- issue 18: decisions are tamper-evident, every check before any job --------------------------

def test_accept_of_a_review_is_refused_even_after_an_earlier_decision_on_that_result(tmp_path):
    # The audit knowing this digest (an earlier override of it) must not let an ACCEPT through.
    path = write(tmp_path, line("s1", A, "OVERRIDE_MET", reason="tail is real"), line("s1", A, "ACCEPT"))
    with pytest.raises(InputError, match="line 3: ACCEPT of sample 's1': a REVIEW result has no answer"):
        reviews.check(reviews.read_reviews(path), {"s1": A}, known={"s1": {A}}, criteria={"s1": "REVIEW"})


def test_a_regate_line_must_bind_its_gates_file(tmp_path):
    (tmp_path / "edit.xml").write_text("<x/>")
    path = write(tmp_path, line(decision="REGATE", reason="x", gates="edit.xml", gates_sha256=""))
    with pytest.raises(InputError, match="line 2: REGATE of sample 's1': gates_sha256 is empty"):
        reviews.read_reviews(path)


def test_gates_edited_after_sign_out_are_refused_naming_the_line(tmp_path):
    from cd125gate.io.fileio import sha256_file

    gates = tmp_path / "edit.xml"
    gates.write_text("<signed/>")
    path = write(tmp_path, line(decision="REGATE", reason="x", gates="edit.xml", gates_sha256=sha256_file(gates)))
    lines = reviews.read_reviews(path)
    reviews.check(lines, {"s1": A})
    gates.write_text("<edited later/>")
    with pytest.raises(InputError) as err:
        reviews.check(lines, {"s1": A})
    assert str(err.value).startswith(f"{path}: line 2: REGATE of sample 's1': gates file {gates} is not the one signed")


def test_a_mistyped_digest_says_where_it_differs(tmp_path):
    typo = A[:20] + "b" + A[21:]
    path = write(tmp_path, line("s1", typo))
    with pytest.raises(InputError) as err:
        reviews.check(reviews.read_reviews(path), {"s1": A})
    message = str(err.value)
    assert "differs at character 21" in message and "stale" not in message
    assert "…aaaabaaaaaaa…" in message and "…aaaaaaaaaaaa…" in message


def test_a_byte_order_mark_and_a_quoted_header_are_read(tmp_path):
    path = tmp_path / "reviews.tsv"
    quoted = "\t".join(f'"{name}"' for name in HEADER.rstrip("\n").split("\t")) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + (quoted + line(reason='"said ""fine"""') + "\n").encode())
    got = reviews.read_reviews(path)
    assert got[0].sample_id == "s1" and got[0].reason == 'said "fine"'


def test_utf16_is_named_in_one_line(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text(HEADER + line() + "\n", encoding="utf-16")
    with pytest.raises(InputError) as err:
        reviews.read_reviews(path)
    assert str(err.value) == (f"{path}: reviews file is UTF-16 text; save it as UTF-8 "
                              "(Excel: 'Tab delimited text', not 'Unicode Text')")


def test_withdraw_takes_a_decision_back_and_needs_a_reason(tmp_path):
    path = write(tmp_path, line("s1", A, "OVERRIDE_MET", reason="tail is real"),
                 line("s1", A, "WITHDRAW", reason="wrong tube"))
    lines = reviews.read_reviews(path)
    reviews.check(lines, {"s1": A}, criteria={"s1": "REVIEW"})
    status = reviews.final_status("REVIEW", A, reviews.latest_by_sample(lines)["s1"])
    assert status.final == "PENDING_REVIEW" and "withdrawn by Dr Ada" in status.note
    rows = audit_trail.audit_rows([(status, A)])
    assert (rows[0]["decision"], rows[0]["reason"], rows[0]["final"]) == ("WITHDRAW", "wrong tube", "PENDING_REVIEW")
    with pytest.raises(InputError, match="line 2: WITHDRAW of sample 's1' gives no reason"):
        reviews.read_reviews(write(tmp_path, line("s1", A, "WITHDRAW")))


@pytest.mark.parametrize("lines", [
    [line("s1", A, "WITHDRAW", reason="oops")],
    [line("s1", A, "REJECT", reason="clot"), line("s1", A, "WITHDRAW", reason="x"),
     line("s1", A, "WITHDRAW", reason="again")],
    [line("s1", B, "REJECT", reason="clot"), line("s1", A, "WITHDRAW", reason="other result")],
])
def test_withdraw_needs_a_decision_in_effect_on_that_result(tmp_path, lines):
    path = write(tmp_path, *lines)
    with pytest.raises(InputError, match=f"line {len(lines) + 1}: WITHDRAW of sample 's1': no earlier decision"):
        reviews.check(reviews.read_reviews(path), {"s1": A}, known={"s1": {B}})


def recorded(tmp_path, *lines):
    """audit.tsv after applying each sample's latest line of a reviews file."""
    path = write(tmp_path, *lines)
    audit = tmp_path / "audit.tsv"
    latest = reviews.latest_by_sample(reviews.read_reviews(path)).values()
    applied = [(reviews.final_status("MET", r.result_sha256, r), r.result_sha256) for r in latest]
    audit_trail.append_audit(audit, audit_trail.audit_rows(applied), "2026-12-01T10:00:00Z")
    return audit


def test_the_audit_keys_on_what_was_decided_not_where_the_line_sits(tmp_path):
    audit = recorded(tmp_path, line("s1", A, "ACCEPT"), line("s2", B, "REJECT", reason="clot"))
    # The same decisions, moved: sorted otherwise, after a comment, in a file named by another path.
    moved = tmp_path / "sub" / "again.tsv"
    moved.parent.mkdir()
    moved.write_text(HEADER + "# second sitting\n" + line("s2", B, "REJECT", reason="clot") + "\n"
                     + line("s1", A, "ACCEPT") + "\n")
    lines = reviews.read_reviews(moved)
    applied = [(reviews.final_status("MET", r.result_sha256, r), r.result_sha256) for r in lines]
    assert audit_trail.append_audit(audit, audit_trail.audit_rows(applied), "2026-12-02T10:00:00Z") == []
    assert len(audit.read_text().splitlines()) == 3
    audit_trail.check_audit(lines, audit_trail.read_audit(audit), moved)


def test_a_reviews_file_that_lost_a_recorded_decision_stops_the_run(tmp_path):
    audit = recorded(tmp_path, line("s1", A, "ACCEPT"), line("s2", B, "REJECT", reason="clot"))
    second = write(tmp_path, line("s3", A, "ACCEPT"))  # a second sitting saved over the first
    with pytest.raises(InputError) as err:
        audit_trail.check_audit(reviews.read_reviews(second), audit_trail.read_audit(audit), second)
    assert str(err.value).startswith(f"{second}: ACCEPT of sample 's1' by Dr Ada on 2026-11-30 (recorded in")
    assert "no longer in this file" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="this run names no reviews file"):
        audit_trail.check_audit([], audit_trail.read_audit(audit), None, audit)


def test_an_audit_written_before_gates_digests_is_still_read_and_appended_to(tmp_path):
    audit = tmp_path / "audit.tsv"
    old = "\t".join(audit_trail.AUDIT_COLUMNS_V1) + "\n" + "\t".join(
        ["2026-11-30T10:00:00Z", "s1", "ACCEPT", "Dr Ada", "2026-11-30", "", "", A, A, "MET", "r.tsv", "2"]) + "\n"
    audit.write_text(old)
    audit_trail.check_audit([review("ACCEPT", reason="")], audit_trail.read_audit(audit), "r.tsv")
    newer = audit_trail.audit_rows([(reviews.final_status("MET", A, review("REJECT")), A)])
    assert len(audit_trail.append_audit(audit, newer, "2026-12-02T09:00:00Z")) == 1
    assert [len(row.split("\t")) for row in audit.read_text().splitlines()] == [12, 12, 12]
