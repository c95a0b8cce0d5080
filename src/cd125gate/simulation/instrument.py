"""The simulated instrument: its panel, spillover and noise, and the tubes it writes.

Each event's true dye abundances go through the instrument: dyes spill into
neighbouring detectors through the spillover matrix written into the file,
autofluorescence adds to every detector, photon counting spreads a signal by
~sqrt(signal), electronic noise adds a constant spread, and detectors clip at
their range. Shared by the cell tubes (``specimen``) and the bead
tubes (``beads``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cd125gate.io.fcs_write import fcs_bytes

RANGE = 262144.0
CEILING = RANGE - 1  # BD instruments write 262143 for a saturated detector
TIMESTEP = 0.01      # seconds per Time-channel unit
DURATION = 60.0      # seconds of acquisition
SCATTER = ("FSC-A", "FSC-H", "SSC-A", "SSC-H")
# (detector $PnN, marker $PnS), in the order of the spillover matrix.
PANEL = (
    ("FITC-A", "CD34"),
    ("PE-A", "CD125"),
    ("PerCP-Cy5-5-A", "CD117"),
    ("PE-Cy7-A", "CD123"),
    ("APC-A", "CD33"),
    ("APC-H7-A", "HLA-DR"),
    ("BV421-A", "Viability"),
    ("BV510-A", "CD45"),
)
DETECTORS = tuple(d for d, _ in PANEL)
CHANNELS = (*SCATTER, *DETECTORS, "Time")   # the columns of every simulated tube, in order
TIME_RANGE = float(np.ceil(DURATION / TIMESTEP * 1.1))  # $PnR of the Time channel
SERIAL = "SIM-0001"
VOLTAGES = {"FITC-A": "495", "PE-A": "480", "PerCP-Cy5-5-A": "560", "PE-Cy7-A": "620", "APC-A": "610",
            "APC-H7-A": "560", "BV421-A": "410", "BV510-A": "440"}
MARKERS = tuple(m for _, m in PANEL)
CD125 = MARKERS.index("CD125")
VIABILITY = MARKERS.index("Viability")
ANTIBODIES = [i for i in range(len(PANEL)) if i != VIABILITY]

# Spillover (dye -> other detector), typical of a 3-laser BD instrument:
# FITC into PE is the big one, tandems leak into their neighbours.
SPILL = {
    ("FITC-A", "PE-A"): 0.20, ("FITC-A", "PerCP-Cy5-5-A"): 0.03, ("FITC-A", "PE-Cy7-A"): 0.005,
    ("PE-A", "FITC-A"): 0.01, ("PE-A", "PerCP-Cy5-5-A"): 0.12, ("PE-A", "PE-Cy7-A"): 0.03,
    ("PE-A", "APC-A"): 0.005,
    ("PerCP-Cy5-5-A", "PE-Cy7-A"): 0.15, ("PerCP-Cy5-5-A", "APC-A"): 0.05,
    ("PerCP-Cy5-5-A", "APC-H7-A"): 0.04,
    ("PE-Cy7-A", "PerCP-Cy5-5-A"): 0.02, ("PE-Cy7-A", "APC-H7-A"): 0.04, ("PE-Cy7-A", "APC-A"): 0.01,
    ("APC-A", "APC-H7-A"): 0.10, ("APC-A", "PerCP-Cy5-5-A"): 0.03, ("APC-A", "PE-Cy7-A"): 0.01,
    ("APC-H7-A", "PE-Cy7-A"): 0.05, ("APC-H7-A", "APC-A"): 0.02,
    ("BV421-A", "BV510-A"): 0.10, ("BV421-A", "FITC-A"): 0.02,
    ("BV510-A", "FITC-A"): 0.05, ("BV510-A", "PE-A"): 0.02, ("BV510-A", "BV421-A"): 0.005,
}
# Autofluorescence seen by each detector per unit of a cell's autofluorescence:
# strongest in the violet and blue detectors, weak in the red ones.
AF_SPECTRUM = np.array([1.0, 0.5, 0.3, 0.15, 0.08, 0.06, 1.4, 1.2])
PHOTON_K = 2.0        # photon-counting variance per unit of signal
ELECTRONIC_SD = 25.0  # detector noise, independent of signal
SCATTER_SD = 300.0
# Population labels of the blasts (two clones, CD125-positive or not); the truth counts them.
BLAST_LABELS = ("blast_cd125pos", "blast_cd125neg", "blast2_cd125pos", "blast2_cd125neg")
POSITIVE_BLASTS = ("blast_cd125pos", "blast2_cd125pos")



def instrument_keywords(channels: list[str]) -> dict[str, str]:
    """$CYTSN and the $PnV of every detector: what a bead tube is checked against."""
    keywords = {"$CYTSN": SERIAL}
    for i, name in enumerate(channels, start=1):
        if name in VOLTAGES:
            keywords[f"$P{i}V"] = VOLTAGES[name]
    return keywords

@dataclass
class SimulatedTube:
    """One simulated tube: raw (uncompensated) events and the truth per event."""

    events: np.ndarray        # float32 (n_events, n_channels)
    channels: list[str]       # $PnN
    stains: list[str | None]  # $PnS (None where unstained)
    ranges: list[float]       # $PnR
    spillover: np.ndarray     # (n_fluor, n_fluor), row = dye, column = detector
    fluor_channels: list[str]  # $PnN of the spillover rows/columns
    labels: np.ndarray        # str population label per event
    keywords: dict[str, str]  # further TEXT keywords
    cd125_molecules: np.ndarray | None = None  # true CD125 antibodies bound per event

    def column(self, channel: str) -> np.ndarray:
        """Raw values of one channel."""
        return self.events[:, self.channels.index(channel)]

    def compensated(self, channel: str) -> np.ndarray:
        """Compensated values of one fluorescence channel (events @ inverse(spillover))."""
        idx = [self.channels.index(c) for c in self.fluor_channels]
        comp = self.events[:, idx].astype(float) @ np.linalg.inv(self.spillover)
        return comp[:, self.fluor_channels.index(channel)]

    def at_ceiling(self) -> np.ndarray:
        """Events at or above 99.9% of $PnR in any channel but Time."""
        limits = 0.999 * np.asarray(self.ranges)
        check = [i for i, c in enumerate(self.channels) if c != "Time"]
        return (self.events[:, check] >= limits[check]).any(axis=1)

    def truth_blasts(self) -> np.ndarray:
        """Viable singlet blasts not at the ceiling (bool per event)."""
        return np.isin(self.labels, BLAST_LABELS) & ~self.at_ceiling()


def spillover_matrix(detectors: tuple[str, ...] = DETECTORS) -> np.ndarray:
    """The simulated instrument's spillover matrix over ``detectors`` (row = dye, column = detector)."""
    matrix = np.eye(len(detectors))
    for i, src in enumerate(detectors):
        for j, dst in enumerate(detectors):
            matrix[i, j] = SPILL.get((src, dst), matrix[i, j])
    return matrix


