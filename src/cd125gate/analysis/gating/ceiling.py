"""Events at the detector ceiling: shown where they do not matter, a doubt where they do (issue 17).

A detector at its ceiling has lost the event's true value. The ``margins``
gate removes every event at or above ``qc.margin_fraction`` of ``$PnR`` on
FSC-A, FSC-H, SSC-A and every fluorescence detector, so the gates, the
mixture fit and the counts below it never see a clipped value. Whether that
loss matters depends on *which* events sit there, not on how many:

- a high SSC gain can put most granulocytes of a marrow at the SSC ceiling
  while the SSC-low blasts lie far below it: the blasts are all counted, and
  the share at the ceiling is a *flag* for the reviewer (``FLAG_SHARE``);
- blasts at the ceiling (a CD125 voltage that clips bright blasts, an SSC gain
  reaching the blasts) are missing from the count or, in the control tube,
  from the cut-off: more than ``BLAST_SHARE`` of the blasts withholds the
  answer (REVIEW; a reviewer can re-gate with a wider margins gate, or ask
  for the tube to be acquired again);
- so many events at the ceiling that fewer than ``gating.min_events`` are left
  to gate: ``scatter.require_below_ceiling`` fails the tube (FAILED).

Which ceiling events are blasts is asked of the gates themselves: each of them
is put through every gate under ``margins`` with its clipped value
(``lost_to_ceiling``). A clipped value is a lower bound of the true one, and
blasts are SSC-low and CD45-dim, so an event whose clipped SSC-A or CD45 already
lies above the blast gate lies above it in truth too; on a channel the blast
gate does not draw on (CD125, CD33, FSC-A) the other values place it. Only when
the blast gate itself reaches the SSC-A ceiling can it not tell blasts there
from granulocytes: the blasts' own SSC-A distribution below the ceiling then
says how many lie beyond it (``ssc_tail``).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating import gates
from cd125gate.analysis.gating.gatestep import frame

if TYPE_CHECKING:
    from cd125gate.analysis.model import TubeAnalysis

# A larger share of a tube's events at one channel's ceiling is shown as a flag: a well-set
# gain leaves the ~0.5-2 % of aggregates and clumps there, not more.
FLAG_SHARE = 0.05
# More than this share of the blasts at a ceiling withholds the answer (REVIEW): the count
# (or, in the control tube, the CD125 cut-off) leaves out a part of the blasts as large as
# the gating's own error, whose CD125 may differ from the rest.
BLAST_SHARE = 0.05
# A channel holding this share of the blasts at its ceiling is shown even when few events sit
# there: under it, the blasts lost are within the count's own noise.
BLAST_FLAG_SHARE = 0.01
# A gating failure of a tube with more than this share at the ceiling names the ceiling.
FAILURE_NOTE_SHARE = 0.5
# Gated blasts needed to read their SSC-A tail beyond the ceiling (``ssc_tail``); with fewer,
# every ceiling event the blast gate would hold counts as a blast.
MIN_BLASTS_FOR_TAIL = 50
_NORMAL = NormalDist()


def ceilings(tube: TubeAnalysis) -> list[tuple[str, float]]:
    """(channel, ceiling) the margins gate judges, in its order: the values it removes start there."""
    return [(d.id, float(d.max)) for d in tube.step("margins").gate.dimensions if d.max is not None]


def at_ceiling(tube: TubeAnalysis, rows: np.ndarray) -> dict[str, np.ndarray]:
    """channel -> bool per event of ``rows``: at or above that channel's ceiling (the margins gate's values)."""
    columns = frame(tube.step("margins").gate, tube, rows)
    return {channel: columns[channel] >= top for channel, top in ceilings(tube)}


def lost_to_ceiling(tube: TubeAnalysis, rows: np.ndarray, last: str = "blasts") -> np.ndarray:
    """Which events of ``rows`` pass every gate under ``margins`` down to ``last``, at their clipped values.

    The gates are evaluated on those events only, with the tube's fast
    transform (``boundaries.settle_in_place`` is not needed for a share).
    """
    done = {}
    for step in tube.steps:
        if step.name == "margins":
            member = tube.step("time_qc").mask[rows]
        elif step.parent is None:  # time QC and its removed windows
            member = step.mask[rows]
        elif step.parent not in done:
            continue
        elif isinstance(step.gate, gates.BooleanGate):
            member = step.gate.apply(done) & done[step.parent]
        else:
            member = step.gate.apply(frame(step.gate, tube, rows)) & done[step.parent]
        done[step.name] = member
        if step.name == last:
            return member
    return np.zeros(len(rows), dtype=bool)


def findings(tube: TubeAnalysis) -> tuple[list[str], list[str]]:
    """(reasons, flags) about the events of ``tube`` at the detector ceiling.

    A flag for every channel holding at least ``FLAG_SHARE`` of the events that
    passed time QC, or ``BLAST_FLAG_SHARE`` of the blasts, at its ceiling; a
    reason when more than ``BLAST_SHARE`` of the blasts (gated blasts plus
    those at a ceiling) sit at a ceiling.
    """
    kept = tube.step("time_qc").mask
    total = int(kept.sum())
    rows = np.flatnonzero(kept & ~tube.step("margins").mask)
    if total == 0 or rows.size == 0:
        return [], []
    top = dict(ceilings(tube))
    high = at_ceiling(tube, rows)
    held = lost_to_ceiling(tube, rows)
    lost = {channel: int((on & held).sum()) for channel, on in high.items()}
    estimated = _estimate_ssc(tube, top, high, held, lost)
    lost_total = (int(held.sum()) if estimated is None
                  else lost[estimated] + int((held & ~high[estimated]).sum()))
    blasts = tube.step("blasts").count + lost_total
    names = {ch: marker for marker, ch in tube.markers.items()}
    reasons, flags, where = [], [], []
    for channel in top:
        share, hit = high[channel].sum() / total, lost[channel]
        label = _label(channel, names.get(channel))
        about = "about " if channel == estimated else ""
        if hit:
            where.append(f"{label}: {about}{hit:,} events")
        if share >= FLAG_SHARE or (hit and hit >= BLAST_FLAG_SHARE * blasts):
            among = (f"{about}{hit:,} blasts among them ({hit / blasts:.1%} of blasts)" if hit
                     else "no blasts among them")
            flags.append(f"{tube.role} tube: {label}: {share:.1%} of events at the detector ceiling "
                         f"(>= {top[channel]:,.0f}), removed by the margins gate; {among}")
    if blasts and lost_total / blasts > BLAST_SHARE:
        what = ("the CD125+ fraction is not measured on them" if tube.role == "stained"
                else "the CD125 cut-off is set without them")
        reasons.append(f"{tube.role} tube: {lost_total / blasts:.1%} of blasts at the detector ceiling "
                       f"({'; '.join(where)}), removed by the margins gate: {what} (more than "
                       f"{BLAST_SHARE:.0%}); lower the gain or re-gate with a wider margins gate")
    return reasons, flags


def _estimate_ssc(tube: TubeAnalysis, top: dict[str, float], high: dict[str, np.ndarray], held: np.ndarray,
                  lost: dict[str, int]) -> str | None:
    """Replace the blasts lost at the SSC-A ceiling by their estimate (``ssc_tail``) where it is lower.

    The blast gate is bounded above on SSC-A: once it reaches the ceiling it
    cannot tell blasts there from the granulocytes piled on the same clipped
    value (at 8x the SSC gain it held 35 % "blasts" at the ceiling where 0.2 %
    were), so the blasts lost there are what the gated blasts' own SSC-A tail
    puts beyond it. Events at the SSC-A ceiling then count there only.
    Returns the SSC-A channel when it did, else None.
    """
    ssc = tube.markers.get("SSC-A")
    if ssc not in high or not lost[ssc]:
        return None
    gated = tube.column(ssc)[tube.step("blasts").mask]
    if gated.size < MIN_BLASTS_FOR_TAIL:
        return None
    p = ssc_tail(np.log10(np.clip(gated, 1.0, None)), math.log10(top[ssc]))
    tail = None if p is None else int(round(gated.size * p / (1.0 - p)))
    if tail is None or tail >= lost[ssc]:
        return None
    lost[ssc] = tail
    for channel, on in high.items():
        if channel != ssc:
            lost[channel] = int((on & held & ~high[ssc]).sum())
    return ssc


def ssc_tail(log_ssc: np.ndarray, top: float, lo: float = 0.1, hi: float = 0.4) -> float | None:
    """Share of a blast population beyond log10 SSC-A ``top``, from its events below (``log_ssc``).

    Taken as log-normal and cut at ``top``, the blasts' ``lo`` and ``hi``
    quantiles below the cut are the ``lo * (1 - p)`` and ``hi * (1 - p)``
    quantiles of the whole population when a share p lies beyond it: p is the
    smallest share (in steps of 0.1 %) whose normal through those two quantiles
    puts no more than p beyond ``top`` (0.95 at most). The low quantiles stay
    clear of the cut, which biases a normal fitted to all the events below it
    (the mixture's blast component put 5 % beyond it where 17 % were). None
    when the two quantiles coincide.
    """
    a, b = np.quantile(log_ssc, [lo, hi])
    if not b > a:
        return None
    for p in np.arange(0.0, 0.95, 0.001):
        za, zb = _NORMAL.inv_cdf(lo * (1 - p)), _NORMAL.inv_cdf(hi * (1 - p))
        sd = (b - a) / (zb - za)
        if 1.0 - _NORMAL.cdf((top - (a - sd * za)) / sd) <= p:
            return float(p)
    return 0.95


def shares(tube: TubeAnalysis, rows: np.ndarray) -> str:
    """"CH 97.1%, CH 0.5%": the share of ``rows`` at each channel's ceiling, largest first (three at most)."""
    if len(rows) == 0:
        return ""
    found = sorted(((float(np.mean(on)), ch) for ch, on in at_ceiling(tube, rows).items()), reverse=True)
    return ", ".join(f"{ch} {share:.1%}" for share, ch in found[:3] if share > 0)


def failure_note(tube: TubeAnalysis | None) -> str:
    """What to add to a gating failure of a tube mostly at the detector ceiling ("" otherwise).

    A gate that finds nothing to place itself on, or a threshold without
    blasts, is then the ceiling's doing: the reason says so.
    """
    if tube is None or tube.step("margins") is None:
        return ""
    kept = tube.step("time_qc").mask
    if not kept.any():
        return ""
    share = 1.0 - tube.step("margins").count / int(kept.sum())
    if share < FAILURE_NOTE_SHARE:
        return ""
    return f" ({share:.1%} of events at the detector ceiling: {shares(tube, np.flatnonzero(kept))})"


def _label(channel: str, marker: str | None) -> str:
    return channel if marker is None or marker == channel else f"{marker} ({channel})"
