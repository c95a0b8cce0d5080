"""The whole sign-out loop as a reviewer walks it: the workflow, then the page in Chromium, twice over.

Two sittings: the first signs three samples (one REGATE from an edited gates
file) and downloads the reviews file; the workflow is rerun with it; the
second sitting opens the new page, which starts from the decisions already
applied, adds one, survives a reload, and downloads the complete file; the
workflow is rerun again. Then the loop goes on as a trial record must survive
it: the signed gates file edited after sign-out (the run refused, nothing
changed), a decision withdrawn from the page, and a superseding REGATE whose
gates file is broken (refused; the earlier re-gating kept). At each step
screening.tsv, audit.tsv, the page, the sign-out records and batch.wsp must agree.
"""

import csv
import io
import json
import re
import zlib

import pytest

from cd125gate.io.fileio import sha256_file
from conftest import driver_out, one_error_line, run_chromium, run_snakemake, write_subset_sheet

LOOP = ("low_fmo", "near50_fmo", "few_blasts", "high_fmo")
NEW_CUT = 0.45  # high_fmo's CD125 cut-off moved up (transformed units): 57% CD125+, still MET

# Signs the cards named in ACTIONS one after another, a chosen gates file included, then reports.
DRIVER = """<script>
window.addEventListener("load", function () {
  var actions = %s, out = {errors: {}};
  function card(id) { return document.querySelector('.card[data-sample-id="' + id + '"]'); }
  function finish() {
    out.text = document.getElementById("review-lines").value;
    out.earlier = document.getElementById("earlier-count").textContent;
    out.pending = document.body.getAttribute("data-pending");
    out.summary = document.getElementById("pending").textContent;
    out.figureBeside = document.querySelectorAll(".sign.open img.full-figure").length;
    out.offered = {};  // the decision each card offers a WITHDRAW against ('' for none)
    Array.prototype.forEach.call(document.querySelectorAll(".card"), function (c) {
      out.offered[c.getAttribute("data-sample-id")] = c.getAttribute("data-decision");
    });
    var pre = document.createElement("pre"); pre.id = "driver-out"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  function next(i) {
    if (i >= actions.length) { finish(); return; }
    var a = actions[i], form = window.cd125gateOpenControls(card(a.id).id), f = form.elements;
    f.decision.value = a.decision; f.decision.dispatchEvent(new Event("change"));
    f.reviewer.value = a.reviewer; f.reason.value = a.reason || ""; f.date.value = a.date;
    var waits = 0;
    function add() {
      // The SHA-256 of a chosen file is computed asynchronously; wait for it where the format has the column.
      if (a.gatesText && f.gates_sha256 && !f.gates_sha256.value && waits++ < 50) { setTimeout(add, 20); return; }
      f.add.click();
      out.errors[a.id] = form.querySelector(".control-error").textContent;
      next(i + 1);
    }
    if (a.gatesText) {
      var dt = new DataTransfer();
      dt.items.add(new File([a.gatesText], a.gates, {type: "application/xml"}));
      f.gatesfile.files = dt.files; f.gatesfile.dispatchEvent(new Event("change"));
    }
    add();
  }
  next(0);
});
</script>
</body>"""


def sitting(page, profile, actions=()):
    """Open ``page`` in Chromium with the browser profile ``profile`` and carry out ``actions``."""
    driven = page.with_name(f"driven_{len(list(page.parent.glob('driven_*')))}.html")
    driven.write_text(page.read_text(encoding="utf-8").replace("</body>", DRIVER % json.dumps(list(actions))),
                      encoding="utf-8")
    dom, console = run_chromium(profile, "--virtual-time-budget=5000", "--dump-dom", driven.as_uri(), timeout=180)
    assert console == []
    assert "data-js-error" not in dom[:dom.index(">", dom.index("<body"))]
    return driver_out(dom)


