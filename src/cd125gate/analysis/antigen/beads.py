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

from cd125gate.analysis.antigen.bead_curve import Curve, Lot, read_lot, settings_lot, standard_curve
from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.analysis.model import TubeAnalysis
    from cd125gate.io.fcs import Channel, FCSData
    from cd125gate.settings import Settings

MEASURED, WITHHELD, NOT_MEASURED = "measured", "withheld", "not_measured"


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
    from cd125gate.analysis.panel import channel_name_words, fluorochromes, normalise, tokens

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
    from cd125gate.analysis.panel import normalise

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
    from cd125gate.io.fcs import read_fcs
    from cd125gate.io.fileio import sha256_file

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
