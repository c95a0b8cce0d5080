"""The sign-out loop in the workflow: reviews checked before any job, final status, audit, re-gating."""

from pathlib import Path

import pytest

from conftest import one_error_line, run_snakemake

ROOT = Path(__file__).parents[1]
DIGEST = "ab" * 32


@pytest.mark.parametrize("line, problem", [
    (f"nosuch\t{DIGEST}\tACCEPT\tDr Ada\t2026-11-30\t", "line 2: unknown sample 'nosuch'"),
    (f"low_fmo\t{DIGEST}\tOVERRIDE_MET\tDr Ada\t2026-11-30\t", "line 2: OVERRIDE_MET of sample 'low_fmo' gives no reason"),
    (f"low_fmo\t{DIGEST}\tSIGN\tDr Ada\t2026-11-30\tok", "line 2: unknown decision 'SIGN'"),
    (f"low_fmo\t{DIGEST}\tACCEPT\tDr Ada\t30.11.2026\t", "line 2: date '30.11.2026'"),
    (f"low_fmo\t{DIGEST}\tACCEPT\tDr Ada\t2026-11-30\t", "line 2: sample 'low_fmo' has no result.json yet"),
])
@pytest.mark.slow
def test_a_bad_review_line_stops_the_run_before_any_job(tmp_path, line, problem):
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\n" + line + "\n")
    proc = run_snakemake(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out", f"reviews={reviews}")
    assert proc.returncode != 0
    assert one_error_line(proc).startswith(f"cd125gate: {reviews}: {problem}")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_signoff_must_be_known(tmp_path):
    proc = run_snakemake(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out", "signoff=some")
    assert proc.returncode != 0 and "signoff" in proc.stderr
    assert not (tmp_path / "out").exists()


# --- the whole loop on bundled samples --------------------------------------------------------------

LOOP = ("low_fmo", "near50_fmo", "few_blasts", "high_fmo")


def digest(path):
    from cd125gate.io.fileio import sha256_file

    return sha256_file(path)


def screening_rows(outdir):
    import csv

    with open(outdir / "screening.tsv", newline="") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle, delimiter="\t")}


