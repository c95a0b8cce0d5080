"""The per-sample sign-out record: one A4 page (``samples/{id}/signout.pdf``) for the trial file.

The page holds what the printed review card holds: who the sample is
(patient, specimen, acquisition date, instrument), the decision with its
confidence interval, the threshold against the control, the key plots (the
blast gate and CD125 panels cut from the sample's QC figure), the gate counts
as a tree, the provenance and a signature block.

User text (sample ids, reasons, notes) is drawn with ``parse_math=False``:
a ``$`` in a reviewer's reason is a dollar sign, never mathtext.
"""

import io
from pathlib import Path

from .errors import InputError
from .results import REVIEWED_RESULT
from .regate_figure import REVIEWED_QC
from .results import control_pos_fraction

A4_INCHES = (8.27, 11.69)
# The QC figure's layout (cd125gate.plots): panels of PANEL_INCHES in NCOLS columns under a header.
# Cropping needs the grid margins plots.py gives its gridspec.
GRID_LEFT, GRID_RIGHT, GRID_BOTTOM_EXTRA, GRID_TOP_EXTRA, HSPACE = 0.045, 0.99, 0.45, 0.35, 0.5


def key_panels(png_bytes):
    """The key panels of a QC figure (PNG bytes or a PIL image), as PNG bytes: the CD45 / SSC-A
    blast gate a cytometrist looks at first, then CD125 on blasts.

    The figure names its panels in a tEXt chunk (`plots.PANELS_KEY`); a figure
    without one (drawn by an earlier version) gives its last two panels, the
    basophil exclusion and CD125. Returns [] for a figure that is not a panel
    grid (a FAILED sample's figure).
    """
    import numpy as np
    from PIL import Image

    from . import plots

    # A decoded image is accepted too: the review page decodes each figure once for all its uses.
    image = (png_bytes if hasattr(png_bytes, "crop") else Image.open(io.BytesIO(png_bytes))).convert("RGB")
    dpi = plots.DPI
    width, height = image.size[0] / dpi, image.size[1] / dpi
    nrows = round((height - plots.HEADER_INCHES - plots.FOOTER_INCHES) / plots.PANEL_INCHES[1])
    if nrows < 1 or abs(width - plots.PANEL_INCHES[0] * plots.NCOLS) > 0.05:
        return []
    grid_top = plots.HEADER_INCHES + GRID_TOP_EXTRA
    grid_height = height - grid_top - (plots.FOOTER_INCHES + GRID_BOTTOM_EXTRA)
    axes_height = grid_height / (nrows + (nrows - 1) * HSPACE)
    column = width / plots.NCOLS
    pixels = np.asarray(image)

    def cell(row, col):
        # 0.55 in above the axes: room for a three-line title (the CD45 panel's), short of the row above.
        top = grid_top + row * axes_height * (1 + HSPACE) - 0.55
        bottom = top + axes_height + 0.55 + 0.5
        return tuple(int(round(v * dpi)) for v in (col * column, top, (col + 1) * column, min(bottom, height)))

    def drawn(box):
        left, top, right, bottom = box
        return (pixels[top:bottom, left:right] < 200).any()

    cells = [(r, c) for r in range(nrows) for c in range(plots.NCOLS) if drawn(cell(r, c))]
    if len(cells) < 2:
        return []
    names = (image.info.get(plots.PANELS_KEY) or "").split(",")
    wanted = [names.index(n) for n in (plots.BLAST_GATE_PANEL, plots.CD125_PANEL) if n in names]
    chosen = [cells[i] for i in wanted] if len(wanted) == 2 and len(names) == len(cells) else cells[-2:]
    crops = []
    for r, c in chosen:
        box = _trimmed(pixels, cell(r, c), pad=int(0.05 * dpi))
        buffer = io.BytesIO()
        image.crop(box).save(buffer, format="png", dpi=(dpi, dpi))
        crops.append(buffer.getvalue())
    return crops


def _trimmed(pixels, box, pad):
    """``box`` shrunk to its drawn (non-white) pixels plus ``pad``: no blank margin to print."""
    import numpy as np

    left, top, right, bottom = box
    drawn = (pixels[top:bottom, left:right] < 245).any(axis=2)
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        return box
    return (max(left, left + cols[0] - pad), max(top, top + rows[0] - pad),
            min(right, left + cols[-1] + 1 + pad), min(bottom, top + rows[-1] + 1 + pad))


