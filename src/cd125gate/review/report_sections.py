"""The HTML pieces of the review page: batch summary, table row, and the text sections of a card.

Everything here is text from a sample's result and screening row; the figures
(thumbnails, printed key plots) and the assembly of the page are in `report`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate import results
from cd125gate.results import formatting as fmt

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cd125gate.results import GateCount, SampleResult
    from cd125gate.review.report_samples import Sample

CRITERIA = ("FAILED", "REVIEW", "NOT_MET", "MET")  # attention order: worst first
LABELS = {"MET": "MET", "NOT_MET": "NOT MET", "REVIEW": "REVIEW", "FAILED": "FAILED",
          "PENDING_REVIEW": "PENDING REVIEW", "REJECTED": "REJECTED"}


def label(status: str) -> str:
    """A criterion or final status as people read it (``NOT_MET`` -> ``NOT MET``)."""
    return LABELS.get(status, status)


def badge(criterion: str) -> str:
    return f'<span class="badge {escape(criterion)}">{escape(label(criterion))}</span>'


# --- the batch -----------------------------------------------------------------------------------


def counts(samples: list[Sample]) -> str:
    boxes = []
    for criterion in CRITERIA:
        n = sum(s.criterion == criterion for s in samples)
        boxes.append(f'<div class="count {criterion}-box"><b>{n}</b>{badge(criterion)}</div>')
    return "".join(boxes)


def attention(samples: list[Sample]) -> str:
    """REVIEW and FAILED samples not yet decided, worst first, each with its reasons and a link to its card.

    A sample whose decision the batch applied is not waiting for anyone (a
    REVIEW re-gated to REVIEW is: its final status is still PENDING_REVIEW).
    """
    items = []
    for criterion in ("FAILED", "REVIEW"):
        for i, s in enumerate(samples):
            decided = s.decision and s.final != "PENDING_REVIEW"
            if s.criterion == criterion and not decided:
                reasons = "; ".join(s.result.reasons) or "no reason recorded"
                items.append(f'<li>{badge(criterion)} <a href="#s{i}">{escape(s.sample_id)}</a>: '
                             f"{escape(reasons)}</li>")
    if not items:
        return '<p>No sample needs attention: none is waiting for a decision.</p>'
    return f'<div class="attention"><b>Needs attention ({len(items)})</b><ul>{"".join(items)}</ul></div>'


def problems(samples: list[Sample]) -> str:
    items = [f'<li><a href="#s{i}">{escape(s.sample_id)}</a>: {escape(p)}</li>'
             for i, s in enumerate(samples) for p in s.problems]
    if not items:
        return ""
    return f'<div class="problems"><b>Incomplete outputs ({len(items)})</b><ul>{"".join(items)}</ul></div>'


def flag_summary(samples: list[Sample]) -> str:
    tally = {}
    for s in samples:
        for flag in dict.fromkeys(s.result.flags):
            tally[flag] = tally.get(flag, 0) + 1
    if not tally:
        return ""
    rows = "".join(f"<tr><td>{escape(f)}</td><td class=\"num\">{n}</td></tr>"
                   for f, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))
    return f'<h3>Flags</h3><table class="flags"><tr><th>Flag</th><th>Samples</th></tr>{rows}</table>'


def filters(samples: list[Sample]) -> str:
    present = [c for c in CRITERIA if any(s.criterion == c for s in samples)]
    return "\n".join(f'<label><input type="checkbox" value="{c}" checked> {badge(c)} '
                     f"({sum(s.criterion == c for s in samples)})</label>" for c in present)


def table_row(i: int, s: Sample) -> str:
    """The sample's row of the sortable table (its automatic result)."""
    r = s.result
    fraction, blasts, cutoff = r.cd125_pos_fraction, r.blast_events, r.cutoff
    method = cutoff.method if cutoff else "–"
    value = cutoff.value_raw if cutoff else None
    flags = list(r.flags) + s.problems
    final = s.final
    control = s.row.control_pos_fraction if s.row is not None else results.control_pos_fraction(r.control_gates)
    ratio = r.median_ratio
    fcs = r.input_file("fcs")
    fcs_name = Path(fcs.path or "").name if fcs else ""
    return (f'<tr class="row-{s.criterion}" data-criterion="{s.criterion}">'
            f'<td><a href="#s{i}">{escape(s.sample_id)}</a></td>'
            f'<td data-sort="{CRITERIA.index(s.criterion)}">{badge(s.criterion)}</td>'
            f'<td class="num" data-sort="{-1 if fraction is None else fraction}">'
            f'{escape(fmt.percent_with_ci(fraction, r.ci_low, r.ci_high))}</td>'
            f'<td class="num" data-sort="{-1 if blasts is None else blasts}">{fmt.count(blasts)}</td>'
            f"<td>{escape(method)}</td><td>{escape('; '.join(flags))}</td>"
            f'<td data-sort="{escape(final)}">{badge(final)}</td>'
            f"<td>{escape(str(r.patient_id or ''))}</td><td>{escape(str(r.specimen or ''))}</td>"
            f'<td class="num" data-sort="{-1 if value is None else value}">'
            f'{"–" if value is None else fmt.raw_value(value)}</td>'
            f'<td class="num" data-sort="{-1 if control is None else control}">{escape(fmt.percent(control))}</td>'
            f'<td class="num" data-sort="{-1 if ratio is None else ratio}">{"–" if ratio is None else f"{ratio:.2f}"}</td>'
            f"<td>{escape(fcs_name)}</td></tr>")