# Lays the page out as it prints (print rules applied on screen, at the width of A4 landscape
# between its margins) and names each card whose signature block falls off its sheet.
PRINT_LAYOUT = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var off = [];
  Array.prototype.forEach.call(document.querySelectorAll(".card"), function (c) {
    var sheet = c.getBoundingClientRect(), signature = c.querySelector(".signature").getBoundingClientRect();
    if (signature.bottom > sheet.bottom + 0.5) { off.push(c.getAttribute("data-sample-id")); }
  });
  var pre = document.createElement("pre"); pre.id = "driver-out"; pre.textContent = JSON.stringify(off);
  document.body.appendChild(pre);
}, 300); });
</script>
</body>"""


def signatures_off_the_sheet(page, profile):
    text = page.read_text(encoding="utf-8").replace("@media print {", "@media all {")
    laid = page.with_name("print_layout.html")
    laid.write_text(text.replace("@media screen {", "@media not all {").replace("</body>", PRINT_LAYOUT),
                    encoding="utf-8")
    dom, _ = run_chromium(profile, "--virtual-time-budget=5000", "--window-size=1062,794", "--dump-dom",
                          laid.as_uri(), timeout=180)
    return driver_out(dom)


def pdf_text(path):
    """The decompressed content streams of a PDF: matplotlib writes each text run there as it reads."""
    data = path.read_bytes()
    text = b""
    for match in re.finditer(rb"stream\r?\n", data):
        try:
            text += zlib.decompress(data[match.end():data.find(b"endstream", match.end())])
        except zlib.error:
            continue
    return text


def pdf_lines(path):
    """The text lines of a PDF as printed: each TJ array's strings joined, kerning and escapes dropped."""
    lines = []
    for array in re.finditer(rb"\[(.*?)\]\s*TJ", pdf_text(path), re.S):
        strings = re.findall(rb"\(((?:\\.|[^\\)])*)\)", array.group(1))
        lines.append(re.sub(rb"\\(.)", rb"\1", b"".join(strings)).decode("latin-1"))
    return lines


def rows(outdir):
    with open(outdir / "screening.tsv", newline="") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle, delimiter="\t")}


def audit(outdir):
    with open(outdir / "audit.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def decision_lines(text):
    """The decision lines of a reviews file (header and blank lines left out)."""
    return [line for line in text.splitlines()[1:] if line.strip()]


def card_of(page_text, sample_id):
    card = page_text[page_text.index(f'data-sample-id="{sample_id}"'):]
    return card[:card.index("</section>")]


def reviews_of(text):
    """The decision lines of a reviews file as dicts (column -> cell)."""
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def records(outdir):
    """Every file the workflow wrote, by path and bytes (the pages this test drives left out)."""
    return {p.relative_to(outdir): p.read_bytes() for p in sorted(outdir.rglob("*"))
            if p.is_file() and not p.name.startswith("driven_") and p.name != "print_layout.html"}


def changed(before, outdir):
    """The files of ``outdir`` (as `records` reads them) that differ from ``before``, appeared or went."""
    now = records(outdir)
    return sorted(str(path) for path in before.keys() | now.keys() if before.get(path) != now.get(path))


def agree(outdir):
    """screening.tsv, audit.tsv, the page and every signout.pdf say the same of each sample."""
    page, trail = (outdir / "report.html").read_text(), audit(outdir)
    for sid, row in rows(outdir).items():
        card, printed = card_of(page, sid), pdf_lines(outdir / "samples" / sid / "signout.pdf")
        decision = row["review_decision"]
        in_effect = "" if decision in ("", "WITHDRAW") else decision
        assert f'data-final="{row["final"]}" data-decision="{in_effect}"' in card, sid
        assert f"Final status: {row['final'].replace('_', ' ')}" in printed, sid
        recorded = [r for r in trail if r["sample_id"] == sid]
        if decision:
            said = f"{decision} by {row['reviewed_by']} on {row['reviewed_at']}"
            label = "Decision withdrawn" if decision == "WITHDRAW" else "Reviewed"
            assert f"<b>{label}:</b> {said}" in card, sid
            assert [line.rstrip() for line in printed if line.startswith("Review: ")] == [f"Review: {said}"], sid
            # The decision in effect is the last one the audit recorded for the sample, on this result.
            last = recorded[-1]
            assert (last["decision"], last["reviewer"], last["date"], last["reason"], last["final"]) == \
                (decision, row["reviewed_by"], row["reviewed_at"], row["review_reason"], row["final"]), sid
            assert last["result_sha256_before"] == row["result_sha256"], sid
            assert last["result_sha256_after"] == (row["reviewed_result_sha256"] or row["result_sha256"]), sid
        else:
            assert "<b>Not reviewed</b>" in card and recorded == [], sid
        reviewed = row["reviewed_result_sha256"]
        if reviewed:  # the record is the re-gated result: the same file on every side
            assert reviewed == sha256_file(outdir / "samples" / sid / "reviewed_result.json")
            assert 'class="regated"' in card and reviewed in card and f"   {reviewed}" in printed, sid
        else:
            assert 'class="regated"' not in card and "reviewed_result.json (this record), sha256:" not in printed


def regate_line(reviews, sample_id):
    """The line number of the sample's last REGATE line in the reviews file (1 = header)."""
    numbers = [n for n, line in enumerate(reviews.read_text().splitlines(), 1)
               if line.startswith(f"{sample_id}\t") and "\tREGATE\t" in line]
    return numbers[-1]


def signed_gates_edited_after_sign_out(tmp_path, sheet, outdir, reviews):
    """The signed gates file edited after sign-out: the run stops before any job, naming the REGATE line."""
    gates = tmp_path / "edited_high_fmo.xml"
    signed, before = gates.read_text(), records(outdir)
    gates.write_text(signed.replace(f'gating:min="{NEW_CUT}"', 'gating:min="0.2"'))
    assert gates.read_text() != signed
    refused = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}")
    gates.write_text(signed)  # the reviewer puts back the file signed
    assert refused.returncode != 0
    assert one_error_line(refused).startswith(
        f"cd125gate: {reviews}: line {regate_line(reviews, 'high_fmo')}: REGATE of sample 'high_fmo': "
        f"gates file {gates.resolve()} is not the one signed")
    assert changed(before, outdir) == []  # screening.tsv, audit.tsv, the page, every signout.pdf: untouched
    agree(outdir)