def gate_tree(gates):
    """Gate counts as indented lines, children under their parent: "  └ blasts  1,752  (97.3%)"."""
    by_parent = {}
    for gate in gates or []:
        by_parent.setdefault(gate.get("parent"), []).append(gate)
    lines = []

    def walk(parent, depth):
        for gate in by_parent.get(parent, []):
            mark = " (excluded)" if gate.get("exclusion") else ""
            lines.append(f"{'  ' * depth}{'└ ' if depth else ''}{gate['name']}{mark}  {gate['count']:,}"
                         f"  ({gate['percent_of_parent']:.1f}%)")
            walk(gate["name"], depth + 1)

    walk(None, 0)
    return lines


def _percent(value):
    return "–" if value is None else f"{100 * value:.1f}%"


def reviewed_record(folder, row):
    """The sample's reviewed_result.json (a dict) when its record is the re-gated result, else None.

    Only the reviewed result the screening row names (by digest) is the
    record: one left over from an earlier REGATE is not.
    """
    import json

    from .fileio import sha256_file

    path = Path(folder) / REVIEWED_RESULT
    digest = (row or {}).get("reviewed_result_sha256")
    if not digest or not path.is_file() or sha256_file(path) != digest:
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def record_figure(folder, reviewed):
    """The stained tube's QC figure of the record: the re-gated one for a re-gated sample."""
    name = f"{REVIEWED_QC}.png" if reviewed is not None else "qc.png"
    path = Path(folder) / name
    return path.read_bytes() if path.is_file() else None


def _fraction_line(result):
    return (f"CD125+ blasts: {_percent(result['cd125_pos_fraction'])} (95% CI "
            f"{_percent(result.get('ci_low'))}–{_percent(result.get('ci_high'))}), "
            f"{result.get('cd125_pos_events', 0):,} of {result.get('blast_events', 0):,} blasts")


def comparison_lines(automatic, reviewed, row=None):
    """The automatic result beside a re-gated record, and the digests that bind the two."""
    review = reviewed.get("review") or {}
    threshold = automatic.get("threshold") or {}
    lines = [f"Automatic criterion: {automatic.get('criterion', '?').replace('_', ' ')}"]
    if automatic.get("cd125_pos_fraction") is not None:
        lines.append("Automatic " + _fraction_line(automatic))
    if threshold.get("value_raw") is not None:
        lines.append(f"Automatic cut-off: {threshold['value_raw']:,.4g} raw ({threshold.get('method')})")
    # A digest on a line of its own: 64 characters that must not be wrapped or cut.
    lines += ["result.json (automatic), sha256:", f"   {review.get('source_result_sha256')}"]
    if (row or {}).get("reviewed_result_sha256"):
        lines += ["reviewed_result.json (this record), sha256:", f"   {row['reviewed_result_sha256']}"]
    lines += [f"Edited gates {Path(str(review.get('gates'))).name}, sha256:", f"   {review.get('gates_sha256')}"]
    if review.get("figure_note"):
        lines.append(f"No re-gated figure: {review['figure_note']}")
    return lines


def decision_lines(result, row, automatic=None):
    """The decision block: final status, criterion, fraction and CI, the review.

    With ``automatic`` (the automatic result), ``result`` is the re-gated one.
    """
    row = row or {}
    final = row.get("final") or "PENDING_REVIEW"
    which = "Re-gated criterion" if automatic is not None else "Automatic criterion"
    lines = [f"Final status: {final.replace('_', ' ')}",
             f"{which}: {result.get('criterion', '?').replace('_', ' ')}"]
    if result.get("cd125_pos_fraction") is not None:
        lines.append(_fraction_line(result))
    needed = (result.get("criterion_settings") or {}).get("positive_fraction")
    if needed is not None:
        lines.append(f"MET needs ≥ {100 * needed:.0f}% CD125+ blasts")
    if row.get("reviewed_criterion") and automatic is None:
        lines.append(f"Re-gated result: {row['reviewed_criterion'].replace('_', ' ')}, CD125+ "
                     f"{_percent(row.get('reviewed_cd125_pos_fraction'))} (95% CI "
                     f"{_percent(row.get('reviewed_ci_low'))}–{_percent(row.get('reviewed_ci_high'))})")
    if row.get("review_decision"):
        lines.append(f"Review: {row['review_decision']} by {row.get('reviewed_by')} on {row.get('reviewed_at')}"
                     + (f" — {row['review_reason']}" if row.get("review_reason") else ""))
    elif row.get("review_note"):
        lines.append(f"Review: {row['review_note']}")
    for reason in result.get("reasons") or []:
        lines.append(f"Reason: {reason}")
    return lines