def controls_template() -> str:
    """The decision controls the page's script puts into a card: decision, reviewer, date, reason, gates."""
    return ('<template id="controls-template"><form class="controls" onsubmit="return false">'
            f'<b>Sign out</b> '
            f'<label>Decision <select name="decision"><option value="">choose…</option>{_options()}</select></label> '
            f'<label>Reviewer <input name="reviewer" size="14"></label> '
            f'<label>Date <input name="date" size="10" placeholder="YYYY-MM-DD"></label> '
            f'<label class="reason">Reason <input name="reason" size="40"></label> '
            f'<label class="gates">Edited gates <input name="gates" size="24" placeholder="edited_gates.xml"></label> '
            # The file itself, read by the page only to compute the SHA-256 the line binds.
            f'<label class="gates">file <input type="file" name="gatesfile" accept=".xml"></label> '
            f'<input name="gates_sha256" class="gates digest" size="20" readonly placeholder="SHA-256 of the file"> '
            f'<button type="button" name="add">Add line</button> '
            f'<span class="control-error" role="alert"></span></form></template>')


def _options() -> str:
    from cd125gate.review.reviews import DECISIONS  # the decisions the workflow reads, in one place

    return "".join(f'<option value="{d}">{d}</option>' for d in DECISIONS)


# --- a card's text -------------------------------------------------------------------------------


def headline(s: Sample) -> str:
    """The card's title and its count line: criterion, final status, CD125+ share of blasts."""
    r = s.record
    regated = '<span class="regated">re-gated</span> ' if s.reviewed else ""
    return (f"<h3>{escape(s.sample_id)} {regated}{badge(r.criterion)} "
            f"<span class=\"final\">final: {badge(s.final)}</span></h3>\n"
            + review_status(s) + "\n"
            + f"<p>CD125+ {escape(fmt.percent_with_ci(r.cd125_pos_fraction, r.ci_low, r.ci_high))} of "
              f"{escape(fmt.count(r.blast_events))} blasts ({escape(fmt.count(r.cd125_pos_events))} positive)"
              f"{escape(_needed(r))}</p>")


def card_flags(s: Sample) -> list[str]:
    """The record's flags; a re-gated record's own flag is left out (the comparison names the gates file)."""
    flags = list(s.record.flags)
    if s.reviewed is not None:
        automatic = s.result.flags
        flags = [f for f in flags if f not in automatic and not f.startswith("re-gated")] + \
            [f for f in flags if f in automatic]
    return flags + s.problems


def decision_in_effect(s: Sample) -> str:
    """The decision a WITHDRAW line could take back ('' when none: nothing applied, or already withdrawn)."""
    return "" if s.decision == "WITHDRAW" else s.decision