def decision_withdrawn_on_the_page(tmp_path, sheet, outdir, reviews, profile):
    """A WITHDRAW built on the page takes near50_fmo's override back everywhere."""
    digest = sha256_file(outdir / "samples/near50_fmo/result.json")
    recorded = audit(outdir)
    page = sitting(outdir / "report.html", profile, [
        {"id": "near50_fmo", "decision": "WITHDRAW", "reviewer": "Dr Ada", "date": "2026-12-03",
         "reason": "override was on the wrong tube"}])
    # The page offers a WITHDRAW against each decision in effect, as screening.tsv has them.
    assert page["offered"] == {sid: r["review_decision"] for sid, r in rows(outdir).items()}
    assert page["errors"] == {"near50_fmo": ""}
    built = reviews_of(page["text"])
    assert built[:-1] == reviews_of(reviews.read_text())
    assert (built[-1]["sample_id"], built[-1]["result_sha256"], built[-1]["decision"]) == \
        ("near50_fmo", digest, "WITHDRAW")
    reviews.write_text(page["text"])

    run = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}")
    assert run.returncode == 0, run.stderr[-3000:]
    table = rows(outdir)
    assert {sid: r["final"] for sid, r in table.items()} == \
        {"low_fmo": "NOT_MET", "near50_fmo": "PENDING_REVIEW", "few_blasts": "REJECTED", "high_fmo": "MET"}
    near = table["near50_fmo"]
    assert (near["review_decision"], near["reviewed_by"], near["reviewed_at"], near["review_reason"]) == \
        ("WITHDRAW", "Dr Ada", "2026-12-03", "override was on the wrong tube")
    # The audit keeps the override and records the withdrawal after it.
    now = audit(outdir)
    assert now[:len(recorded)] == recorded
    assert [(r["sample_id"], r["decision"], r["final"], r["result_sha256_before"], r["result_sha256_after"])
            for r in now[len(recorded):]] == [("near50_fmo", "WITHDRAW", "PENDING_REVIEW", digest, digest)]
    # The page puts it back under "Needs attention"; its sign-out record no longer says NOT MET.
    text = (outdir / "report.html").read_text()
    attention = text[text.index('class="attention"'):text.index("</div>", text.index('class="attention"'))]
    assert "near50_fmo" in attention and "few_blasts" not in attention
    assert "Final status: NOT MET" not in pdf_lines(outdir / "samples/near50_fmo/signout.pdf")
    assert '<GroupNode name="re-gated"' in (outdir / "batch.wsp").read_text()
    agree(outdir)
    # The next sitting starts from all five lines; near50_fmo waits again, with nothing left to withdraw.
    after = sitting(outdir / "report.html", profile)
    assert after["earlier"] == "5" and after["pending"] == "1" and after["offered"]["near50_fmo"] == ""
    assert after["text"] == reviews.read_text()


