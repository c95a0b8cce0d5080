"""The `report` subcommand: one self-contained review page for a batch of samples.

The page opens with the batch summary (REVIEW and FAILED first), then a table
that sorts and filters, then one card per sample with its QC figures, reasons,
gate counts and provenance. Figures are embedded as base64, CSS and JS are
inline: the file can be mailed or archived and opens with no network. No dates
are written, so the same results give the same bytes.
"""

import base64
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
LABELS = {"MET": "MET", "NOT_MET": "NOT MET", "REVIEW": "REVIEW", "FAILED": "FAILED"}


@dataclass
class Sample:
    """One row of the page: a result (or the lack of one) and its figures."""

    sample_id: str
    result: dict
    figures: list = field(default_factory=list)     # (file name, PNG bytes)
    problems: list = field(default_factory=list)    # what is wrong with the sample's outputs

    @property
    def criterion(self):
        return self.result.get("criterion", "FAILED")


def add_arguments(parser):
    parser.add_argument("--results-dir", required=True, type=Path,
                        help="folder holding one sub-folder per sample with result.json and qc.png")
    parser.add_argument("--out", required=True, type=Path, help="report.html to write")
    parser.add_argument("--screening", type=Path,
                        help="screening.json: list the samples in its order and report any it names without a result")


def run(args):
    samples = load_samples(args.results_dir, args.screening)
    atomic_write_text(args.out, render(samples))
    return 0


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
    found, paths = {}, {}
    for path in sorted(results_dir.glob("*/result.json")):
        result = results.load(path).to_json()
        sample_id = result["sample_id"]
        if sample_id in found:
            raise InputError(path, f"sample id {sample_id!r} is also the id of {paths[sample_id]}")
        found[sample_id] = Sample(sample_id, result, _figures(path.parent, result))
        paths[sample_id] = path
        if not found[sample_id].figures:
            found[sample_id].problems.append("no QC figure (qc.png) in its results folder")
    if not found and screening is None:
        raise InputError(results_dir, "no */result.json found")
    if screening is None:
        return [found[k] for k in sorted(found)]
    return _in_screening_order(found, _screening_ids(screening))


def _figures(sample_dir, result):
    """(name, bytes) of the sample's PNG figures: qc.png first, then the others by name.

    The figures named in ``result["outputs"]`` are looked up by file name in
    the sample's folder, because the recorded paths are relative to wherever
    the workflow ran.
    """
    names = {p.name for p in sample_dir.glob("qc*.png")}
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


def render(samples):
    """The review page for ``samples`` as one HTML string."""
    template = Template(resources.files("cd125gate").joinpath("data/report_template.html").read_text())
    return template.substitute(
        n_samples=len(samples),
        version=escape(__version__),
        problems=_problems(samples),
        counts=_counts(samples),
        attention=_attention(samples),
        flag_summary=_flag_summary(samples),
        filters=_filters(samples),
        rows="\n".join(_row(i, s) for i, s in enumerate(samples)),
        cards="\n".join(_card(i, s) for i, s in enumerate(samples)),
    )


def _badge(criterion):
    return f'<span class="badge {escape(criterion)}">{escape(LABELS.get(criterion, criterion))}</span>'


def _counts(samples):
    boxes = []
    for criterion in CRITERIA:
        n = sum(s.criterion == criterion for s in samples)
        boxes.append(f'<div class="count {criterion}-box"><b>{n}</b>{_badge(criterion)}</div>')
    return "".join(boxes)


def _attention(samples):
    """REVIEW and FAILED samples, worst first, each with its reasons and a link to its card."""
    items = []
    for criterion in ("FAILED", "REVIEW"):
        for i, s in enumerate(samples):
            if s.criterion == criterion:
                reasons = "; ".join(s.result.get("reasons") or []) or "no reason recorded"
                items.append(f'<li>{_badge(criterion)} <a href="#s{i}">{escape(s.sample_id)}</a>: '
                             f"{escape(reasons)}</li>")
    if not items:
        return '<p>No sample needs review: every sample is MET or NOT MET.</p>'
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
    return (f'<tr class="row-{s.criterion}" data-criterion="{s.criterion}">'
            f'<td><a href="#s{i}">{escape(s.sample_id)}</a></td>'
            f'<td data-sort="{CRITERIA.index(s.criterion)}">{_badge(s.criterion)}</td>'
            f'<td class="num" data-sort="{-1 if fraction is None else fraction}">{escape(_fraction(r))}</td>'
            f'<td class="num" data-sort="{-1 if blasts is None else blasts}">'
            f'{"–" if blasts is None else f"{blasts:,}"}</td>'
            f"<td>{escape(method)}</td><td>{escape('; '.join(flags))}</td></tr>")


def _card(i, s):
    r = s.result
    parts = [f'<section class="card card-{s.criterion}" id="s{i}" data-criterion="{s.criterion}">',
             f"<h3>{escape(s.sample_id)} {_badge(s.criterion)}</h3>",
             f"<p>CD125+ {escape(_fraction(r))} of {escape(_count(r.get('blast_events')))} blasts "
             f"({escape(_count(r.get('cd125_pos_events')))} positive){escape(_needed(r))}</p>",
             _list("reasons", "Reasons", r.get("reasons")),
             _list("flags", "Flags", list(r.get("flags") or []) + s.problems),
             _list("warnings", "Warnings", r.get("warnings")),
             _identity(r), _threshold(r)]
    if not s.figures:
        parts.append('<p class="missing">No QC figure: the gating of this sample cannot be reviewed here.</p>')
    for name, png in s.figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img src="data:image/png;base64,{data}" alt="{escape(name)} of {escape(s.sample_id)}" '
                     f'title="{escape(name)}" loading="lazy">')
    parts += [_gates(r), _provenance(r), "</section>"]
    return "\n".join(p for p in parts if p)


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
    median = result.get("cd125_median") or {}
    ratio = f" · CD125 median stained/control {median['ratio']:.2f}" if median.get("ratio") is not None else ""
    overlap = threshold.get("overlap")
    if overlap:
        ratio += f" · cumulative subtraction {overlap['cumulative_subtraction']:.1%}"
    return (f"<p><b>Threshold</b> ({escape(str(threshold.get('method')))}): "
            f"{escape(str(threshold.get('description', '')))} · cut-off {threshold.get('value_raw', 0):,.4g} raw"
            f"{escape(ratio)}</p>")


def _gates(result):
    tables = [_gate_table("Stained tube gates", result.get("gates")),
              _gate_table("Control tube gates", result.get("control_gates"))]
    tables = [t for t in tables if t]
    if not tables:
        return ""
    return f'<details open><summary>Gate counts</summary><div class="gates">{"".join(tables)}</div></details>'


def _gate_table(title, gates):
    if not gates:
        return ""
    rows = "".join(
        f"<tr><td>{'&nbsp;&nbsp;↳ ' if g.get('exclusion') else ''}{escape(g['name'])}</td>"
        f"<td>{escape(str(g.get('parent') or ''))}</td><td class=\"num\">{g['parent_count']:,}</td>"
        f"<td class=\"num\">{g['count']:,}</td><td class=\"num\">{g['percent_of_parent']:.1f}</td>"
        f"<td>{escape(g.get('note') or '')}</td></tr>" for g in gates)
    return (f"<table><caption><b>{title}</b></caption><tr><th>Gate</th><th>Parent</th><th>Parent events</th>"
            f"<th>Events</th><th>% of parent</th><th>How found</th></tr>{rows}</table>")


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
    return f'<details><summary>Provenance</summary><table class="prov">{body}</table></details>'