def measure(rng: np.random.Generator, cells: dict[str, np.ndarray], scatter_gain: tuple[float, float] = (1.0, 1.0),
            digitisation: float = 1.0) -> np.ndarray:
    """Detector values: spillover, autofluorescence, photon and electronic noise.

    Scatter detectors see the cells through their gains (FSC, SSC); every detector clips at its
    ceiling, and ``digitisation`` writes the same signal at a finer resolution (20-bit data: x4,
    with $PnR x4; see ``specimen.digitisation_factor``), as newer instruments do.
    """
    signal = cells["abundance"] @ spillover_matrix() + cells["af"][:, None] * AF_SPECTRUM
    spread = np.sqrt(PHOTON_K * np.clip(signal, 0.0, None))
    fluor = signal + spread * rng.standard_normal(signal.shape)
    fluor += ELECTRONIC_SD * rng.standard_normal(signal.shape)
    scatter = np.column_stack([cells[k] for k in ("fsc_a", "fsc_h", "ssc_a", "ssc_h")])
    if tuple(scatter_gain) != (1.0, 1.0):
        scatter *= np.repeat(np.asarray(scatter_gain, dtype=float), 2)
    scatter += SCATTER_SD * rng.standard_normal(scatter.shape)
    return np.minimum(np.column_stack([scatter, fluor]), CEILING) * digitisation


FORMATS = {
    "fcs31": {"version": "3.1", "byte_order": "little", "spill_keyword": "$SPILLOVER"},
    "diva30": {"version": "3.0", "byte_order": "big", "spill_keyword": "SPILL"},
}


def tube_bytes(tube: SimulatedTube, fmt: str) -> bytes:
    """The FCS file bytes of a simulated tube in format ``fmt`` ("fcs31" or "diva30")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fcs_bytes(tube.events, tube.channels, stains=tube.stains, ranges=tube.ranges,
                     keywords=tube.keywords, spillover=tube.spillover,
                     spill_channels=tube.fluor_channels, **FORMATS[fmt])

