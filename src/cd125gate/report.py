"""The `report` subcommand: the batch review page, a sign-out tool that needs no server.

The page opens with the batch summary (REVIEW and FAILED first), then a table
that sorts and filters, then one card per sample with its QC figures, reasons,
gate counts, provenance, its review status and decision controls. The
controls build the matching lines of a reviews file (`reviews.py`) to copy or
download: a review is data the workflow reads back, never an edit of a result.

The page stays light at any batch size: each card inlines a small thumbnail,
and the full figures are files in a folder beside the page
(``report_files/``), still offline. Printed (A4 or Letter, landscape), each
sample is one page: header, decision with CI, threshold vs control, the key
plots at a scale where their smallest text is at least 8 pt, gate counts as a
tree, provenance and a signature block. No dates are written, so the same
results give the same bytes.
"""

import base64
import io
import json
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path
from string import Template

from . import __version__, results
from .errors import InputError
from .fileio import atomic_write_text

CRITERIA = ("FAILED", "REVIEW", "NOT_MET", "MET")  # attention order: worst first
LABELS = {"MET": "MET", "NOT_MET": "NOT MET", "REVIEW": "REVIEW", "FAILED": "FAILED",
          "PENDING_REVIEW": "PENDING REVIEW", "REJECTED": "REJECTED"}
THUMBNAIL_PX = 240          # width of the inline thumbnail of the stained tube's figure
# Smallest text cd125gate.plots draws in the blast-gate and CD125 panels (legends, 6.5 pt);
# printed at PRINT_SCALE times their size it is at least 8 pt.
KEY_PANEL_MIN_FONT_PT = 6.5
PRINT_SCALE = 1.25
FIGURE_DPI = 100            # cd125gate.plots.DPI: pixels per inch of the QC figures


@dataclass
class Sample:
    """One row of the page: a result (or the lack of one) and its figures."""

    sample_id: str
    result: dict
    figures: list = field(default_factory=list)     # (file name, PNG bytes)
    problems: list = field(default_factory=list)    # what is wrong with the sample's outputs
    result_sha256: str | None = None                # the digest a review line must name
    row: dict = field(default_factory=dict)         # its screening row (final status, review, assay)
    key_plots: list | None = field(default=None, repr=False)  # printed key panels, cut on first use
    reviewed: dict | None = None                    # reviewed_result.json when the record is a REGATE's

    @property
    def criterion(self):
        """The automatic criterion (the table, filters and summary count these)."""
        return self.result.get("criterion", "FAILED")

    @property
    def record(self):
        """The result the card and its printed page are drawn from: the re-gated one after a REGATE."""
        return self.reviewed or self.result


def add_arguments(parser):
    parser.add_argument("--results-dir", required=True, type=Path,
                        help="folder holding one sub-folder per sample with result.json and qc.png")
    parser.add_argument("--out", required=True, type=Path, help="report.html to write")
    parser.add_argument("--screening", type=Path,
                        help="screening.json: list the samples in its order and report any it names without a result")
    parser.add_argument("--reviews", type=Path,
                        help="the reviews file the batch was run with: its lines are the start of the reviews "
                             "file the page builds (earlier lines + new ones)")


def run(args):
    from .outputs import writing

    samples = load_samples(args.results_dir, args.screening)
    earlier = earlier_lines(args.reviews) if args.reviews else []
    # A full disk or a read-only folder: one line naming the folder, never a traceback.
    with writing(Path(args.out).parent, Path(args.out).name):
        write_page(samples, args.out, earlier)
    return 0