def threshold_lines(result, row):
    row = row or {}
    threshold = result.get("threshold") or {}
    if not threshold:
        return ["No CD125 threshold (no gated result)."]
    lines = [f"Method: {threshold.get('method')} — {threshold.get('description', '')}",
             f"Cut-off: {threshold.get('value_raw', 0):,.4g} (compensated raw units)"]
    # The screening row's share is the automatic cut-off's; a re-gated result carries its own counts.
    control = (control_pos_fraction(result.get("control_gates")) if result.get("review")
               else row.get("control_pos_fraction"))
    if control is not None:
        lines.append(f"Control blasts above the cut-off: {_percent(control)}")
    ratio = (result.get("cd125_median") or {}).get("ratio")
    if ratio is not None:
        lines.append(f"CD125 median on blasts, stained / control: {ratio:.2f}")
    return lines


def provenance_lines(result, row):
    row = row or {}
    inputs = result.get("inputs") or {}
    lines = []
    for role, entry in (("Stained", inputs.get("fcs")), ("Control", inputs.get("control")),
                        ("Compensation", inputs.get("compensation"))):
        if entry:
            lines.append(f"{role}: {entry.get('path')}")
            lines.append(f"   sha256 {entry.get('sha256') or 'not recorded'}")
    provenance = result.get("provenance") or {}
    lines.append(f"cd125gate {provenance.get('cd125gate_version')}, FlowKit {provenance.get('flowkit_version', '?')}")
    lines.append(f"Settings digest {provenance.get('config_digest')}")
    if row.get("result_sha256"):
        lines.append(f"result.json sha256 {row['result_sha256']}")
    return lines


def header_fields(result, row):
    row = row or {}
    acquired = " ".join(v for v in (row.get("acquisition_date"), row.get("acquisition_time")) if v)
    instrument = " ".join(v for v in (row.get("instrument"),
                                      f"(s/n {row['instrument_serial']})" if row.get("instrument_serial") else None)
                          if v)
    return [("Sample", result.get("sample_id")), ("Patient", result.get("patient_id")),
            ("Specimen", result.get("specimen")), ("Acquired", acquired or None),
            ("Instrument", instrument or None), ("Operator", row.get("operator")), ("Tube", row.get("tube_name"))]


