"""The bead QC figure: the bead peaks found on the CD125 detector, and the standard curve with the lot's values.

A reviewer checks two things before trusting a density: that each bead level
made its own peak (none missing, merged or cut off at the ceiling), and that
the lot's molecules lie on one straight line against the peaks' medians.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.figures.raster import check_formats, new_figure, plain_text, save

if TYPE_CHECKING:
    from cd125gate.analysis.antigen.beads import Density

OK_COLOUR = "#1a7f37"
WITHHELD_COLOUR = "#c62828"


def plot_beads(density: Density, sample_id: str, out_dir: Path | str,
               formats: Iterable[str] = ("png",)) -> list[Path]:
    """Write ``beads.<fmt>`` for a ``beads.Density`` whose curve was made; return the paths."""
    formats = check_formats(formats)
    with plain_text():
        return save(_figure(density, sample_id), out_dir, "beads", formats)


def _figure(density, sample_id):
    curve, lot, record = density.curve, density.lot, density.record
    fig = new_figure((11, 4.6))
    lot_name = lot.name or "(no lot name)"
    fig.text(0.02, 0.95, f"{sample_id}: calibration beads ({lot.dye}, lot {lot_name})", fontsize=13,
             weight="bold", va="top")
    ok = record["status"] == "measured"
    status = "density measured" if ok else record["reason"]
    fig.text(0.02, 0.885, status, fontsize=10, va="top", color=OK_COLOUR if ok else WITHHELD_COLOUR)
    _peaks_panel(fig.add_axes((0.06, 0.12, 0.42, 0.66)), curve)
    _curve_panel(fig.add_axes((0.56, 0.12, 0.42, 0.66)), curve, lot)
    return fig


def _peaks_panel(ax, curve):
    """Histogram of log10 CD125 of the single beads, each found peak marked by its order."""
    values = curve.log_values
    ax.hist(values, bins=200, color="#7f7f7f", histtype="stepfilled")
    for number, peak in enumerate(curve.peaks, start=1):
        x = np.log10(peak.median)
        ax.axvline(x, color="#1f77b4", lw=1)
        ax.text(x, 1.0, f"{number}", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=9, color="#1f77b4")
    ax.set_xlabel("CD125 detector, log10 (single beads)")
    ax.set_ylabel("beads")
    ax.set_title(f"{len(curve.peaks)} peaks found in {curve.singlets} single beads", fontsize=9, y=1.06)


def _curve_panel(ax, curve, lot):
    """The lot's molecules against the peaks' medians, and the fitted line when there is one."""
    if curve.slope is None:  # the peaks could not be matched to the lot's levels
        ax.text(0.5, 0.5, "no fit: the peaks do not match the lot's levels", ha="center", va="center",
                transform=ax.transAxes, fontsize=10, color=WITHHELD_COLOUR)
        ax.set_axis_off()
        return
    x = np.log10([p.median for p in curve.peaks])
    y = np.log10(lot.molecules)
    ax.plot(x, y, "o", color="#1f77b4")
    span = np.array([x.min() - 0.3, x.max() + 0.3])
    ax.plot(span, curve.slope * span + curve.intercept, "-", color="#000000", lw=1)
    for xi, yi, molecules, residual in zip(x, y, lot.molecules, curve.residuals):
        ax.annotate(f"{molecules:g} (residual {residual:+.3f})", (xi, yi), textcoords="offset points",
                    xytext=(-8, 4), ha="right", fontsize=8)
    ax.set_xlabel("log10 median of the peak")
    ax.set_ylabel(f"log10 {lot.dye} molecules per bead (lot)")
    ax.set_title(f"log10(molecules) = {curve.slope:.4f} x log10(median) + {curve.intercept:.4f};  "
                 f"R² {curve.r2:.5f}", fontsize=9)
