"""A calibration bead tube's standard curve: the bead lot, the bead peaks, and the fit between them.

Beads of known fluorochrome molecules per bead (for PE: 4 levels, e.g.
QuantiBRITE PE, with lot-specific values) acquired at the tube's instrument
settings give a standard curve: log10(molecules) against log10(median
fluorescence) of each bead peak on the CD125 detector. ``beads`` reads cells
through it; a lot or curve that cannot be trusted says why (``Curve.reason``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cd125gate.analysis.numeric.density import peaks as local_maxima
from cd125gate.analysis.numeric.density import robust_sd, smoothed_histogram
from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.io.fcs import FCSData
    from cd125gate.settings import Beads, Settings

# A peak holding this many times the median beads of the others is two levels merged:
# a bead kit holds about as many beads of each level.
MERGED_COUNT_RATIO = 1.6
# The brightest peak is saturated when this share of its beads sits at the detector's ceiling.
SATURATED_SHARE = 0.05
# A local maximum lower than this share of the tallest is noise, not a bead level.
MIN_PEAK_HEIGHT = 0.10


@dataclass(frozen=True)
class Lot:
    """A bead lot: the dye and the molecules per bead of each level, dimmest first."""

    name: str | None
    dye: str
    molecules: tuple[float, ...]
    source: str       # "settings" or the lot file's path

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dye": self.dye, "molecules": list(self.molecules), "source": self.source}


@dataclass
class Peak:
    median: float          # raw units of the CD125 detector
    events: int
    at_ceiling: float      # share of its beads at the detector's ceiling


@dataclass
class Curve:
    """The standard curve of one bead file and what went into it."""

    peaks: list[Peak]      # dimmest first
    log_values: np.ndarray  # log10 CD125 of the singlet beads (the QC figure's histogram)
    singlets: int
    slope: float | None = None
    intercept: float | None = None
    r2: float | None = None
    residuals: tuple[float, ...] = ()  # log10(molecules + autofluorescence) - fitted, per peak
    autofluorescence: float | None = None  # the beads' own fluorescence, molecules (FlowCal's term)
    reason: str | None = None  # why the curve cannot be used, or None

    def to_json(self, lot: Lot) -> dict[str, Any]:
        peaks = [{"peak": i, "median": p.median, "events": p.events,
                  "molecules": lot.molecules[i - 1] if self.slope is not None else None,
                  "residual_log10": self.residuals[i - 1] if self.residuals else None}
                 for i, p in enumerate(self.peaks, start=1)]
        return {"slope": self.slope, "intercept": self.intercept, "r2": self.r2,
                "autofluorescence": self.autofluorescence, "singlet_beads": self.singlets, "peaks": peaks}


# -- the lot -------------------------------------------------------------------------------------

def read_lot(path: str | Path) -> Lot:
    """The ``Lot`` in a lot file (YAML: ``lot``, ``dye``, ``molecules``); one-line InputError if bad."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(path, "cannot read bead lot: " + " ".join(str(exc).split())) from None
    if not isinstance(document, dict):
        raise InputError(path, "a bead lot file holds lot, dye and molecules (a mapping)")
    unknown = sorted(set(document) - {"lot", "dye", "molecules"})
    if unknown:
        raise InputError(path, f"unknown key(s) {', '.join(map(str, unknown))} (allowed: lot, dye, molecules)")
    return make_lot(document.get("lot"), document.get("dye"), document.get("molecules"), str(path))


def settings_lot(beads: Beads) -> Lot | None:
    """The lot of the settings' ``beads`` section, or None when it lists no molecules."""
    if not beads.molecules:
        return None
    return make_lot(beads.lot, beads.dye, beads.molecules, "settings")