@pytest.mark.slow
def test_the_sign_out_loop(tmp_path):
    import json
    import re

    from cd125gate.analysis import pipeline as analyze
    from cd125gate.analysis.numeric import stats
    from conftest import write_subset_sheet

    sheet = write_subset_sheet(tmp_path / "samples.tsv", set(LOOP))
    outdir = tmp_path / "results"
    first = run_snakemake(tmp_path, sheet, outdir)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = screening_rows(outdir)
    assert {sid: rows[sid]["criterion"] for sid in LOOP} == \
        {"low_fmo": "NOT_MET", "near50_fmo": "REVIEW", "few_blasts": "REVIEW", "high_fmo": "MET"}
    assert rows["near50_fmo"]["final"] == "PENDING_REVIEW" and rows["high_fmo"]["final"] == "MET"

    # The reviewer's lines: the digests are those of the results they looked at.
    results = {sid: outdir / "samples" / sid / "result.json" for sid in LOOP}
    gates = outdir / "samples" / "high_fmo" / "gates.xml"
    new_cut = 0.9
    text, n = re.subn(r'(<gating:RectangleGate gating:id="cd125_pos"[^>]*>\s*<gating:dimension[^>]*gating:min=")'
                      r'[^"]+(")', rf"\g<1>{new_cut}\g<2>", gates.read_text())
    assert n == 1
    (tmp_path / "edited_high_fmo.xml").write_text(text)
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text(
        "sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\tgates_sha256\n"
        f"low_fmo\t{digest(results['low_fmo'])}\tACCEPT\tDr Ada\t2026-11-30\t\t\t\n"
        f"near50_fmo\t{digest(results['near50_fmo'])}\tOVERRIDE_NOT_MET\tDr Ada\t2026-11-30\t"
        "CD125+ events are a dim tail of the negatives\t\t\n"
        f"few_blasts\t{digest(results['few_blasts'])}\tREJECT\tDr Bo\t2026-12-01\ttoo few blasts; re-acquire\t\t\n"
        f"high_fmo\t{digest(results['high_fmo'])}\tREGATE\tDr Bo\t2026-12-01\tFMO cut-off too low\t"
        f"edited_high_fmo.xml\t{digest(tmp_path / 'edited_high_fmo.xml')}\n")
    automatic = results["high_fmo"].read_bytes()
    second = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all")
    assert second.returncode == 0, second.stderr[-3000:]
    rows = screening_rows(outdir)
    assert {sid: rows[sid]["final"] for sid in LOOP} == \
        {"low_fmo": "NOT_MET", "near50_fmo": "NOT_MET", "few_blasts": "REJECTED", "high_fmo": "NOT_MET"}
    assert rows["near50_fmo"]["review_reason"] == "CD125+ events are a dim tail of the negatives"
    assert (rows["few_blasts"]["reviewed_by"], rows["few_blasts"]["reviewed_at"]) == ("Dr Bo", "2026-12-01")
    assert {sid: rows[sid]["criterion"] for sid in LOOP}["high_fmo"] == "MET"  # automatic answer kept

    # The reviewed result differs exactly as the edited gate implies; the automatic one is untouched.
    assert results["high_fmo"].read_bytes() == automatic
    reviewed = json.loads((outdir / "samples/high_fmo/reviewed_result.json").read_text())
    analysis = analyze.analyze_sample(*[ROOT / "test_data" / f"high_fmo_{t}.fcs" for t in ("stained", "control")],
                                      sample_id="high_fmo")
    blasts = analysis.stained.step("blasts").mask
    cd125 = analysis.stained.column(analysis.stained.markers["CD125"])
    positive, total = int((blasts & (cd125 >= new_cut)).sum()), int(blasts.sum())
    assert (reviewed["cd125_pos_events"], reviewed["blast_events"]) == (positive, total)
    assert reviewed["cd125_pos_fraction"] == positive / total
    assert (reviewed["ci_low"], reviewed["ci_high"]) == stats.wilson_interval(positive, total)
    assert float(rows["high_fmo"]["reviewed_cd125_pos_fraction"]) == positive / total

    # The audit records the four decisions, with the results before and after; a rerun adds nothing.
    audit = (outdir / "audit.tsv").read_text().splitlines()
    assert len(audit) == 5
    cells = {row["sample_id"]: row for row in audit_rows(outdir)}
    assert {sid: cells[sid]["decision"] for sid in LOOP} == \
        {"low_fmo": "ACCEPT", "near50_fmo": "OVERRIDE_NOT_MET", "few_blasts": "REJECT", "high_fmo": "REGATE"}
    assert (cells["high_fmo"]["result_sha256_before"], cells["high_fmo"]["result_sha256_after"]) == \
        (digest(results["high_fmo"]), digest(outdir / "samples/high_fmo/reviewed_result.json"))
    assert cells["high_fmo"]["gates_sha256"] == digest(tmp_path / "edited_high_fmo.xml")
    assert cells["low_fmo"]["result_sha256_before"] == cells["low_fmo"]["result_sha256_after"] == \
        digest(results["low_fmo"])
    again = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all")
    assert again.returncode == 0
    assert (outdir / "audit.tsv").read_text().splitlines() == audit

    tamper_evident_decisions(tmp_path, sheet, outdir, reviews, results)

    # A changed result makes its old review stale: the sample needs review again.
    # (Other analysis settings change every result: the confidence of the interval.)
    settings = tmp_path / "settings.yaml"
    settings.write_text("analysis:\n  criterion:\n    confidence: 0.99\n")
    changed = ("--configfile", str(ROOT / "config/config.yaml"), str(settings))
    third = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all", *changed)
    assert third.returncode == 0, third.stderr[-3000:]
    rows = screening_rows(outdir)
    assert rows["low_fmo"]["final"] == "PENDING_REVIEW" and rows["low_fmo"]["reviewed_by"] == ""
    assert "stale" in rows["low_fmo"]["review_note"]
    # The old line is history now, not an error; a new line with an unknown digest still stops the run.
    assert run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all", *changed).returncode == 0
    with reviews.open("a") as handle:
        handle.write(f"high_fmo\t{'0' * 64}\tACCEPT\tDr Ada\t2026-12-02\t\t\t\n")
    stopped = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", *changed)
    assert stopped.returncode != 0
    assert one_error_line(stopped).startswith(
        f"cd125gate: {reviews}: line 8: result_sha256 of sample 'high_fmo' is not its current result.json")