def earlier_lines(path):
    """The decision lines of a reviews file as written (column -> cell), comments and blank lines left out.

    The page writes them back first in the reviews file it builds: decisions
    only accumulate, and the workflow refuses a file that lost one. Cells are
    kept as written (a relative gates path stays relative); the file was
    checked by the workflow before this page was made.
    """
    import csv

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read reviews file: {exc}") from None
    rows = [row for row in csv.reader(text.splitlines(), delimiter="\t")
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        return []
    header = [name.strip() for name in rows[0]]
    return [{name: cell for name, cell in zip(header, row) if name} for row in rows[1:]]


def write_page(samples, out, earlier=()):
    """Write the page and, beside it, the folder of full-size figures and printed key plots."""
    from .fileio import atomic_write_bytes

    out = Path(out)
    assets = out.with_name(f"{out.stem}_files")
    for i, sample in enumerate(samples):
        for name, data in _asset_files(sample):
            target = assets / f"s{i}" / name
            if not target.is_file() or target.read_bytes() != data:
                atomic_write_bytes(target, data)
    atomic_write_text(out, render(samples, assets.name, earlier))


# --- reading -----------------------------------------------------------------


def load_samples(results_dir, screening=None):
    """The samples of a results folder, in screening order when a screening file is given.

    Parameters
    ----------
    results_dir : Path
        Folder with one sub-folder per sample, each holding ``result.json``.
    screening : Path or None
        ``screening.json``; its ``samples`` rows (``sample_id``) set the batch and its order.

    Returns
    -------
    list of Sample
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InputError(results_dir, "results folder does not exist")
    from .fileio import sha256_file

    found, paths = {}, {}
    for path in sorted(results_dir.glob("*/result.json")):
        result = results.load(path).to_json()
        sample_id = result["sample_id"]
        if sample_id in found:
            raise InputError(path, f"sample id {sample_id!r} is also the id of {paths[sample_id]}")
        found[sample_id] = Sample(sample_id, result, _figures(path.parent, result), result_sha256=sha256_file(path))
        paths[sample_id] = path
        if not found[sample_id].figures:
            found[sample_id].problems.append("no QC figure (qc.png) in its results folder")
    if not found and screening is None:
        raise InputError(results_dir, "no */result.json found")
    if screening is None:
        return [found[k] for k in sorted(found)]
    samples = _in_screening_order(found, _screening_ids(screening))
    rows = _screening_rows(screening)
    for sample in samples:
        sample.row = rows.get(sample.sample_id, {})
        _attach_reviewed(sample, results_dir / sample.sample_id)
    return samples


def _attach_reviewed(sample, folder):
    """Make a re-gated sample's record its reviewed result: its figures first, the automatic ones after."""
    from .regate_figure import REVIEWED_QC
    from .signout import reviewed_record

    sample.reviewed = reviewed_record(folder, sample.row)
    if sample.reviewed is not None:
        automatic = [(name, png) for name, png in sample.figures if not name.startswith("reviewed_")]
        reviewed = [(name, (folder / name).read_bytes())
                    for name in (f"{REVIEWED_QC}.png", f"{REVIEWED_QC}_control.png") if (folder / name).is_file()]
        sample.figures = reviewed + automatic


def _screening_rows(path):
    """sample_id -> screening row (final status, review, assay metadata), from a valid screening file."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))["samples"]
    return {str(row["sample_id"]): row for row in rows if isinstance(row, dict)}


def _figures(sample_dir, result):
    """(name, bytes) of the sample's PNG figures: qc.png first, then the others by name.

    The figures named in ``result["outputs"]`` are looked up by file name in
    the sample's folder, because the recorded paths are relative to wherever
    the workflow ran.
    """
    names = {p.name for p in sample_dir.glob("qc*.png")}  # reviewed_qc*.png: see _attach_reviewed
    names |= {Path(v).name for v in (result.get("outputs") or {}).values() if str(v).endswith(".png")}
    ordered = sorted(names, key=lambda n: (n != "qc.png", n))
    return [(n, (sample_dir / n).read_bytes()) for n in ordered if (sample_dir / n).is_file()]


def _screening_ids(path):
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["samples"]
        ids = [str(row["sample_id"]) for row in rows]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read screening file: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise InputError(path, f"screening file needs a 'samples' list of rows with 'sample_id' ({exc})") from None
    return ids


def _in_screening_order(found, ids):
    """Screening order; a listed sample without a result becomes a FAILED row.

    Result folders that screening.json does not list (left over from an
    earlier sample sheet written to the same output folder) are not part of
    this batch and are left out.
    """
    samples = []
    for sample_id in dict.fromkeys(ids):
        if sample_id in found:
            samples.append(found[sample_id])
        else:
            missing = {"sample_id": sample_id, "criterion": "FAILED",
                       "reasons": ["listed in screening.json but no result.json was found"]}
            samples.append(Sample(sample_id, missing, problems=["result.json missing"]))
    return samples


# --- writing -----------------------------------------------------------------


def render(samples, assets="report_files", earlier=()):
    """The review page for ``samples`` as one HTML string.

    ``assets`` is the folder (relative to the page) `write_page` puts the full
    figures in; ``earlier`` the lines of the reviews file the batch was run with.
    """
    template = Template(resources.files("cd125gate").joinpath("data/report_template.html").read_text())
    return template.substitute(
        n_samples=len(samples),
        version=escape(__version__),
        problems=_problems(samples),
        counts=_counts(samples),
        attention=_attention(samples),
        flag_summary=_flag_summary(samples),
        filters=_filters(samples),
        controls_template=controls_template(),
        rows="\n".join(_row(i, s) for i, s in enumerate(samples)),
        cards="\n".join(_card(i, s, assets) for i, s in enumerate(samples)),
        reviews_data=_reviews_data(samples, earlier),
    )


def _reviews_data(samples, earlier):
    """What the page's script needs to build the complete reviews file, as JSON safe inside <script>.

    The columns come from `cd125gate.reviews` (one place); ``batch`` names the
    batch (its samples and result digests) for the lines kept in the browser
    across a reload.
    """
    import hashlib

    from . import reviews

    batch = hashlib.sha256("\n".join(f"{s.sample_id}\t{s.result_sha256}" for s in samples).encode()).hexdigest()
    data = {"columns": list(reviews.COLUMNS), "earlier": list(earlier), "batch": batch[:16]}
    return json.dumps(data, ensure_ascii=True).replace("</", "<\\/")


# --- figures: thumbnails inline, full figures and printed key plots as files ------------------


def _thumbnail(png):
    """A small JPEG of a figure for the card (the full figure is a file beside the page)."""
    from PIL import Image

    image = png if hasattr(png, "reduce") else Image.open(io.BytesIO(png))
    factor = image.size[0] // THUMBNAIL_PX
    if factor >= 2:
        image = image.reduce(factor)  # box average by a whole factor: fast, and sharp enough for a preview
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX * 4))
    buffer = io.BytesIO()
    image.save(buffer, format="jpeg", quality=55)
    return buffer.getvalue()


def _key_plots(sample, decoded=None):
    """(file name, PNG) of the blast-gate and CD125 panels printed on the sample's page (cut once)."""
    from .signout import key_panels

    if sample.key_plots is None:
        first = sample.figures[0][0] if sample.figures else "qc.png"  # the record's stained tube
        qc = (decoded or {}).get(first) or dict(sample.figures).get(first)
        panels = key_panels(qc) if qc is not None else []
        sample.key_plots = [(f"key_{name}.png", png) for name, png in zip(("blast_gate", "cd125"), panels)]
    return sample.key_plots


def _asset_files(sample):
    return list(sample.figures) + _key_plots(sample)


def _png_size(png):
    from PIL import Image

    return Image.open(io.BytesIO(png)).size


def _badge(criterion):
    return f'<span class="badge {escape(criterion)}">{escape(LABELS.get(criterion, criterion))}</span>'


def _counts(samples):
    boxes = []
    for criterion in CRITERIA:
        n = sum(s.criterion == criterion for s in samples)
        boxes.append(f'<div class="count {criterion}-box"><b>{n}</b>{_badge(criterion)}</div>')
    return "".join(boxes)


def _attention(samples):
    """REVIEW and FAILED samples not yet decided, worst first, each with its reasons and a link to its card.

    A sample whose decision the batch applied is not waiting for anyone (a
    REVIEW re-gated to REVIEW is: its final status is still PENDING_REVIEW).
    """
    items = []
    for criterion in ("FAILED", "REVIEW"):
        for i, s in enumerate(samples):
            decided = s.row.get("review_decision") and _final(s) != "PENDING_REVIEW"
            if s.criterion == criterion and not decided:
                reasons = "; ".join(s.result.get("reasons") or []) or "no reason recorded"
                items.append(f'<li>{_badge(criterion)} <a href="#s{i}">{escape(s.sample_id)}</a>: '
                             f"{escape(reasons)}</li>")
    if not items:
        return '<p>No sample needs attention: none is waiting for a decision.</p>'
    return f'<div class="attention"><b>Needs attention ({len(items)})</b><ul>{"".join(items)}</ul></div>'


def _problems(samples):
    items = [f'<li><a href="#s{i}">{escape(s.sample_id)}</a>: {escape(p)}</li>'
             for i, s in enumerate(samples) for p in s.problems]
    if not items:
        return ""
    return f'<div class="problems"><b>Incomplete outputs ({len(items)})</b><ul>{"".join(items)}</ul></div>'


def _flag_summary(samples):
    counts = {}
    for s in samples:
        for flag in dict.fromkeys(s.result.get("flags") or []):
            counts[flag] = counts.get(flag, 0) + 1
    if not counts:
        return ""
    rows = "".join(f"<tr><td>{escape(f)}</td><td class=\"num\">{n}</td></tr>"
                   for f, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f'<h3>Flags</h3><table class="flags"><tr><th>Flag</th><th>Samples</th></tr>{rows}</table>'


def _filters(samples):
    present = [c for c in CRITERIA if any(s.criterion == c for s in samples)]
    return "\n".join(f'<label><input type="checkbox" value="{c}" checked> {_badge(c)} '
                     f"({sum(s.criterion == c for s in samples)})</label>" for c in present)


def _percent(value):
    return "" if value is None else f"{100 * value:.1f}"


def _fraction(result):
    fraction = result.get("cd125_pos_fraction")
    if fraction is None:
        return "–"
    ci = ""
    if result.get("ci_low") is not None and result.get("ci_high") is not None:
        ci = f" ({_percent(result['ci_low'])}–{_percent(result['ci_high'])})"
    return f"{_percent(fraction)}%{ci}"


def _row(i, s):
    r = s.result
    fraction = r.get("cd125_pos_fraction")
    blasts = r.get("blast_events")
    method = (r.get("threshold") or {}).get("method", "–")
    flags = list(r.get("flags") or []) + s.problems
    final = _final(s)
    value = (r.get("threshold") or {}).get("value_raw")
    control = s.row.get("control_pos_fraction", results.control_pos_fraction(r.get("control_gates")))
    ratio = (r.get("cd125_median") or {}).get("ratio")
    fcs = Path(((r.get("inputs") or {}).get("fcs") or {}).get("path") or "").name
    return (f'<tr class="row-{s.criterion}" data-criterion="{s.criterion}">'
            f'<td><a href="#s{i}">{escape(s.sample_id)}</a></td>'
            f'<td data-sort="{CRITERIA.index(s.criterion)}">{_badge(s.criterion)}</td>'
            f'<td class="num" data-sort="{-1 if fraction is None else fraction}">{escape(_fraction(r))}</td>'
            f'<td class="num" data-sort="{-1 if blasts is None else blasts}">'
            f'{"–" if blasts is None else f"{blasts:,}"}</td>'
            f"<td>{escape(method)}</td><td>{escape('; '.join(flags))}</td>"
            f'<td data-sort="{escape(final)}">{_badge(final)}</td>'
            f"<td>{escape(str(r.get('patient_id') or ''))}</td><td>{escape(str(r.get('specimen') or ''))}</td>"
            f'<td class="num" data-sort="{-1 if value is None else value}">{"–" if value is None else f"{value:,.4g}"}</td>'
            f'<td class="num" data-sort="{-1 if control is None else control}">{escape(_pct(control))}</td>'
            f'<td class="num" data-sort="{-1 if ratio is None else ratio}">{"–" if ratio is None else f"{ratio:.2f}"}</td>'
            f"<td>{escape(fcs)}</td></tr>")


def _final(sample):
    """The final status: from the screening row, else what the automatic result is worth unreviewed."""
    if sample.row.get("final"):
        return sample.row["final"]
    return {"MET": "MET", "NOT_MET": "NOT_MET", "FAILED": "FAILED"}.get(sample.criterion, "PENDING_REVIEW")


def _pct(value):
    return "–" if value is None else f"{100 * value:.1f}%"


def _card(i, s, assets="report_files"):
    r = s.record
    regated = '<span class="regated">re-gated</span> ' if s.reviewed else ""
    parts = [f'<section class="card card-{s.criterion}" id="s{i}" data-criterion="{s.criterion}" '
             f'data-sample-id="{escape(s.sample_id)}" data-result-sha256="{escape(s.result_sha256 or "")}" '
             f'data-final="{escape(_final(s))}" data-decision="{escape(_decision_in_effect(s))}">',
             _print_header(s),
             f"<h3>{escape(s.sample_id)} {regated}{_badge(r.get('criterion', 'FAILED'))} "
             f"<span class=\"final\">final: {_badge(_final(s))}</span></h3>",
             _review_status(s),
             f"<p>CD125+ {escape(_fraction(r))} of {escape(_count(r.get('blast_events')))} blasts "
             f"({escape(_count(r.get('cd125_pos_events')))} positive){escape(_needed(r))}</p>",
             _comparison(s),
             _list("reasons", "Reasons", r.get("reasons")),
             _list("flags", "Flags", _flags(s)),
             _list("warnings", "Warnings", r.get("warnings")),
             _identity(r).replace("<p>", '<p class="no-print">', 1), _threshold(r), _density(i, s, assets)]
    if not s.figures:
        parts.append('<p class="missing">No QC figure: the gating of this sample cannot be reviewed here.</p>')
    from PIL import Image

    decoded = {name: Image.open(io.BytesIO(png)) for name, png in s.figures}
    for image in decoded.values():
        image.load()  # decoded once, for the thumbnail and the printed key plots
    _key_plots(s, decoded)
    thumbs = []
    for n, (name, png) in enumerate(s.figures):
        href = f"{escape(assets)}/s{i}/{escape(name)}"
        if n:  # only the stained tube's figure is inlined; the others are a click away
            label = f"{name} (automatic)" if s.reviewed and not name.startswith("reviewed_") else name
            thumbs.append(f'<a href="{href}" target="_blank" class="figure-link">{escape(label)}</a>')
            continue
        data = base64.b64encode(_thumbnail(decoded[name])).decode("ascii")
        thumbs.append(f'<a href="{href}" target="_blank" class="thumb"><img src="data:image/jpeg;base64,{data}" '
                      f'alt="{escape(name)} of {escape(s.sample_id)}" title="{escape(name)}: open the full figure" '
                      # lazy: a 500-sample page decodes only the thumbnails scrolled into view
                      f'loading="lazy" width="{THUMBNAIL_PX}"></a>')
    if thumbs:
        parts.append(f'<div class="thumbs no-print">{"".join(thumbs)}</div>')
    provenance = _provenance(r)
    # Closed <details> do not print: the provenance is repeated, expanded, for paper.
    printed = provenance.replace('<details class="provenance"><summary>Provenance</summary>',
                                 '<div class="print-only prov-print"><b>Provenance</b>').replace("</details>", "</div>")
    parts += [_print_key_plots(i, s, assets), _gates(r), _print_tree(r, bool(s.reviewed)), provenance, printed, _signature(),
              _controls(i, s), "</section>"]
    return "\n".join(p for p in parts if p)


def _flags(s):
    """The record's flags; a re-gated record's own flag is left out (the comparison names the gates file)."""
    flags = list(s.record.get("flags") or [])
    if s.reviewed is not None:
        flags = [f for f in flags if f not in (s.result.get("flags") or []) and not f.startswith("re-gated")] + \
            [f for f in flags if f in (s.result.get("flags") or [])]
    return flags + s.problems


def _decision_in_effect(s):
    """The decision a WITHDRAW line could take back ('' when none: nothing applied, or already withdrawn)."""
    decision = s.row.get("review_decision") or ""
    return "" if decision == "WITHDRAW" else decision


def _comparison(s):
    """A re-gated record's automatic result, for comparison, and the digests that bind the two."""
    if s.reviewed is None:
        return ""
    automatic, review = s.result, s.reviewed.get("review") or {}
    cut = (automatic.get("threshold") or {}).get("value_raw")
    summary = (f"{LABELS.get(automatic.get('criterion'), automatic.get('criterion'))} · CD125+ {_fraction(automatic)}"
               f" · {_count(automatic.get('cd125_pos_events'))} of {_count(automatic.get('blast_events'))} blasts"
               + (f" · cut-off {cut:,.4g} raw" if cut is not None else ""))
    digests = [("result.json", review.get("source_result_sha256")),
               ("reviewed_result.json", s.row.get("reviewed_result_sha256")),
               (f"gates {Path(str(review.get('gates'))).name}", review.get("gates_sha256"))]
    # Compact for paper: one line each, the digests in full (they bind the record to its files).
    lines = [f"<div><b>Automatic result</b>: {escape(summary)}</div>"]
    lines += [f'<div>{escape(label)} <span class="digest">sha256 {escape(str(digest))}</span></div>'
              for label, digest in digests if digest]
    if review.get("figure_note"):
        lines.append(f"<div>No re-gated figure: {escape(review['figure_note'])}</div>")
    return f'<div class="comparison">{"".join(lines)}</div>'


def _review_status(s):
    """Who decided, when and why; or that the sample waits for a review."""
    row = s.row
    if row.get("review_decision"):
        reason = f" — {escape(row['review_reason'])}" if row.get("review_reason") else ""
        regated = ""
        if row.get("reviewed_criterion"):
            # On paper the card itself is the re-gated result: this repeats it (screen only).
            regated = (f'<span class="no-print">; re-gated: '
                       f"{escape(LABELS.get(row['reviewed_criterion'], row['reviewed_criterion']))}, "
                       f"CD125+ {_pct(row.get('reviewed_cd125_pos_fraction'))} (95% CI "
                       f"{_pct(row.get('reviewed_ci_low'))}–{_pct(row.get('reviewed_ci_high'))})</span>")
        # A withdrawal puts the sample back in review: it is no review of the sample's result.
        label = "Decision withdrawn" if row["review_decision"] == "WITHDRAW" else "Reviewed"
        return (f'<p class="reviewed"><b>{label}:</b> {escape(row["review_decision"])} by '
                f'{escape(str(row.get("reviewed_by")))} on {escape(str(row.get("reviewed_at")))}{reason}{regated}</p>')
    note = f" ({escape(row['review_note'])})" if row.get("review_note") else ""
    return f'<p class="unreviewed"><b>Not reviewed</b>{note}</p>'


def _print_header(s):
    """The page header of a printed sample: who, which specimen, when and on what it was acquired."""
    r, row = s.result, s.row
    acquired = " ".join(v for v in (row.get("acquisition_date"), row.get("acquisition_time")) if v) or "–"
    instrument = " ".join(v for v in (row.get("instrument"), row.get("instrument_serial") and
                                      f"(s/n {row['instrument_serial']})") if v) or "–"
    fields = [("Sample", s.sample_id), ("Patient", r.get("patient_id") or "–"), ("Specimen", r.get("specimen") or "–"),
              ("Acquired", acquired), ("Instrument", instrument)]
    cells = "".join(f"<div><b>{k}</b> {escape(str(v))}</div>" for k, v in fields)
    return f'<div class="print-header print-only"><div class="print-title">CD125 screening sign-out</div>{cells}</div>'


def _print_key_plots(i, s, assets):
    """The blast-gate and CD125 panels for print, at a scale where their smallest text is >= 8 pt."""
    plots = _key_plots(s)
    if not plots:
        return ""
    images = []
    for name, png in plots:
        width, height = _png_size(png)
        # Physical size: pixels / dpi inches, times the print scale.
        images.append(f'<img src="{escape(assets)}/s{i}/{name}" loading="lazy" class="key" '
                      f'style="width:{width / FIGURE_DPI * PRINT_SCALE:.3f}in;height:{height / FIGURE_DPI * PRINT_SCALE:.3f}in" '
                      f'alt="{name[4:-4]} panel of {escape(s.sample_id)}">')
    return f'<div class="key-plots print-only">{"".join(images)}</div>'


def _controls(i, s):
    """A button that opens the decision controls (a form per card only when asked for: 500 forms
    of inputs make a page slow to open)."""
    return (f'<div class="sign no-print" data-card="s{i}"><button type="button" class="sign-open">'
            f'Sign out this sample…</button></div>')


def controls_template():
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


def _options():
    from .reviews import DECISIONS  # the decisions the workflow reads, in one place

    return "".join(f'<option value="{d}">{d}</option>' for d in DECISIONS)


def _print_tree(result, regated=False):
    """The stained tube's gate counts as an indented tree, compact for paper."""
    from .signout import gate_tree

    lines = gate_tree(result.get("gates"))
    if not lines:
        return ""
    body = "".join(f"<div>{escape(line)}</div>" for line in lines)
    title = "Gate counts (stained tube, re-gated)" if regated else "Gate counts (stained tube)"
    return f'<div class="tree-print print-only"><b>{title}</b><div class="tree-lines">{body}</div></div>'


def _signature():
    return ('<div class="signature print-only"><div>Reviewed by (name)</div><div>Signature</div>'
            '<div>Date</div></div>')


def _count(value):
    return "–" if value is None else f"{value:,}"


def _needed(result):
    cut = (result.get("criterion_settings") or {}).get("positive_fraction")
    return "" if cut is None else f"; MET needs ≥ {100 * cut:.0f}%"


def _list(css, title, items):
    if not items:
        return ""
    lis = "".join(f"<li>{escape(str(x))}</li>" for x in items)
    return f'<div class="{css}"><b>{title}</b><ul class="{css}">{lis}</ul></div>'


def _identity(result):
    fields = [("Patient", result.get("patient_id")), ("Specimen", result.get("specimen")),
              ("Notes", result.get("notes"))]
    shown = [f"<b>{k}:</b> {escape(str(v))}" for k, v in fields if v]
    return f"<p>{' · '.join(shown)}</p>" if shown else ""


def _threshold(result):
    threshold = result.get("threshold")
    if not threshold:
        return ""
    if threshold.get("edited"):
        # The automatic cut-off is beside it (the comparison); the edited one is the reviewer's.
        threshold = dict(threshold, method="edited by the reviewer", description="")
    median = result.get("cd125_median") or {}
    ratio = f" · CD125 median stained/control {median['ratio']:.2f}" if median.get("ratio") is not None else ""
    overlap = threshold.get("overlap")
    if overlap:
        ratio += f" · cumulative subtraction {overlap['cumulative_subtraction']:.1%}"
    control = results.control_pos_fraction(result.get("control_gates"))
    if control is not None:
        ratio += f" · control blasts above the cut-off {control:.1%}"
    return (f"<p><b>Threshold</b> ({escape(str(threshold.get('method')))}): "
            f"{escape(str(threshold.get('description') or ''))}{' · ' if threshold.get('description') else ''}"
            f"cut-off {threshold.get('value_raw', 0):,.4g} raw"
            f"{escape(ratio)}</p>")


def _density(i, s, assets):
    """The CD125 density with its bead lot and fit, and a link to the bead QC figure."""
    from .beads import density_lines

    lines = density_lines(s.result.get("density"))
    if not lines:
        return ""
    link = ""
    if any(name == "beads.png" for name, _ in s.figures):
        link = f' · <a href="{escape(assets)}/s{i}/beads.png" target="_blank" class="bead-qc">bead QC figure</a>'
    body = "<br>".join(escape(line) for line in lines)
    return f'<p class="density"><b>CD125 density</b>{link}<br>{body}</p>'


def _gates(result):
    tables = [_gate_table("Stained tube gates", result.get("gates")),
              _gate_table("Control tube gates", result.get("control_gates"))]
    tables = [t for t in tables if t]
    if not tables:
        return ""
    return f'<details open class="gate-counts"><summary>Gate counts</summary><div class="gates">{"".join(tables)}</div></details>'


def _gate_table(title, gates):
    """Gate counts as a tree: each gate under its parent, indented by depth."""
    if not gates:
        return ""
    children = {}
    for g in gates:
        children.setdefault(g.get("parent"), []).append(g)
    names = {g["name"] for g in gates}
    ordered = []

    def walk(parent, depth):
        for g in children.get(parent, []):
            ordered.append((g, depth))
            walk(g["name"], depth + 1)

    for root in [p for p in children if p is None or p not in names]:
        walk(root, 0)
    rows = "".join(
        f'<tr><td class="tree" style="padding-left:{0.4 + 0.8 * depth:.1f}em">{"└ " if depth else ""}'
        f'{escape(g["name"])}{" (excluded)" if g.get("exclusion") else ""}</td>'
        f"<td class=\"num\">{g['count']:,}</td><td class=\"num\">{g['percent_of_parent']:.1f}</td>"
        f"<td class=\"num pc\">{g['parent_count']:,}</td>"
        f"<td class=\"how\">{escape(g.get('note') or '')}</td></tr>" for g, depth in ordered)
    return (f"<table class=\"gate-tree\"><caption><b>{title}</b></caption><tr><th>Gate</th><th>Events</th>"
            f"<th>% of parent</th><th class=\"pc\">Parent events</th><th class=\"how\">How found</th></tr>{rows}</table>")


def _provenance(result):
    inputs = result.get("inputs") or {}
    rows = [(f"{role} file", f"{f.get('path')}  sha256 {f.get('sha256') or 'not recorded'}")
            for role, f in (("stained", inputs.get("fcs")), ("control", inputs.get("control")),
                            ("compensation", inputs.get("compensation"))) if f]
    provenance = result.get("provenance") or {}
    rows += [(k.replace("_", " "), provenance[k]) for k in sorted(provenance)]
    if not rows:
        return ""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f'<details class="provenance"><summary>Provenance</summary><table class="prov">{body}</table></details>'
