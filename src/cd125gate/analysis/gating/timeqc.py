"""Acquisition QC: time bins whose flow rate or mean signal departs from the rest are removed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating import gates
from cd125gate.analysis.gating.gatestep import dim, gate_step
from cd125gate.analysis.model import GateStep, TimeQC
from cd125gate.analysis.numeric import density

if TYPE_CHECKING:
    from cd125gate.analysis.model import TubeAnalysis
    from cd125gate.settings import Settings


def time_qc(tube: TubeAnalysis, settings: Settings) -> tuple[TimeQC | None, tuple[GateStep, ...]]:
    """(the QC, its steps): time bins whose event rate or mean signal departs from the rest removed.

    In the spirit of flowAI / PeacoQC: the acquisition is cut into equal time
    bins of about ``bin_events`` events; a bin is removed when its event rate
    or the mean of a channel in it lies more than the configured number of
    robust standard deviations from the median bin. Removed bins become
    rectangle gates on Time (``time_anomaly_N``), and the ``time_qc`` step keeps
    the events outside all of them. The QC is None when it was not applied.
    """
    time_ch = tube.markers.get("Time")
    if time_ch is None or not settings.qc.time_qc:
        return None, _no_time_qc(tube, "no Time channel" if time_ch is None else "time QC disabled")
    t = tube.column(time_ch)
    if not t.max() > t.min():  # one instant (or no finite time): no flow rate to judge
        return None, _no_time_qc(tube, "Time does not advance")
    n_bins = int(np.clip(len(t) // settings.qc.bin_events, 10, 500))
    edges = np.linspace(t.min(), t.max(), n_bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)  # the last event belongs to the last bin
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    bad = _outliers(counts.astype(float), np.sqrt(max(np.median(counts), 1.0)),
                    settings.qc.max_rate_deviation)
    signal = {}
    per_bin = max(np.median(counts), 1.0)
    for marker in ("FSC-A", "SSC-A", "CD45", "CD125"):
        ch = tube.markers.get(marker)
        if ch is None:
            continue
        # Bin means, not medians: a median falling between two populations jumps
        # with small changes of composition, while a mean's noise is sd/sqrt(n).
        x = tube.column(ch)
        means = np.bincount(which, weights=x, minlength=n_bins) / np.maximum(counts, 1)
        bad |= _outliers(means, np.std(x) / np.sqrt(per_bin), settings.qc.max_signal_deviation)
        signal[ch] = means
    seconds = edges[1] - edges[0]  # the reader already scaled Time by $TIMESTEP
    qc = TimeQC(edges, counts / seconds, signal, ~bad, float(counts[bad].sum() / len(t)))
    return qc, _time_gates(tube, time_ch, edges, bad)


def _no_time_qc(tube: TubeAnalysis, why: str) -> tuple[GateStep, ...]:
    first = tube.markers["FSC-A"]
    gate = gates.RectangleGate("time_qc", [dim(tube, first, lo=float(tube.column(first).min()))])
    return (gate_step(tube, "time_qc", None, gate, first, None, f"not applied: {why}", among=()),)


def _outliers(values: np.ndarray, floor: float, limit: float) -> np.ndarray:
    """Bins more than ``limit`` robust SDs from the median (SD never below ``floor``)."""
    spread = max(density.robust_sd(values), floor, 1e-12)
    return np.abs(values - np.median(values)) > limit * spread


def _time_gates(tube: TubeAnalysis, time_ch: str, edges: np.ndarray, bad: np.ndarray) -> tuple[GateStep, ...]:
    """One rectangle gate per run of removed bins, and time_qc = NOT any of them."""
    runs, start = [], None
    for i, is_bad in enumerate(list(bad) + [False]):
        if is_bad and start is None:
            start = i
        if not is_bad and start is not None:
            runs.append((edges[start], edges[i]))
            start = None
    steps, refs = [], []
    for k, (lo, hi) in enumerate(runs, 1):
        name = f"time_anomaly_{k}"
        gate = gates.RectangleGate(name, [dim(tube, time_ch, lo=lo, hi=hi)])
        steps.append(gate_step(tube, name, None, gate, time_ch, None, "removed: rate or signal anomaly",
                               exclusion=True, among=()))
        refs.append({"ref": name, "path": ("root",), "complement": True})
    if refs:
        # Gating-ML's "and" takes two or more references, "not" exactly one.
        if len(refs) == 1:
            gate = gates.BooleanGate("time_qc", "not", [dict(refs[0], complement=False)])
        else:
            gate = gates.BooleanGate("time_qc", "and", refs)
        note = f"{len(runs)} time window(s) removed"
    else:
        gate = gates.RectangleGate("time_qc", [dim(tube, time_ch, lo=edges[0])])
        note = "no anomaly found"
    steps.append(gate_step(tube, "time_qc", None, gate, time_ch, None, note, among=steps))
    return tuple(steps)
