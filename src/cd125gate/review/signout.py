"""The per-sample sign-out record: one A4 page (``samples/{id}/signout.pdf``) for the trial file.

The page holds what the printed review card holds: who the sample is
(patient, specimen, acquisition date, instrument), the decision with its
confidence interval, the threshold against the control, the key plots (the
blast gate and CD125 panels, drawn beside the sample's QC figure as figures of
their own), the gate counts as a tree, the provenance and a signature block.

User text (sample ids, reasons, notes) is drawn with ``parse_math=False``:
a ``$`` in a reviewer's reason is a dollar sign, never mathtext.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.figures.regate_figure import REVIEWED_QC
from cd125gate.results import REVIEWED_RESULT, GateCount, SampleResult, control_pos_fraction
from cd125gate.results import formatting as fmt

if TYPE_CHECKING:
    from collections.abc import Iterable

    from matplotlib.figure import Figure

    from cd125gate.review.screening import ScreeningRow

A4_INCHES = (8.27, 11.69)
NO_FIGURE = "No QC figure found for this sample."


@dataclass(frozen=True)
class KeyPanels:
    """A record's key panels as PNGs (the CD45 / SSC-A blast gate, then CD125 on blasts), or why there are none.

    ``missing`` is what to print in their place; None with no panels: nothing
    (a FAILED sample's figure, or the card of a re-gated sample, has none).
    """

    panels: tuple[tuple[str, bytes], ...] = ()  # (panel name, PNG), `plots.KEY_PANELS` order
    missing: str | None = None

    @property
    def pngs(self) -> list[bytes]:
        """The PNGs alone, in printed order."""
        return [png for _, png in self.panels]


def record_key_panels(folder: Path | str, record: SampleResult) -> KeyPanels:
    """The key panels drawn beside the record's QC figure (``reviewed_qc.png`` for a re-gated record).

    A folder written before the key panels were drawn as files of their own
    has the figure without them: that is said, not made up from the figure.
    """
    from cd125gate.figures.plots import KEY_PANELS, key_panel_files

    folder = Path(folder)
    stem = REVIEWED_QC if record.review else "qc"
    if not (folder / f"{stem}.png").is_file():
        return KeyPanels(missing=NO_FIGURE)
    names = key_panel_files(stem)
    panels = tuple((panel, (folder / name).read_bytes()) for panel, name in zip(KEY_PANELS, names)
                   if (folder / name).is_file())
    card = not record.gates or (record.regate is not None and record.regate.figure_note is not None)
    if panels or card:
        return KeyPanels(panels)
    return KeyPanels(missing=f"No key panels ({', '.join(names)}) beside {stem}.png: its folder was written "
                             "by an earlier cd125gate; analyse the sample again to print them.")


def gate_tree(gates: Iterable[GateCount]) -> list[str]:
    """Gate counts as indented lines, children under their parent: "  └ blasts  1,752  (97.3%)"."""
    by_parent = {}
    for gate in gates:
        by_parent.setdefault(gate.parent, []).append(gate)
    lines = []

    def walk(parent, depth):
        for gate in by_parent.get(parent, []):
            mark = " (excluded)" if gate.exclusion else ""
            lines.append(f"{'  ' * depth}{'└ ' if depth else ''}{gate.name}{mark}  {gate.count:,}"
                         f"  ({gate.percent_of_parent:.1f}%)")
            walk(gate.name, depth + 1)

    walk(None, 0)
    return lines


def reviewed_record(folder: Path | str, row: ScreeningRow | None) -> SampleResult | None:
    """The sample's reviewed_result.json when its record is the re-gated result, else None.

    Only the reviewed result the screening row names (by digest) is the
    record: one left over from an earlier REGATE is not.
    """
    from cd125gate import results
    from cd125gate.io.fileio import sha256_file

    path = Path(folder) / REVIEWED_RESULT
    digest = row.reviewed_result_sha256 if row is not None else None
    if not digest or not path.is_file() or sha256_file(path) != digest:
        return None
    return results.load(path)


def _fraction_line(result: SampleResult) -> str:
    return (f"CD125+ blasts: {fmt.percent(result.cd125_pos_fraction)} (95% CI "
            f"{fmt.ci_range(result.ci_low, result.ci_high)}), "
            f"{result.cd125_pos_events:,} of {result.blast_events:,} blasts")


def comparison_lines(automatic: SampleResult, reviewed: SampleResult, row: ScreeningRow | None = None) -> list[str]:
    """The automatic result beside a re-gated record, and the digests that bind the two."""
    review = reviewed.regate
    cutoff = automatic.cutoff
    lines = [f"Automatic criterion: {automatic.criterion.replace('_', ' ')}"]
    if automatic.cd125_pos_fraction is not None:
        lines.append("Automatic " + _fraction_line(automatic))
    if cutoff is not None:
        lines.append(f"Automatic cut-off: {fmt.raw_value(cutoff.value_raw)} raw ({cutoff.method})")
    # A digest on a line of its own: 64 characters that must not be wrapped or cut.
    lines += ["result.json (automatic), sha256:", f"   {review.source_result_sha256}"]
    if row is not None and row.reviewed_result_sha256:
        lines += ["reviewed_result.json (this record), sha256:", f"   {row.reviewed_result_sha256}"]
    lines += [f"Edited gates {Path(review.gates).name}, sha256:", f"   {review.gates_sha256}"]
    if review.figure_note:
        lines.append(f"No re-gated figure: {review.figure_note}")
    return lines


def decision_lines(result: SampleResult, row: ScreeningRow | None,
                   automatic: SampleResult | None = None) -> list[str]:
    """The decision block: final status, criterion, fraction and CI, the review.

    With ``automatic`` (the automatic result), ``result`` is the re-gated one.
    """
    final = (row.final if row is not None else None) or "PENDING_REVIEW"
    which = "Re-gated criterion" if automatic is not None else "Automatic criterion"
    lines = [f"Final status: {final.replace('_', ' ')}",
             f"{which}: {result.criterion.replace('_', ' ')}"]
    if result.cd125_pos_fraction is not None:
        lines.append(_fraction_line(result))
    needed = result.positive_fraction_needed
    if needed is not None:
        lines.append(f"MET needs ≥ {fmt.whole_percent(needed)} CD125+ blasts")
    if row is None:
        return lines + [f"Reason: {reason}" for reason in result.reasons]
    if row.reviewed_criterion and automatic is None:
        lines.append(f"Re-gated result: {row.reviewed_criterion.replace('_', ' ')}, CD125+ "
                     f"{fmt.percent(row.reviewed_cd125_pos_fraction)} (95% CI "
                     f"{fmt.ci_range(row.reviewed_ci_low, row.reviewed_ci_high)})")
    if row.review_decision:
        lines.append(f"Review: {row.review_decision} by {row.reviewed_by} on {row.reviewed_at}"
                     + (f" — {row.review_reason}" if row.review_reason else ""))
    elif row.review_note:
        lines.append(f"Review: {row.review_note}")
    return lines + [f"Reason: {reason}" for reason in result.reasons]


def threshold_lines(result: SampleResult, row: ScreeningRow | None) -> list[str]:
    cutoff = result.cutoff
    if cutoff is None:
        return ["No CD125 threshold (no gated result)."]
    lines = [f"Method: {cutoff.method} — {cutoff.description}",
             f"Cut-off: {fmt.raw_value(cutoff.value_raw)} (compensated raw units)"]
    # The screening row's share is the automatic cut-off's; a re-gated result carries its own counts.
    if result.review:
        control = control_pos_fraction(result.control_gates)
    else:
        control = row.control_pos_fraction if row is not None else None
    if control is not None:
        lines.append(f"Control blasts above the cut-off: {fmt.percent(control)}")
    if result.median_ratio is not None:
        lines.append(f"CD125 median on blasts, stained / control: {result.median_ratio:.2f}")
    return lines


def provenance_lines(result: SampleResult, row: ScreeningRow | None) -> list[str]:
    lines = []
    for role, label in (("fcs", "Stained"), ("control", "Control"), ("compensation", "Compensation")):
        entry = result.input_file(role)
        if entry is not None:
            lines.append(f"{label}: {entry.path}")
            lines.append(f"   sha256 {entry.sha256 or 'not recorded'}")
    lines.append(f"cd125gate {result.cd125gate_version}, FlowKit {result.flowkit_version or '?'}")
    lines.append(f"Settings digest {result.config_digest}")
    if row is not None and row.result_sha256:
        lines.append(f"result.json sha256 {row.result_sha256}")
    return lines


def header_fields(result: SampleResult, row: ScreeningRow | None) -> list[tuple[str, str | None]]:
    fields = [("Sample", result.sample_id), ("Patient", result.patient_id), ("Specimen", result.specimen)]
    if row is None:
        return fields + [("Acquired", None), ("Instrument", None), ("Operator", None), ("Tube", None)]
    return fields + [("Acquired", row.acquired or None), ("Instrument", row.instrument_label or None),
                     ("Operator", row.operator), ("Tube", row.tube_name)]


def signout_figure(result: SampleResult, row: ScreeningRow | None = None, key_panels: KeyPanels | None = None,
                   automatic: SampleResult | None = None) -> Figure:
    """The sign-out page as a matplotlib Figure (A4 portrait).

    For a re-gated sample ``result`` is the reviewed result (and ``key_panels``
    its figure's, `record_key_panels`) and ``automatic`` the automatic result,
    printed beside it for comparison. No ``key_panels``: no QC figure was found.
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
    if result.density:
        from cd125gate.analysis.antigen.beads import density_lines

        y_left = block(margin, y_left, "CD125 antigen density (calibration beads)",
                       density_lines(result.density), width=75, size=7.5)
    key_panels = key_panels or KeyPanels(missing=NO_FIGURE)
    if key_panels.pngs:
        top = y_left - 0.005
        images = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in key_panels.pngs]
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
    elif key_panels.missing:
        y_left = block(margin, y_left, "Key plots", [key_panels.missing])
    x_right = margin + left_width + 0.03
    title = "Gate counts (stained tube, re-gated)" if automatic is not None else "Gate counts (stained tube)"
    y_right = block(x_right, y, title, gate_tree(result.gate_counts), width=90, size=7)
    y_right = block(x_right, y_right, "Provenance", provenance_lines(result, row), width=52, size=6.5)
    if result.flags:
        block(x_right, y_right, "Flags", list(result.flags), width=52, size=7)
    # Signature block at the foot of the page.
    base = 0.075
    text(margin, base + 0.035, "Sign-out", fontsize=9.5, weight="bold")
    for i, label in enumerate(("Reviewed by (name)", "Signature", "Date")):
        x = margin + i * 0.31
        fig.add_artist(_line(fig, x, x + 0.27, base - 0.01))
        text(x, base - 0.014, label, fontsize=7.5, color="#444444")
    text(margin, 0.02, f"Sample {result.sample_id} · generated by cd125gate {result.cd125gate_version or ''}",
         fontsize=6.5, color="#666666")
    return fig


def _line(fig, x0, x1, y):
    from matplotlib.lines import Line2D

    return Line2D([x0, x1], [y, y], transform=fig.transFigure, color="black", linewidth=0.8)


def write_signout(path: Path | str, result: SampleResult, row: ScreeningRow | None = None,
                  key_panels: KeyPanels | None = None, automatic: SampleResult | None = None) -> None:
    """Write the sign-out PDF (one A4 page) of one sample (``key_panels``, ``automatic``: see `signout_figure`)."""
    from cd125gate.io.fileio import atomic_write_bytes

    fig = signout_figure(result, row, key_panels, automatic)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None})
    atomic_write_bytes(path, buffer.getvalue())
