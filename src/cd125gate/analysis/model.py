"""Values that flow between the analysis, the plots, the report and the results.

Everything here is a plain dataclass: the analysis returns them, nothing keeps
hidden state. Events are kept once per tube, compensated and transformed
(``TubeAnalysis.data``); every gate keeps a boolean mask over those events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cd125gate.analysis.gating.gates import Gate
    from cd125gate.analysis.gating.populations import Populations
    from cd125gate.analysis.transforms import Scale
    from cd125gate.io.fcs import FCSData

# Gate names, in hierarchy order. Plots and reports rely on these names.
GATE_ORDER = (
    "time_qc",      # acquisition QC: time bins with flow-rate / signal anomalies removed
    "margins",      # events below the detector ceiling on every channel
    "cells",        # debris out (FSC-A / SSC-A)
    "singlets",     # FSC-A vs FSC-H diagonal
    "viable",       # viability dye negative (absent when the panel has no viability dye)
    "leukocytes",   # CD45+
    "blast_region", # CD45-dim / SSC-low
    "blast_markers",  # CD34 or CD117 positive (blast markers)
    "myeloid",      # CD117 or CD33 positive (hematogones and nucleated red cells out)
    "intact",       # without a viability dye: a lower-FSC (dead) population out
    "blasts",       # minus basophils (CD123-bright, negative for the blasts' marker)
    "cd125_pos",    # blasts above the CD125 threshold
)


@dataclass(frozen=True)
class GateStep:
    """One gate of the hierarchy, applied to one tube.

    Built once by ``gatestep.gate_step`` and replaced, not changed, when its
    gate is applied again (``boundaries.reapplied``) or its note is rewritten.
    """

    name: str               # one of GATE_ORDER, or an annotation population ("basophils", ...)
    parent: str | None      # name of the parent step (None for the root)
    gate: Gate              # the gate (cd125gate.analysis.gating.gates.*, FlowKit's meaning) that defines it
    x: str                  # channel ($PnN) on the x axis of its plot
    y: str | None           # channel on the y axis, None for a 1-D gate
    mask: np.ndarray        # bool over all events of the tube: in this gate and all its ancestors
    parent_count: int
    note: str = ""          # how the gate was found, for the reviewer
    exclusion: bool = False  # True for populations removed from the parent (e.g. basophils)

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def percent_of_parent(self) -> float:
        return 100.0 * self.count / self.parent_count if self.parent_count else 0.0


@dataclass(frozen=True)
class TimeQC:
    """Acquisition QC over time bins."""

    bin_edges: np.ndarray   # Time-channel values, len = bins + 1
    rate: np.ndarray        # events per second in each bin
    signal: dict[str, np.ndarray]  # channel -> mean transformed signal per bin
    kept: np.ndarray        # bool per bin
    removed_fraction: float  # share of events in removed bins


@dataclass
class TubeAnalysis:
    """One tube, read, compensated, transformed and gated.

    ``hierarchy.find_gates`` assembles its steps, flags, time QC and populations
    from what the gate proposers return; ``boundaries.settle_in_place`` then
    rewrites the rows of ``data`` near a gate boundary and replaces the steps.
    """

    role: str               # "stained" | "control"
    fcs: FCSData            # raw events as read
    channels: list[str]     # $PnN of the columns of `data`
    markers: dict[str, str]  # marker name (e.g. "CD125") -> $PnN
    data: np.ndarray        # compensated, transformed events (n_events, n_channels)
    scales: dict[str, Scale]  # $PnN -> Scale
    steps: list[GateStep]   # in hierarchy order (annotation populations included)
    time_qc: TimeQC | None = None
    compensation: str = "none"   # "file" | "override" (a matrix applied) | "precompensated" | "none"
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    populations: Populations | None = None   # the named backbone populations

    def step(self, name: str) -> GateStep:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def parent_mask(self, step: GateStep) -> np.ndarray:
        """Events of ``step``'s parent gate (every event for a top-level gate)."""
        if step.parent is None:
            return np.ones(len(self.data), dtype=bool)
        return self.step(step.parent).mask

    def column(self, channel: str) -> np.ndarray:
        return self.data[:, self.channels.index(channel)]


@dataclass(frozen=True)
class Threshold:
    """The CD125 cut-off and where it came from."""

    method: str             # "control_percentile" | "internal_negative" | "fixed"
    value: float            # in transformed units of the CD125 channel
    value_raw: float        # in compensated raw units
    percentile: float | None
    reference_events: int   # events the cut-off was computed from (0 for fixed)
    description: str        # one line for the reviewer
    reference: str | None = None  # internal_negative: "blast_peak" | "blast_valley" | "lymphocytes" | "negative_populations"
