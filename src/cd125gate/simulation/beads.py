"""Simulated calibration bead tubes (QuantiBRITE-PE-like) and the CD125 molecules behind simulated tubes.

The simulator's CD125 abundance is in PE-A detector units; at the simulated
instrument's PE-A voltage one PE molecule gives ``UNITS_PER_MOLECULE`` units,
so a cell's true antibodies bound (ABC, one PE per antibody) is its abundance
divided by that. A bead tube is measured by the same instrument model
(spillover, photon and electronic noise, ceiling) as the cell tubes, with
known PE molecules per bead level, so a standard curve made from it must
read the cells' molecules back. Options break the beads the ways bead QC must
catch: a level missing, two levels merged, the top level saturated, another
instrument or another PE-A voltage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cd125gate.io.fileio import atomic_write_bytes, atomic_write_text
from cd125gate.simulation.instrument import (
    CD125,
    CHANNELS,
    DETECTORS,
    DURATION,
    PANEL,
    RANGE,
    TIME_RANGE,
    TIMESTEP,
    SimulatedTube,
    instrument_keywords,
    measure,
    spillover_matrix,
    tube_bytes,
)

# A QuantiBRITE-PE-like lot: PE molecules per bead of its four levels, dimmest first.
LOT = {"lot": "SIM-QB-0001", "dye": "PE", "molecules": [474.0, 5359.0, 23843.0, 62336.0]}
UNITS_PER_MOLECULE = 0.5   # PE-A units per PE molecule at the simulated PE-A voltage
BEAD_SD = 0.03             # log10 spread of PE molecules within a level


@dataclass
class BeadSpec:
    """One bead tube; the defaults are a good tube of the simulated instrument."""

    name: str = "beads"
    n_events: int = 8000
    molecules: tuple[float, ...] = tuple(LOT["molecules"])  # true PE molecules per level
    levels: tuple[int, ...] | None = None   # levels in the tube (1-based); None: all
    gain: float = 1.0             # detector gain relative to the tubes' (saturates the top level at ~9)
    instrument: str | None = None  # $CYT, when not the tubes' instrument
    voltage: str | None = None    # PE-A $PnV, when not the tubes'
    doublet_fraction: float = 0.05


def molecules(abundance: np.ndarray) -> np.ndarray:
    """True PE molecules (ABC) of a simulated CD125 abundance (PE-A units)."""
    return np.asarray(abundance, dtype=float) / UNITS_PER_MOLECULE


def abc_truth(tube: SimulatedTube) -> dict[str, float | None]:
    """The true CD125 ABC medians of a simulated stained tube's blasts and CD125+ blasts."""
    blasts = tube.truth_blasts()
    positive = blasts & (tube.labels == "blast_cd125pos")

    def median(mask):
        return round(float(np.median(tube.cd125_molecules[mask])), 1) if mask.any() else None

    return {"cd125_pos_blasts_median": median(positive), "blasts_median": median(blasts),
            "units_per_molecule": UNITS_PER_MOLECULE}


def simulate_beads(spec: BeadSpec, seed: int) -> SimulatedTube:
    """A bead tube of ``spec`` as a ``SimulatedTube`` (labels: ``level1``.., ``doublet``)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 125_019]))
    levels = spec.levels or tuple(range(1, len(spec.molecules) + 1))
    n_doublets = int(round(spec.n_events * spec.doublet_fraction))
    level = rng.choice(np.array(levels), spec.n_events - n_doublets)
    pe = _bead_pe(rng, level, spec)
    pair = rng.choice(np.array(levels), (n_doublets, 2))
    pe = np.concatenate([pe, _bead_pe(rng, pair[:, 0], spec) + _bead_pe(rng, pair[:, 1], spec)])
    singles = spec.n_events - n_doublets
    fsc = 50_000 * 10 ** (0.012 * rng.standard_normal(spec.n_events))
    fsc[singles:] *= 2.0
    ssc = 9_000 * 10 ** (0.025 * rng.standard_normal(spec.n_events))
    ssc[singles:] *= 2.0
    height = np.where(np.arange(spec.n_events) < singles, 0.8, 0.88) * fsc
    abundance = np.zeros((spec.n_events, len(PANEL)))
    abundance[:, CD125] = pe
    cells = {"fsc_a": fsc, "fsc_h": height * rng.normal(1.0, 0.01, spec.n_events), "ssc_a": ssc,
             "ssc_h": ssc * 0.85, "abundance": abundance, "af": np.zeros(spec.n_events)}
    order = rng.permutation(spec.n_events)
    cells = {k: v[order] for k, v in cells.items()}
    labels = np.array([f"level{v}" for v in level] + ["doublet"] * n_doublets, dtype="<U16")[order]
    t = np.sort(rng.uniform(0, DURATION, spec.n_events))
    events = np.column_stack([measure(rng, cells), t / TIMESTEP]).astype(np.float32)
    channels = list(CHANNELS)
    ranges = [RANGE] * (len(channels) - 1) + [TIME_RANGE]
    keywords = {"$CYT": spec.instrument or "cd125gate simulator", "$DATE": "01-JAN-2025",
                "$BTIM": "08:50:00", "$TIMESTEP": str(TIMESTEP), "$SRC": spec.name,
                "TUBE NAME": "PE calibration beads", "CD125GATE_SIMULATED": "1", "CD125GATE_SEED": str(seed),
                **instrument_keywords(channels)}
    if spec.voltage is not None:
        keywords[f"$P{channels.index('PE-A') + 1}V"] = spec.voltage
    return SimulatedTube(events, channels, [None] * len(channels), ranges, spillover_matrix(),
                         list(DETECTORS), labels, keywords)


def _bead_pe(rng, level, spec):
    """PE-A units of beads of the given levels (1-based): molecules through the detector's gain."""
    mol = np.asarray(spec.molecules, dtype=float)[np.asarray(level) - 1]
    return mol * 10 ** (BEAD_SD * rng.standard_normal(mol.size)) * UNITS_PER_MOLECULE * spec.gain


def lot_text(lot: dict | None = None) -> str:
    """A bead lot file (YAML) for ``lot`` (default: the simulated lot)."""
    lot = lot or LOT
    values = ", ".join(f"{m:g}" for m in lot["molecules"])
    return f"lot: {lot['lot']}\ndye: {lot['dye']}\nmolecules: [{values}]\n"


def write_beads(outdir: Path | str, spec: BeadSpec | None = None, seed: int = 1,
                lot: dict | None = None) -> dict[str, str]:
    """Write the bead tube and its lot file into ``outdir``; return their file names."""
    spec = spec or BeadSpec()
    outdir = Path(outdir)
    files = {"beads": f"{spec.name}.fcs", "bead_lot": f"{spec.name}_lot.yaml"}
    atomic_write_bytes(outdir / files["beads"], tube_bytes(simulate_beads(spec, seed), "fcs31"))
    atomic_write_text(outdir / files["bead_lot"], lot_text(lot))
    return files