def broken_superseding_regate(tmp_path, sheet, outdir, reviews, profile, edited):
    """A REGATE of high_fmo from a broken gates file, built on the page: refused before any job, the earlier
    re-gating kept; the page itself refuses a second WITHDRAW of near50_fmo."""
    broken = edited[:len(edited) // 2]  # a Gating-ML export cut short
    (tmp_path / "broken_high_fmo.xml").write_text(broken)
    before = records(outdir)
    page = sitting(outdir / "report.html", profile, [
        {"id": "high_fmo", "decision": "REGATE", "reviewer": "Dr Bo", "date": "2026-12-04",
         "reason": "cut-off higher still", "gates": "broken_high_fmo.xml", "gatesText": broken},
        {"id": "near50_fmo", "decision": "WITHDRAW", "reviewer": "Dr Ada", "date": "2026-12-04",
         "reason": "again"}])
    assert page["errors"] == {"high_fmo": "", "near50_fmo": "no decision applied to withdraw"}
    built = reviews_of(page["text"])
    assert len(built) == 6 and built[-1]["decision"] == "REGATE"
    assert built[-1]["gates_sha256"] == sha256_file(tmp_path / "broken_high_fmo.xml")
    reviews.write_text(page["text"])

    refused = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}")
    assert refused.returncode != 0
    message = one_error_line(refused)
    assert message.startswith(f"cd125gate: {reviews}: line {regate_line(reviews, 'high_fmo')}: REGATE of sample "
                              f"'high_fmo': {(tmp_path / 'broken_high_fmo.xml').resolve()}: "
                              "not a usable Gating-ML 2.0 document"), message
    # The earlier REGATE's reviewed_result.json (and its decision folder) and signout.pdf are byte-identical,
    # and still the record the table, the audit and the page name.
    assert changed(before, outdir) == []
    assert rows(outdir)["high_fmo"]["reviewed_result_sha256"] == \
        sha256_file(outdir / "samples/high_fmo/reviewed_result.json")
    agree(outdir)


