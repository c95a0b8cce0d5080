"""The batch review page (``cd125gate report``), a sign-out tool that needs no server.

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

This module assembles the page and its figures; the samples are read by
`report_samples`, and the text of each part is written by `report_sections`.
"""

from __future__ import annotations

import base64
import io
import json
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from cd125gate.figures.raster import DPI
from cd125gate.io.fileio import atomic_write_text
from cd125gate.review import report_sections as sections
from cd125gate.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cd125gate.review.report_samples import Sample

THUMBNAIL_PX = 240          # width of the inline thumbnail of the stained tube's figure
# Smallest text cd125gate.figures.plots draws in the blast-gate and CD125 panels (legends, 6.5 pt);
# printed at PRINT_SCALE times their size it is at least 8 pt.
KEY_PANEL_MIN_FONT_PT = 6.5
PRINT_SCALE = 1.25
FIGURE_DPI = DPI            # pixels per inch of the QC figures


def write_page(samples: list[Sample], out: Path | str, earlier: Iterable[dict] = ()) -> None:
    """Write the page and, beside it, the folder of full-size figures and printed key plots."""
    from cd125gate.io.fileio import atomic_write_bytes

    out = Path(out)
    assets = out.with_name(f"{out.stem}_files")
    for i, sample in enumerate(samples):
        for name, data in _asset_files(sample):
            target = assets / f"s{i}" / name
            if not target.is_file() or target.read_bytes() != data:
                atomic_write_bytes(target, data)
    atomic_write_text(out, render(samples, assets.name, earlier))


# --- the page --------------------------------------------------------------------------------


def render(samples: list[Sample], assets: str = "report_files", earlier: Iterable[dict] = ()) -> str:
    """The review page for ``samples`` as one HTML string.

    ``assets`` is the folder (relative to the page) `write_page` puts the full
    figures in; ``earlier`` the lines of the reviews file the batch was run with.
    """
    template = Template(resources.files("cd125gate").joinpath("data/report_template.html").read_text())
    return template.substitute(
        n_samples=len(samples),
        version=escape(__version__),
        problems=sections.problems(samples),
        counts=sections.counts(samples),
        attention=sections.attention(samples),
        flag_summary=sections.flag_summary(samples),
        filters=sections.filters(samples),
        controls_template=sections.controls_template(),
        rows="\n".join(sections.table_row(i, s) for i, s in enumerate(samples)),
        cards="\n".join(_card(i, s, assets) for i, s in enumerate(samples)),
        reviews_data=_reviews_data(samples, earlier),
    )


def _reviews_data(samples: list[Sample], earlier: Iterable[dict]) -> str:
    """What the page's script needs to build the complete reviews file, as JSON safe inside <script>.

    The columns come from `cd125gate.review.reviews` (one place); ``batch`` names the
    batch (its samples and result digests) for the lines kept in the browser
    across a reload.
    """
    import hashlib

    from cd125gate.review import reviews

    batch = hashlib.sha256("\n".join(f"{s.sample_id}\t{s.result_sha256}" for s in samples).encode()).hexdigest()
    data = {"columns": list(reviews.COLUMNS), "earlier": list(earlier), "batch": batch[:16]}
    return json.dumps(data, ensure_ascii=True).replace("</", "<\\/")


# --- figures: thumbnails inline, full figures and printed key plots as files ------------------


def _thumbnail(png):
    """A small JPEG of a figure for the card (the full figure is a file beside the page)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    factor = image.size[0] // THUMBNAIL_PX
    if factor >= 2:
        image = image.reduce(factor)  # box average by a whole factor: fast, and sharp enough for a preview
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX * 4))
    buffer = io.BytesIO()
    image.save(buffer, format="jpeg", quality=55)
    return buffer.getvalue()


def _asset_files(sample):
    return list(sample.figures) + list(sample.key_plots)


def _png_size(png):
    from PIL import Image

    return Image.open(io.BytesIO(png)).size


def _print_key_plots(i, s, assets):
    """The blast-gate and CD125 panels for print, at a scale where their smallest text is >= 8 pt."""
    if not s.key_plots:
        return f'<p class="missing print-only">{escape(s.key_note)}</p>' if s.key_note else ""
    images = []
    for name, png in s.key_plots:
        width, height = _png_size(png)
        # Physical size: pixels / dpi inches, times the print scale.
        images.append(f'<img src="{escape(assets)}/s{i}/{name}" loading="lazy" class="key" '
                      f'style="width:{width / FIGURE_DPI * PRINT_SCALE:.3f}in;height:{height / FIGURE_DPI * PRINT_SCALE:.3f}in" '
                      f'alt="{name[4:-4]} panel of {escape(s.sample_id)}">')
    return f'<div class="key-plots print-only">{"".join(images)}</div>'


# --- a sample's card ----------------------------------------------------------------------------


def _card(i: int, s: Sample, assets: str = "report_files") -> str:
    r = s.record
    parts = [(f'<section class="card card-{s.criterion}" id="s{i}" data-criterion="{s.criterion}" '
              f'data-sample-id="{escape(s.sample_id)}" data-result-sha256="{escape(s.result_sha256 or "")}" '
              f'data-final="{escape(s.final)}" data-decision="{escape(sections.decision_in_effect(s))}">'),
             sections.print_header(s),
             sections.headline(s),
             sections.comparison(s),
             sections.bullet_list("reasons", "Reasons", r.reasons),
             sections.bullet_list("flags", "Flags", sections.card_flags(s)),
             sections.bullet_list("warnings", "Warnings", r.warnings),
             sections.identity(r).replace("<p>", '<p class="no-print">', 1), sections.threshold(r),
             sections.density(i, s, assets)]
    if not s.figures:
        parts.append('<p class="missing">No QC figure: the gating of this sample cannot be reviewed here.</p>')
    thumbs = []
    for n, (name, png) in enumerate(s.figures):
        href = f"{escape(assets)}/s{i}/{escape(name)}"
        if n:  # only the stained tube's figure is inlined; the others are a click away
            title = f"{name} (automatic)" if s.reviewed and not name.startswith("reviewed_") else name
            thumbs.append(f'<a href="{href}" target="_blank" class="figure-link">{escape(title)}</a>')
            continue
        data = base64.b64encode(_thumbnail(png)).decode("ascii")
        thumbs.append(f'<a href="{href}" target="_blank" class="thumb"><img src="data:image/jpeg;base64,{data}" '
                      f'alt="{escape(name)} of {escape(s.sample_id)}" title="{escape(name)}: open the full figure" '
                      # lazy: a 500-sample page decodes only the thumbnails scrolled into view
                      f'loading="lazy" width="{THUMBNAIL_PX}"></a>')
    if thumbs:
        parts.append(f'<div class="thumbs no-print">{"".join(thumbs)}</div>')
    provenance = sections.provenance(r)
    # Closed <details> do not print: the provenance is repeated, expanded, for paper.
    printed = provenance.replace('<details class="provenance"><summary>Provenance</summary>',
                                 '<div class="print-only prov-print"><b>Provenance</b>').replace("</details>", "</div>")
    parts += [_print_key_plots(i, s, assets), sections.gates(r), sections.print_tree(r, bool(s.reviewed)), provenance,
              printed, sections.signature(), sections.sign_button(i), "</section>"]
    return "\n".join(p for p in parts if p)