def make_lot(name: object, dye: object, molecules: object, source: str) -> Lot:
    """A checked ``Lot`` from a lot file's or the settings' values (``source`` names them in messages)."""
    if not isinstance(dye, str) or not dye.strip():
        raise InputError(source, "bead lot: dye must be named (e.g. PE)")
    numbers = isinstance(molecules, list) and all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in molecules)
    if not numbers or len(molecules) < 3 or sorted(molecules) != molecules or len(set(molecules)) < len(molecules):
        raise InputError(source, f"bead lot: molecules must be 3 or more ascending positive numbers "
                                 f"(one per bead level, dimmest first), got {molecules!r}")
    return Lot(None if name is None else str(name), dye.strip(), tuple(float(m) for m in molecules), source)


# -- the standard curve --------------------------------------------------------------------------

def standard_curve(bead_fcs: FCSData, channel: str, lot: Lot, settings: Settings) -> Curve:
    """The curve of ``bead_fcs`` on detector ``channel`` ($PnN) against ``lot``; its ``reason`` if unusable."""
    from cd125gate.analysis.panel import map_panel

    scatter = map_panel(bead_fcs.channels, settings.panel, bead_fcs.path).markers
    if channel not in bead_fcs.channel_names():
        raise InputError(bead_fcs.path, f"the bead file has no {channel} channel (the CD125 detector)")
    singlets = singlet_beads(bead_fcs, scatter, settings.beads.singlet_mad)
    values = bead_fcs.column(channel)[singlets]
    ceiling = settings.qc.margin_fraction * _range(bead_fcs, channel)
    curve = find_peaks(values, ceiling)
    curve.reason = peak_problem(curve.peaks, lot)
    if curve.reason is None:
        fit(curve, lot)
        curve.reason = fit_problem(curve, lot, settings.beads)
    return curve


def singlet_beads(bead_fcs: FCSData, scatter: dict[str, str], mad: float) -> np.ndarray:
    """Single beads: the main FSC-A/SSC-A cluster (doublets and debris lie far off it), FSC-A/FSC-H too."""
    keep = np.ones(bead_fcs.event_count, dtype=bool)
    for name in ("FSC-A", "SSC-A"):
        if name not in scatter:
            raise InputError(bead_fcs.path, f"the bead file has no {name} channel to find single beads on")
        keep &= _near_centre(np.log10(np.clip(bead_fcs.column(scatter[name]), 1.0, None)), mad)
    if "FSC-H" in scatter:
        ratio = bead_fcs.column(scatter["FSC-A"]) / np.clip(bead_fcs.column(scatter["FSC-H"]), 1.0, None)
        keep &= _near_centre(ratio, mad)
    if keep.sum() < 100:
        raise InputError(bead_fcs.path, f"only {int(keep.sum())} single beads on scatter (need 100)")
    return keep


def _near_centre(x, mad):
    """Within ``mad`` robust SDs of the median (the SD from the MAD)."""
    return np.abs(x - np.median(x)) <= mad * max(robust_sd(x), 1e-6)


def find_peaks(values: np.ndarray, ceiling: float) -> Curve:
    """The bead peaks of ``values`` (raw), dimmest first, split at the valleys between them."""
    positive = np.log10(values[values > 0])
    top = np.log10(ceiling) + 0.05
    lo = max(0.0, float(np.quantile(positive, 0.001)) - 0.2) if positive.size else 0.0
    centres, dens = smoothed_histogram(positive, lo, top, bins=512, sigma_bins=2.0)
    tops = local_maxima(dens, min_height=MIN_PEAK_HEIGHT * dens.max()) if positive.size else []
    edges = [lo] + [float(centres[a + int(np.argmin(dens[a:b + 1]))]) for a, b in zip(tops[:-1], tops[1:])] + [np.inf]
    found = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = positive[(positive >= a) & (positive < b)]
        if inside.size:
            found.append(Peak(float(10 ** np.median(inside)), int(inside.size),
                              float(np.mean(inside >= np.log10(ceiling)))))
    return Curve(found, positive, int(values.size))