@pytest.mark.slow
def test_two_sittings_build_one_reviews_file_and_every_record_agrees(tmp_path):
    sheet = write_subset_sheet(tmp_path / "samples.tsv", set(LOOP))
    outdir = tmp_path / "results"
    profile = tmp_path / "browser-profile"  # one reviewer's browser across both sittings
    first = run_snakemake(tmp_path, sheet, outdir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert {sid: r["final"] for sid, r in rows(outdir).items()} == \
        {"low_fmo": "NOT_MET", "near50_fmo": "PENDING_REVIEW", "few_blasts": "PENDING_REVIEW", "high_fmo": "MET"}

    # Sitting 1: the reviewer edits high_fmo's cut-off in a gates file and signs three samples.
    gates = (outdir / "samples/high_fmo/gates.xml").read_text()
    edited, n = re.subn(r'(<gating:RectangleGate gating:id="cd125_pos"[^>]*>\s*<gating:dimension[^>]*gating:min=")'
                        r'[^"]+(")', rf"\g<1>{NEW_CUT}\g<2>", gates)
    assert n == 1
    (tmp_path / "edited_high_fmo.xml").write_text(edited)
    one = sitting(outdir / "report.html", profile, [
        {"id": "low_fmo", "decision": "ACCEPT", "reviewer": "Dr Ada", "date": "2026-11-30"},
        {"id": "near50_fmo", "decision": "OVERRIDE_NOT_MET", "reviewer": "Dr Ada", "date": "2026-11-30",
         "reason": "CD125+ events are a dim tail of the negatives"},
        {"id": "high_fmo", "decision": "REGATE", "reviewer": "Dr Bo", "date": "2026-12-01",
         "reason": "FMO cut-off too low", "gates": "edited_high_fmo.xml", "gatesText": edited}])
    assert one["errors"] == {"low_fmo": "", "near50_fmo": "", "high_fmo": ""}
    assert one["earlier"] == "0" and one["pending"] == "1"  # few_blasts: the one REVIEW without a line
    assert one["figureBeside"] == 3
    assert len(decision_lines(one["text"])) == 3
    if "gates_sha256" in one["text"].splitlines()[0]:  # the format that binds the gates file
        assert sha256_file(tmp_path / "edited_high_fmo.xml") in one["text"]
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text(one["text"])

    second = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}")
    assert second.returncode == 0, second.stderr[-3000:]
    reviewed = json.loads((outdir / "samples/high_fmo/reviewed_result.json").read_text())
    assert reviewed["criterion"] == "MET" and reviewed["cd125_pos_events"] < reviewed["blast_events"] * 0.75
    after_first = rows(outdir)
    assert {sid: r["final"] for sid, r in after_first.items()} == \
        {"low_fmo": "NOT_MET", "near50_fmo": "NOT_MET", "few_blasts": "PENDING_REVIEW", "high_fmo": "MET"}
    assert sorted(r["sample_id"] for r in audit(outdir)) == ["high_fmo", "low_fmo", "near50_fmo"]

    # The record of high_fmo is the re-gated result, on the page and in its sign-out record.
    page = (outdir / "report.html").read_text()
    card = card_of(page, "high_fmo")
    assert 'class="regated"' in card and f"({reviewed['cd125_pos_events']:,} positive)" in card
    assert sha256_file(outdir / "samples/high_fmo/reviewed_result.json") in card
    index = re.search(r'<section [^>]*id="s(\d+)"[^>]*data-sample-id="high_fmo"', page).group(1)
    assert (outdir / f"report_files/s{index}/key_cd125.png").read_bytes() == \
        (outdir / "samples/high_fmo/reviewed_qc_key_cd125.png").read_bytes()
    # signout.pdf too: it prints the digests of the re-gated result and of the gates file it came from.
    record = pdf_text(outdir / "samples/high_fmo/signout.pdf")
    assert sha256_file(outdir / "samples/high_fmo/reviewed_result.json").encode() in record
    assert reviewed["review"]["gates_sha256"].encode() in record
    assert b"REJECT" not in pdf_text(outdir / "samples/few_blasts/signout.pdf")
    # Decided samples no longer wait under "Needs attention"; the undecided one does.
    attention = page[page.index('class="attention"'):page.index("</div>", page.index('class="attention"'))]
    assert "few_blasts" in attention and "near50_fmo" not in attention
    # Printed, every page keeps its signature block, the re-gated one with its comparison included.
    assert signatures_off_the_sheet(outdir / "report.html", tmp_path / "print-profile") == []
    # batch.wsp holds the re-gated tubes as a group of their own.
    assert '<GroupNode name="re-gated"' in (outdir / "batch.wsp").read_text()
    agree(outdir)

    # Sitting 2 builds on the first: the page starts from the decisions applied, and adds one.
    two = sitting(outdir / "report.html", profile, [
        {"id": "few_blasts", "decision": "REJECT", "reviewer": "Dr Bo", "date": "2026-12-02",
         "reason": "too few blasts; re-acquire"}])
    assert two["errors"] == {"few_blasts": ""}
    assert two["earlier"] == "3" and two["pending"] == "0"
    assert decision_lines(two["text"])[:3] == decision_lines(one["text"])
    assert len(decision_lines(two["text"])) == 4
    # A reload keeps the line not yet saved; the applied ones are not added twice.
    reloaded = sitting(outdir / "report.html", profile)
    assert reloaded["text"] == two["text"]
    reviews.write_text(two["text"])  # saved over the batch's reviews file, as the page says

    third = run_snakemake(tmp_path, sheet, outdir, f"reviews={reviews}")
    assert third.returncode == 0, third.stderr[-3000:]
    assert {sid: r["final"] for sid, r in rows(outdir).items()} == \
        {"low_fmo": "NOT_MET", "near50_fmo": "NOT_MET", "few_blasts": "REJECTED", "high_fmo": "MET"}
    assert sorted(r["sample_id"] for r in audit(outdir)) == ["few_blasts", "high_fmo", "low_fmo", "near50_fmo"]
    assert b"REJECT" in pdf_text(outdir / "samples/few_blasts/signout.pdf")
    assert sha256_file(outdir / "samples/high_fmo/reviewed_result.json").encode() in \
        pdf_text(outdir / "samples/high_fmo/signout.pdf")
    # The next sitting starts from all four; nothing is pending and no line is left unsaved.
    last = sitting(outdir / "report.html", profile)
    assert last["earlier"] == "4" and last["pending"] == "0"
    assert decision_lines(last["text"]) == decision_lines(two["text"])
    assert "PENDING REVIEW" not in last["summary"]
    agree(outdir)

    signed_gates_edited_after_sign_out(tmp_path, sheet, outdir, reviews)
    decision_withdrawn_on_the_page(tmp_path, sheet, outdir, reviews, profile)
    broken_superseding_regate(tmp_path, sheet, outdir, reviews, profile, edited)
