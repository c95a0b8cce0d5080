"""CD125 antigen density (antibodies bound per cell, ABC) from a calibration bead tube.

Beads of known fluorochrome molecules per bead (for PE: 4 levels, e.g.
QuantiBRITE PE, with lot-specific values) acquired at the tube's instrument
settings give a standard curve: log10(molecules) against log10(median
fluorescence) of each bead peak on the CD125 detector. A cell's CD125
fluorescence read through that curve is the PE molecules it carries, which
for a 1:1 PE:antibody conjugate is its antibodies bound (ABC).

Nothing here can fail a sample: a bead file, lot or curve that cannot be
trusted *withholds* the density with a one-line reason. (This module is not
``density.py``: that one holds the histogram helpers the gates are placed with.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .density import peaks as local_maxima
from .density import robust_sd, smoothed_histogram
from .errors import InputError

if TYPE_CHECKING:
    from .fcs import Channel, FCSData
    from .model import TubeAnalysis
    from .settings import Beads, Settings

MEASURED, WITHHELD, NOT_MEASURED = "measured", "withheld", "not_measured"
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
    from .panel import map_panel

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

def acquisition_problem(tube_fcs: FCSData, bead_fcs: FCSData, channel: str) -> str | None:
    """Why the beads do not calibrate this tube (other instrument, other detector voltage), or None.

    A keyword missing from either file cannot be compared and is not held against the beads.
    """
    for key, what in (("$CYT", "instrument"), ("$CYTSN", "instrument serial")):
        tube, beads = _keyword(tube_fcs, key), _keyword(bead_fcs, key)
        if tube and beads and tube != beads:
            return f"beads from another {what} ({key} {beads!r}, the tube's {tube!r})"
    tube, beads = _voltage(tube_fcs, channel), _voltage(bead_fcs, channel)
    if tube and beads and _number(tube) != _number(beads):
        return f"beads at another {channel} detector setting ($PnV {beads}, the tube's {tube})"
    return None


def _keyword(fcs, key):
    return str(fcs.keywords.get(key, "")).strip() or None


def _voltage(fcs, channel):
    index = next((c.index for c in fcs.channels if c.name == channel), None)
    return None if index is None else _keyword(fcs, f"$P{index}V")


def _number(text):
    try:
        return float(text)
    except ValueError:
        return text


# -- the CD125 fluorochrome ----------------------------------------------------------------------

def cd125_fluorochrome(recorded: str | None, channel: Channel) -> str | None:
    """The CD125 dye: the recorded reagent's, else read from the channel's $PnS / $PnN, else None."""
    from .panel import channel_name_words, fluorochromes, normalise, tokens

    if recorded:
        return recorded
    dyes = fluorochromes()
    for text in (channel.stain, channel_name_words(channel.name)):
        words = [w for w in tokens(text) if normalise(w) not in ("cd125", "il5ra", "il5r")]
        for start in range(len(words)):  # the longest run of words that names a dye: PE-Cy7 over PE
            for stop in range(len(words), start, -1):
                if normalise("".join(words[start:stop])) in dyes:
                    return "-".join(words[start:stop])
    return None


def same_dye(a: str, b: str) -> bool:
    """Whether two fluorochrome names are the same dye, spelling aside."""
    from .panel import normalise

    return normalise(a) == normalise(b)


# -- density per sample --------------------------------------------------------------------------

def abc(raw: np.ndarray, curve: Curve) -> np.ndarray:
    """Antibodies bound per cell of raw CD125 values through ``curve`` (0 for a value <= 0)."""
    raw = np.asarray(raw, dtype=float)
    out = np.zeros_like(raw)
    positive = raw > 0
    out[positive] = 10.0 ** (curve.intercept + curve.slope * np.log10(raw[positive]))
    return out


def summary(raw: np.ndarray | None, curve: Curve) -> dict[str, float] | None:
    """Median and quartiles of ABC of ``raw`` CD125 values (the curve is monotone: quantiles carry over)."""
    if raw is None or raw.size == 0:
        return None
    q1, median, q3 = abc(np.quantile(raw, [0.25, 0.5, 0.75]), curve)
    return {"events": int(raw.size), "median": round(float(median), 1),
            "q1": round(float(q1), 1), "q3": round(float(q3), 1)}


@dataclass
class Density:
    """A sample's density record (``result.json``'s ``density``) and the curve behind it."""

    record: dict
    curve: Curve | None = None
    lot: Lot | None = None


def measure(stained: TubeAnalysis, control: TubeAnalysis | None, beads_path: str | Path, lot_path: str | Path | None,
            settings: Settings, fluorochrome: str | None) -> Density:
    """CD125 ABC of the stained tube's CD125+ blasts and blasts, and the control's blasts.

    :param fluorochrome: the CD125 reagent's dye as recorded (None: read it from the channel)
    :return: ``Density``; a lot, bead file or curve that cannot be trusted withholds it with its reason
    """
    from .fcs import read_fcs
    from .fileio import sha256_file

    channel = stained.markers["CD125"]
    record = {"status": WITHHELD, "reason": None, "unit": "ABC",
              "beads": {"path": str(beads_path), "sha256": None}, "lot": None, "curve": None}
    density = Density(record)
    try:
        density.lot = read_lot(lot_path) if lot_path else settings_lot(settings.beads)
        if density.lot is None:
            return _withheld(density, "no bead lot: name a lot file in the sheet's bead_lot column "
                                      "or set analysis.beads.molecules")
        record["lot"] = density.lot.to_json()
        dye = cd125_fluorochrome(fluorochrome, next(c for c in stained.fcs.channels if c.name == channel))
        if dye is None or not same_dye(dye, density.lot.dye):
            record["status"] = NOT_MEASURED
            record["reason"] = (f"not measured: beads are {density.lot.dye}, CD125 is on {dye}" if dye else
                                f"not measured: beads are {density.lot.dye}, CD125's fluorochrome is not "
                                "recorded (panel.cd125_reagent.fluorochrome)")
            return density
        try:
            bead_fcs = read_fcs(beads_path)
        except InputError:
            record["beads"]["sha256"] = sha256_file(beads_path)  # a file that cannot be read is named too
            raise
        record["beads"]["sha256"] = bead_fcs.sha256  # the reader hashed the bytes it read
        problem = acquisition_problem(stained.fcs, bead_fcs, channel)
        if problem:
            return _withheld(density, problem)
        density.curve = standard_curve(bead_fcs, channel, density.lot, settings)
    except InputError as exc:
        return _withheld(density, str(exc))
    record["curve"] = density.curve.to_json(density.lot)
    if density.curve.reason:
        return _withheld(density, density.curve.reason)
    record["status"] = MEASURED
    record.update(_per_population(stained, control, density.curve))
    return density


def _withheld(density, reason):
    density.record["status"] = WITHHELD
    density.record["reason"] = f"density withheld: {reason}"
    return density


def _per_population(stained, control, curve):
    def raw(tube, step):
        if tube is None:
            return None
        detector = tube.markers["CD125"]  # the control's own name for the same detector
        return tube.scales[detector].inverse(tube.column(detector)[tube.step(step).mask])

    values = {"cd125_pos_blasts": summary(raw(stained, "cd125_pos"), curve),
              "blasts": summary(raw(stained, "blasts"), curve),
              "control_blasts": summary(raw(control, "blasts"), curve)}
    positive, background = values["cd125_pos_blasts"], values["control_blasts"]
    # Autofluorescence, compensation residue and nonspecific binding read as molecules too; the
    # control tube's blasts carry them without the antibody, so the difference is the antibody's own.
    values["cd125_pos_blasts_specific"] = (round(positive["median"] - background["median"], 1)
                                           if positive and background else None)
    return values


# -- tables --------------------------------------------------------------------------------------

SCREENING_COLUMNS = ("density", "density_reason", "abc_cd125_pos_median", "abc_cd125_pos_q1",
                     "abc_cd125_pos_q3", "abc_cd125_pos_specific", "abc_blasts_median", "abc_control_blasts_median", "bead_lot",
                     "bead_slope", "bead_intercept", "bead_r2")


def screening_columns(record: dict[str, Any] | None) -> dict[str, Any]:
    """The screening table's density columns of a result's ``density`` (all None without beads)."""
    record = record or {}
    curve, lot = record.get("curve") or {}, record.get("lot") or {}

    def abc_of(population, key="median"):
        return (record.get(population) or {}).get(key)

    values = (record.get("status"), record.get("reason"), abc_of("cd125_pos_blasts"),
              abc_of("cd125_pos_blasts", "q1"), abc_of("cd125_pos_blasts", "q3"),
              record.get("cd125_pos_blasts_specific"), abc_of("blasts"),
              abc_of("control_blasts"), lot.get("name"), curve.get("slope"), curve.get("intercept"),
              curve.get("r2"))
    return dict(zip(SCREENING_COLUMNS, values))


def density_lines(record: dict[str, Any] | None) -> list[str]:
    """The density as plain lines for the review page and the sign-out record: values, lot, fit."""
    if not record:
        return []
    lines = []
    if record["status"] == MEASURED:
        for key, label in (("cd125_pos_blasts", "CD125+ blasts"), ("blasts", "All blasts"),
                           ("control_blasts", "Control tube blasts (background)")):
            value = record.get(key)
            lines.append(f"{label}: median {value['median']:,.0f} ABC (IQR {value['q1']:,.0f}–{value['q3']:,.0f}), "
                         f"{value['events']:,} events" if value else f"{label}: none")
        if record.get("cd125_pos_blasts_specific") is not None:
            lines.append(f"CD125+ blasts less the control's background: {record['cd125_pos_blasts_specific']:,.0f} ABC")
    else:
        lines.append(record["reason"])
    lot, curve = record.get("lot"), record.get("curve")
    if lot:
        values = ", ".join(f"{m:g}" for m in lot["molecules"])
        lines.append(f"Beads: {lot['dye']} lot {lot['name'] or '(unnamed)'}, {values} molecules per bead "
                     f"(lot from {lot['source']})")
    if curve and curve.get("slope") is not None:
        lines.append(f"Fit: log10(ABC) = {curve['slope']:.4f} × log10(CD125) + {curve['intercept']:.4f}, "
                     f"R² {curve['r2']:.5f}, {len(curve['peaks'])} peaks")
    lines.append(f"Bead file: {record['beads']['path']}")
    return lines