def comparison(s: Sample) -> str:
    """A re-gated record's automatic result, for comparison, and the digests that bind the two."""
    if s.reviewed is None:
        return ""
    automatic, review = s.result, s.reviewed.regate
    cutoff = automatic.cutoff
    summary = (f"{label(automatic.criterion)} · CD125+ "
               f"{fmt.percent_with_ci(automatic.cd125_pos_fraction, automatic.ci_low, automatic.ci_high)}"
               f" · {fmt.count(automatic.cd125_pos_events)} of {fmt.count(automatic.blast_events)} blasts"
               + (f" · cut-off {fmt.raw_value(cutoff.value_raw)} raw" if cutoff is not None else ""))
    digests = [("result.json", review.source_result_sha256),
               ("reviewed_result.json", s.row.reviewed_result_sha256 if s.row is not None else None),
               (f"gates {Path(str(review.gates)).name}", review.gates_sha256)]
    # Compact for paper: one line each, the digests in full (they bind the record to its files).
    lines = [f"<div><b>Automatic result</b>: {escape(summary)}</div>"]
    lines += [f'<div>{escape(name)} <span class="digest">sha256 {escape(str(digest))}</span></div>'
              for name, digest in digests if digest]
    if review.figure_note:
        lines.append(f"<div>No re-gated figure: {escape(review.figure_note)}</div>")
    return f'<div class="comparison">{"".join(lines)}</div>'


def review_status(s: Sample) -> str:
    """Who decided, when and why; or that the sample waits for a review."""
    row = s.row
    if row is not None and row.review_decision:
        reason = f" — {escape(row.review_reason)}" if row.review_reason else ""
        regated = ""
        if row.reviewed_criterion:
            # On paper the card itself is the re-gated result: this repeats it (screen only).
            regated = (f'<span class="no-print">; re-gated: {escape(label(row.reviewed_criterion))}, '
                       f"CD125+ {fmt.percent(row.reviewed_cd125_pos_fraction)} (95% CI "
                       f"{fmt.ci_range(row.reviewed_ci_low, row.reviewed_ci_high)})</span>")
        # A withdrawal puts the sample back in review: it is no review of the sample's result.
        title = "Decision withdrawn" if row.review_decision == "WITHDRAW" else "Reviewed"
        return (f'<p class="reviewed"><b>{title}:</b> {escape(row.review_decision)} by '
                f'{escape(str(row.reviewed_by))} on {escape(str(row.reviewed_at))}{reason}{regated}</p>')
    note = f" ({escape(row.review_note)})" if row is not None and row.review_note else ""
    return f'<p class="unreviewed"><b>Not reviewed</b>{note}</p>'


def print_header(s: Sample) -> str:
    """The page header of a printed sample: who, which specimen, when and on what it was acquired."""
    r, row = s.result, s.row
    acquired = (row.acquired if row is not None else "") or "–"
    instrument = (row.instrument_label if row is not None else "") or "–"
    fields = [("Sample", s.sample_id), ("Patient", r.patient_id or "–"), ("Specimen", r.specimen or "–"),
              ("Acquired", acquired), ("Instrument", instrument)]
    cells = "".join(f"<div><b>{k}</b> {escape(str(v))}</div>" for k, v in fields)
    return f'<div class="print-header print-only"><div class="print-title">CD125 screening sign-out</div>{cells}</div>'


def sign_button(i: int) -> str:
    """A button that opens the decision controls (a form per card only when asked for: 500 forms
    of inputs make a page slow to open)."""
    return (f'<div class="sign no-print" data-card="s{i}"><button type="button" class="sign-open">'
            f'Sign out this sample…</button></div>')


def print_tree(result: SampleResult, regated: bool = False) -> str:
    """The stained tube's gate counts as an indented tree, compact for paper."""
    from cd125gate.review.signout import gate_tree

    lines = gate_tree(result.gate_counts)
    if not lines:
        return ""
    body = "".join(f"<div>{escape(line)}</div>" for line in lines)
    title = "Gate counts (stained tube, re-gated)" if regated else "Gate counts (stained tube)"
    return f'<div class="tree-print print-only"><b>{title}</b><div class="tree-lines">{body}</div></div>'


def signature() -> str:
    return ('<div class="signature print-only"><div>Reviewed by (name)</div><div>Signature</div>'
            '<div>Date</div></div>')


def _needed(result: SampleResult) -> str:
    cut = result.positive_fraction_needed
    return "" if cut is None else f"; MET needs ≥ {fmt.whole_percent(cut)}"


def bullet_list(css: str, title: str, items: Iterable[str]) -> str:
    items = list(items)
    if not items:
        return ""
    lis = "".join(f"<li>{escape(str(x))}</li>" for x in items)
    return f'<div class="{css}"><b>{title}</b><ul class="{css}">{lis}</ul></div>'