def peak_problem(peaks: list[Peak], lot: Lot) -> str | None:
    """Why the peaks cannot be matched to the lot's levels one by one, or None."""
    n, k = len(peaks), len(lot.molecules)
    if peaks and peaks[-1].at_ceiling >= SATURATED_SHARE:
        return (f"bead peak {n} (the brightest) is saturated: {peaks[-1].at_ceiling:.0%} of its beads "
                "at the detector's ceiling")
    if n > k:
        return f"the bead lot lists {k} peaks but {n} were found"
    if n == k:
        return None
    counts = np.array([p.events for p in peaks])
    for i, count in enumerate(counts):
        others = np.delete(counts, i)
        if others.size and count >= MERGED_COUNT_RATIO * np.median(others):
            return (f"two bead peaks merged: peak {i + 1} of {n} holds {count / counts.sum():.0%} "
                    f"of the single beads ({k} levels expected)")
    missing = _missing_level(peaks, lot) if k - n == 1 and n >= 3 else None  # 2 points always fit
    if missing is not None:
        return f"bead peak {missing} of {k} missing (expected near {lot.molecules[missing - 1]:g} molecules)"
    return f"the bead lot lists {k} peaks but {n} were found"


def _missing_level(peaks, lot):
    """The lot level (1-based) whose absence lets the found peaks fit best, when that fit is good."""
    best, best_r2 = None, 0.98
    for skip in range(len(lot.molecules)):
        kept = [m for i, m in enumerate(lot.molecules) if i != skip]
        r2 = _line(np.log10([p.median for p in peaks]), np.log10(kept))[2]
        if r2 >= best_r2:
            best, best_r2 = skip + 1, r2
    return best


def _line(x, y):
    """Least-squares y = slope * x + intercept: (slope, intercept, R², residuals)."""
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total else 0.0
    return float(slope), float(intercept), r2, residual


def _bead_model(medians, molecules, steps=60):
    """The bead model FlowCal fits: slope * log10(median) + intercept = log10(molecules + autofluorescence).

    The beads' own fluorescence (molecules of dye a bead shows with none bound, >= 0) bends the curve
    at its dim end. For a given autofluorescence the model is a straight line, so the least-squares
    fit is a one-dimensional search over it (a coarse log grid, then golden sections between the
    best grid point's neighbours): (slope, intercept, R², residuals, autofluorescence).
    """
    x, molecules = np.log10(medians), np.asarray(molecules, dtype=float)

    def sse(auto):
        return float(np.sum(_line(x, np.log10(molecules + auto))[3] ** 2))

    grid = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, steps) * molecules[0]])
    errors = [sse(a) for a in grid]
    best = int(np.argmin(errors))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if sse(a) <= sse(b):
            hi = b
        else:
            lo = a
    auto = min((lo + hi) / 2.0, grid[best], key=sse)
    return (*_line(x, np.log10(molecules + auto)), float(auto))


def fit(curve: Curve, lot: Lot) -> None:
    """Fill the curve's slope, intercept, R², per-peak residuals (log10 units) and bead autofluorescence.

    The standard curve (``abc``) leaves the beads' autofluorescence out, as FlowCal's does: the
    molecules bound to a cell are what is left once the beads' own fluorescence is accounted for.
    """
    medians = [p.median for p in curve.peaks]
    curve.slope, curve.intercept, curve.r2, residual, curve.autofluorescence = _bead_model(medians, lot.molecules)
    curve.residuals = tuple(float(r) for r in residual)


def fit_problem(curve: Curve, lot: Lot, beads: Beads) -> str | None:
    """Why the fitted curve fails its checks (R², slope, the beads' autofluorescence), or None."""
    if curve.r2 < beads.min_r2:
        return f"bead curve R² {curve.r2:.4f} below {beads.min_r2:g}"
    if not beads.slope_min <= curve.slope <= beads.slope_max:
        return f"bead curve slope {curve.slope:.3f} outside {beads.slope_min:g}-{beads.slope_max:g}"
    if curve.autofluorescence is not None and curve.autofluorescence >= lot.molecules[0]:
        return (f"bead autofluorescence {curve.autofluorescence:.0f} molecules is not below the dimmest "
                f"level's {lot.molecules[0]:g}: the lot's values or the peaks are off")
    return None


def _range(fcs, channel):
    return next(c.range for c in fcs.channels if c.name == channel)


# -- the same instrument, at the same settings ---------------------------------------------------