def audit_rows(outdir):
    import csv

    with open(outdir / "audit.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def refused(tmp_path, sheet, outdir, reviews, line, start):
    """Run with ``line`` added to the reviews file: it must stop before any job, naming the line."""
    kept = reviews.read_text()
    reviews.write_text(kept + line + "\n")
    proc = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all")
    reviews.write_text(kept)  # never applied: taking it out changes no record
    assert proc.returncode != 0
    message = one_error_line(proc)
    assert message.startswith(start), message
    return message


def tamper_evident_decisions(tmp_path, sheet, outdir, reviews, results):
    """Issue 18: decisions cannot be changed or lost without a word; every check before any job."""
    import re

    header, *lines = reviews.read_text().splitlines()
    audit = (outdir / "audit.tsv").read_text()
    next_line = f"cd125gate: {reviews}: line {len(lines) + 2}: "

    # The same decisions sorted, after a comment, in a file named by a relative path: no new audit row.
    (tmp_path / "sorted.tsv").write_text(header + "\n# a second copy, sorted\n" + "\n".join(sorted(lines)) + "\n")
    proc = run_snakemake(tmp_path, sheet, outdir, "reviews=sorted.tsv", "signoff=all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (outdir / "audit.tsv").read_text() == audit

    # A second sitting saved over the first, or no reviews file at all: the signed samples are not lost.
    (tmp_path / "second.tsv").write_text(header + "\n" + lines[0] + "\n")
    proc = run_snakemake(tmp_path, sheet, outdir, "reviews=second.tsv", "signoff=all")
    assert proc.returncode != 0 and "is no longer in this file" in one_error_line(proc)
    proc = run_snakemake(tmp_path, sheet, outdir, "signoff=all")
    assert proc.returncode != 0 and "this run names no reviews file" in one_error_line(proc)

    # Editing the gates file after sign-out is refused, naming the REGATE line.
    gates = tmp_path / "edited_high_fmo.xml"
    signed = gates.read_text()
    gates.write_text(signed.replace('gating:min="0.9"', 'gating:min="0.2"'))
    proc = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all")
    gates.write_text(signed)
    assert proc.returncode != 0
    assert one_error_line(proc).startswith(f"cd125gate: {reviews}: line 5: REGATE of sample 'high_fmo': "
                                           f"gates file {gates} is not the one signed")

    # An ACCEPT of a REVIEW, broken or unusable edited gates: refused before any job, naming the line.
    near50 = digest(results["near50_fmo"])
    refused(tmp_path, sheet, outdir, reviews, f"near50_fmo\t{near50}\tACCEPT\tDr Ada\t2026-12-02\t\t\t",
            next_line + "ACCEPT of sample 'near50_fmo': a REVIEW result has no answer to accept")
    reviewed = outdir / "samples/high_fmo/reviewed_result.json"
    earlier = reviewed.read_bytes()
    high = digest(results["high_fmo"])
    for name, text, problem in [
            ("broken.xml", signed[: len(signed) // 2], "not a usable Gating-ML 2.0 document"),
            ("unknown_channel.xml", re.sub(r'(gating:id="cd125_pos".*?data-type:name=")PE-A"', r'\g<1>PE-Z-A"',
                                           signed, flags=re.S),
             "gate 'cd125_pos' uses channel(s) PE-Z-A, which high_fmo_stained.fcs does not have")]:
        (tmp_path / name).write_text(text)
        message = refused(tmp_path, sheet, outdir, reviews,
                          f"high_fmo\t{high}\tREGATE\tDr Bo\t2026-12-02\tagain\t{name}\t{digest(tmp_path / name)}",
                          next_line + f"REGATE of sample 'high_fmo': {tmp_path / name}: ")
        assert problem in message
    assert reviewed.read_bytes() == earlier

    # A superseding REGATE writes a file of its own: the earlier reviewed result is kept.
    (tmp_path / "second_edit.xml").write_text(signed.replace('gating:min="0.9"', 'gating:min="1.1"'))
    decisions = outdir / "samples/high_fmo/reviewed"
    earlier_files = {p: p.read_bytes() for p in decisions.glob("*/reviewed_result.json")}
    assert len(earlier_files) == 1
    # A WITHDRAW takes the override of near50_fmo back; the audit records it.
    with reviews.open("a") as handle:
        handle.write(f"high_fmo\t{high}\tREGATE\tDr Bo\t2026-12-02\tcut-off higher still\tsecond_edit.xml\t"
                     f"{digest(tmp_path / 'second_edit.xml')}\n"
                     f"near50_fmo\t{near50}\tWITHDRAW\tDr Ada\t2026-12-02\toverride was on the wrong tube\t\t\n")
    proc = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}", "signoff=all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(path.read_bytes() == data for path, data in earlier_files.items())
    assert len(list(decisions.glob("*/reviewed_result.json"))) == 2
    assert reviewed.read_bytes() != earlier
    rows = screening_rows(outdir)
    assert rows["high_fmo"]["reviewed_result_sha256"] == digest(reviewed)
    assert (rows["near50_fmo"]["final"], rows["near50_fmo"]["review_decision"]) == ("PENDING_REVIEW", "WITHDRAW")
    recorded = audit_rows(outdir)
    assert {(r["sample_id"], r["decision"]) for r in recorded[4:]} == \
        {("near50_fmo", "WITHDRAW"), ("high_fmo", "REGATE")} and len(recorded) == 6
    assert (outdir / "audit.tsv").read_text().startswith(audit)