def identity(result: SampleResult) -> str:
    fields = [("Patient", result.patient_id), ("Specimen", result.specimen), ("Notes", result.notes)]
    shown = [f"<b>{k}:</b> {escape(str(v))}" for k, v in fields if v]
    return f"<p>{' · '.join(shown)}</p>" if shown else ""


def threshold(result: SampleResult) -> str:
    cutoff = result.cutoff
    if cutoff is None:
        return ""
    method, description = cutoff.method, cutoff.description
    if cutoff.edited:
        # The automatic cut-off is beside it (the comparison); the edited one is the reviewer's.
        method, description = "edited by the reviewer", ""
    ratio = f" · CD125 median stained/control {result.median_ratio:.2f}" if result.median_ratio is not None else ""
    if cutoff.overlap:
        ratio += f" · cumulative subtraction {fmt.percent(cutoff.overlap['cumulative_subtraction'])}"
    control = results.control_pos_fraction(result.control_gates)
    if control is not None:
        ratio += f" · control blasts above the cut-off {fmt.percent(control)}"
    return (f"<p><b>Threshold</b> ({escape(str(method))}): "
            f"{escape(str(description or ''))}{' · ' if description else ''}"
            f"cut-off {fmt.raw_value(cutoff.value_raw)} raw"
            f"{escape(ratio)}</p>")


def density(i: int, s: Sample, assets: str) -> str:
    """The CD125 density with its bead lot and fit, and a link to the bead QC figure."""
    from cd125gate.analysis.antigen.beads import density_lines

    lines = density_lines(s.result.density)
    if not lines:
        return ""
    link = ""
    if any(name == "beads.png" for name, _ in s.figures):
        link = f' · <a href="{escape(assets)}/s{i}/beads.png" target="_blank" class="bead-qc">bead QC figure</a>'
    body = "<br>".join(escape(line) for line in lines)
    return f'<p class="density"><b>CD125 density</b>{link}<br>{body}</p>'


def gates(result: SampleResult) -> str:
    tables = [_gate_table("Stained tube gates", result.gate_counts),
              _gate_table("Control tube gates", result.control_gate_counts)]
    tables = [t for t in tables if t]
    if not tables:
        return ""
    return f'<details open class="gate-counts"><summary>Gate counts</summary><div class="gates">{"".join(tables)}</div></details>'


def _gate_table(title: str, table: tuple[GateCount, ...]) -> str:
    """Gate counts as a tree: each gate under its parent, indented by depth."""
    if not table:
        return ""
    children = {}
    for g in table:
        children.setdefault(g.parent, []).append(g)
    names = {g.name for g in table}
    ordered = []

    def walk(parent, depth):
        for g in children.get(parent, []):
            ordered.append((g, depth))
            walk(g.name, depth + 1)

    for root in [p for p in children if p is None or p not in names]:
        walk(root, 0)
    rows = "".join(
        f'<tr><td class="tree" style="padding-left:{0.4 + 0.8 * depth:.1f}em">{"└ " if depth else ""}'
        f'{escape(g.name)}{" (excluded)" if g.exclusion else ""}</td>'
        f"<td class=\"num\">{g.count:,}</td><td class=\"num\">{g.percent_of_parent:.1f}</td>"
        f"<td class=\"num pc\">{g.parent_count:,}</td>"
        f"<td class=\"how\">{escape(g.note)}</td></tr>" for g, depth in ordered)
    return (f"<table class=\"gate-tree\"><caption><b>{title}</b></caption><tr><th>Gate</th><th>Events</th>"
            f"<th>% of parent</th><th class=\"pc\">Parent events</th><th class=\"how\">How found</th></tr>{rows}</table>")


def provenance(result: SampleResult) -> str:
    rows = []
    for role, name in (("fcs", "stained"), ("control", "control"), ("compensation", "compensation")):
        entry = result.input_file(role)
        if entry is not None:
            rows.append((f"{name} file", f"{entry.path}  sha256 {entry.sha256 or 'not recorded'}"))
    rows += [(k.replace("_", " "), result.provenance[k]) for k in sorted(result.provenance)]
    if not rows:
        return ""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f'<details class="provenance"><summary>Provenance</summary><table class="prov">{body}</table></details>'