def signout_figure(result, row=None, qc_png=None, automatic=None):
    """The sign-out page as a matplotlib Figure (A4 portrait).

    For a re-gated sample ``result`` is the reviewed result (and ``qc_png`` its
    figure) and ``automatic`` the automatic result, printed beside it for comparison.
    """
    import textwrap

    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=A4_INCHES, dpi=150)
    margin = 0.5 / A4_INCHES[0]

    def text(x, y, value, **kwargs):
        # parse_math=False: user text is never mathtext (a reason may contain "$").
        return fig.text(x, y, str(value), parse_math=False, va="top", **kwargs)

    def block(x, y, title, lines, width=60, size=8):
        text(x, y, title, fontsize=9.5, weight="bold")
        y -= 0.018
        for line in lines:
            for part in textwrap.wrap(line, width, subsequent_indent="   ") or [""]:
                text(x, y, part, fontsize=size, family="DejaVu Sans")
                y -= size * 1.35 / 72 / A4_INCHES[1]
        return y - 0.008

    text(margin, 0.975, "CD125 (IL-5Rα) screening — sign-out record", fontsize=14, weight="bold")
    y = 0.945
    for i, (label, value) in enumerate(header_fields(result, row)):
        col, line = i % 2, i // 2
        text(margin + col * 0.47, y - line * 0.017, f"{label}: {value if value else '–'}", fontsize=9)
    y -= 4 * 0.017 + 0.005
    left_width = 0.52
    y_left = block(margin, y, "Decision", decision_lines(result, row, automatic), width=70)
    if automatic is not None:
        y_left = block(margin, y_left, "Automatic result, for comparison", comparison_lines(automatic, result, row),
                       width=84, size=7)
    y_left = block(margin, y_left, "Threshold vs control", threshold_lines(result, row), width=70)
    if result.get("density"):
        from .beads import density_lines

        y_left = block(margin, y_left, "CD125 antigen density (calibration beads)",
                       density_lines(result["density"]), width=75, size=7.5)
    panels = key_panels(qc_png) if qc_png else []
    if panels:
        top = y_left - 0.005
        images = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in panels]
        # Side by side would halve them; stacked, they shrink only as far as the signature block needs.
        natural = sum(left_width * A4_INCHES[0] * im.shape[0] / im.shape[1] / A4_INCHES[1] for im in images)
        scale = min(1.0, (top - 0.13 - 0.005 * len(images)) / natural)
        for image in images:
            w_frac = left_width * scale
            h_frac = w_frac * A4_INCHES[0] * image.shape[0] / image.shape[1] / A4_INCHES[1]
            ax = fig.add_axes([margin, top - h_frac, w_frac, h_frac])
            ax.imshow(image, interpolation="none")
            ax.set_axis_off()
            top -= h_frac + 0.005
        y_left = top
    elif qc_png is None:
        y_left = block(margin, y_left, "Key plots", ["No QC figure found for this sample."])
    x_right = margin + left_width + 0.03
    title = "Gate counts (stained tube, re-gated)" if automatic is not None else "Gate counts (stained tube)"
    y_right = block(x_right, y, title, gate_tree(result.get("gates")), width=90, size=7)
    y_right = block(x_right, y_right, "Provenance", provenance_lines(result, row), width=52, size=6.5)
    flags = list(result.get("flags") or [])
    if flags:
        block(x_right, y_right, "Flags", flags, width=52, size=7)
    # Signature block at the foot of the page.
    base = 0.075
    text(margin, base + 0.035, "Sign-out", fontsize=9.5, weight="bold")
    for i, label in enumerate(("Reviewed by (name)", "Signature", "Date")):
        x = margin + i * 0.31
        fig.add_artist(_line(fig, x, x + 0.27, base - 0.01))
        text(x, base - 0.014, label, fontsize=7.5, color="#444444")
    text(margin, 0.02, f"Sample {result.get('sample_id')} · generated by cd125gate "
                       f"{(result.get('provenance') or {}).get('cd125gate_version', '')}",
         fontsize=6.5, color="#666666")
    return fig


def _line(fig, x0, x1, y):
    from matplotlib.lines import Line2D

    return Line2D([x0, x1], [y, y], transform=fig.transFigure, color="black", linewidth=0.8)


def write_signout(path, result, row=None, qc_png=None, automatic=None):
    """Write the sign-out PDF (one A4 page) of one sample (``automatic``: see `signout_figure`)."""
    from .fileio import atomic_write_bytes

    fig = signout_figure(result, row, qc_png, automatic)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None})
    atomic_write_bytes(path, buffer.getvalue())


# --- command line --------------------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument("--screening", required=True, type=Path, help="screening.json of the batch")
    parser.add_argument("--results-dir", required=True, type=Path,
                        help="folder with one sub-folder per sample (result.json, qc.png)")


def run(args):
    import json

    from . import results

    try:
        rows = json.loads(args.screening.read_text(encoding="utf-8"))["samples"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(args.screening, f"cannot read screening file: {exc}") from None
    for row in rows:
        folder = args.results_dir / row["sample_id"]
        result = results.load(folder / "result.json").to_json()
        # A re-gated sample's record is its reviewed result, the automatic one beside it.
        reviewed = reviewed_record(folder, row)
        record, automatic = (reviewed, result) if reviewed is not None else (result, None)
        write_signout(folder / "signout.pdf", record, row, record_figure(folder, reviewed), automatic)
    print(f"{len(rows)} sign-out records written")
    return 0
