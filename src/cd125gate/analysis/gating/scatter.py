"""The gates under time QC that need no named population: margins, cells, singlets, viable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating import gates
from cd125gate.analysis.gating.gatestep import Proposal, dim, gate_step, guarded, thinned
from cd125gate.analysis.numeric import density
from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.analysis.model import GateStep, TubeAnalysis
    from cd125gate.settings import Settings


def margins(tube: TubeAnalysis, settings: Settings) -> GateStep:
    """Events below the detector ceiling on scatter and every fluorescence channel.

    Every gate below, and the mixture fit of the populations, sees only these
    events: a clipped value (61 % of a marrow piled on the SSC-A ceiling by a
    high gain) never becomes a population or a density peak. Whether the events
    removed here matter is asked after gating (``cd125gate.analysis.gating.ceiling``); only too
    few events left to gate fail the tube (``require_below_ceiling``).
    """
    fraction = settings.qc.margin_fraction
    used = [tube.markers[m] for m in ("FSC-A", "FSC-H", "SSC-A") if m in tube.markers]
    used += [c for c in tube.channels if tube.scales[c].kind != "linear"]
    ranges = {c.name: c.range for c in tube.fcs.channels}
    dims = [dim(tube, c, raw=True, hi=fraction * ranges[c]) for c in used]
    gate = gates.RectangleGate("margins", dims)
    return gate_step(tube, "margins", "time_qc", gate, tube.markers["FSC-A"], tube.markers["SSC-A"],
                     f"below {fraction:.1%} of each detector's range")


def require_below_ceiling(tube: TubeAnalysis, settings: Settings) -> None:
    """Raise InputError when the margins gate (a step of ``tube``) left fewer than ``gating.min_events``.

    Only when time QC left enough: then the detector ceiling, not time QC, took them.
    """
    count = tube.step("margins").count
    rows = np.flatnonzero(tube.step("time_qc").mask)
    if count < settings.gating.min_events <= rows.size:
        from cd125gate.analysis.gating.ceiling import shares

        raise InputError(tube.fcs.path, f"margins: only {count:,} of {rows.size:,} events lie below the "
                                        f"detector ceiling ({shares(tube, rows)} at the ceiling), fewer than "
                                        f"the {settings.gating.min_events:,} needed to gate")


def debris_cut(log_fsc: np.ndarray, min_gap: float = 0.45, below: tuple[float, float] = (0.7, 0.35),
               min_share: float = 0.03) -> float | None:
    """log10 FSC-A of the cut between debris and the smallest cells, or None without debris.

    Density peaks (at least ``min_share`` of the highest) lying ``min_gap``
    decades or more under the highest peak are debris; the others are cells
    (lymphocytes, blasts and granulocytes lie within ~0.3 decades of each
    other, so the valley between agranular cells and granulocytes is never
    taken for the debris valley). The cut is the emptiest place between the
    highest debris peak and the lowest cell peak; without a debris peak, the
    emptiest place ``below`` decades under the lowest cell peak, so a few per
    cent of debris spread thin over a decade is still cut away.
    """
    lo, hi = np.percentile(log_fsc, [0.5, 99.5])
    if hi - lo < min_gap:
        return None
    centres, dens = density.smoothed_histogram(log_fsc, lo, hi)
    tops = density.peaks(dens, min_height=min_share * dens.max())
    if tops.size == 0:
        return None
    highest = centres[tops[np.argmax(dens[tops])]]
    debris = tops[centres[tops] <= highest - min_gap]
    cells = tops[centres[tops] > highest - min_gap]
    if debris.size:
        a, b = debris[-1], cells[0]
        return float(centres[a + int(np.argmin(dens[a:b + 1]))])
    first = centres[cells[0]]
    window = np.flatnonzero((centres >= first - below[0]) & (centres <= first - below[1]))
    if window.size == 0 or dens[window].max() == 0:
        return None  # nothing below the cells
    return float(centres[window[int(np.argmin(dens[window]))]])


def cells(tube: TubeAnalysis) -> GateStep:
    """Debris out: FSC-A above the valley under the smallest cells (``debris_cut``)."""
    fsc, ssc = tube.markers["FSC-A"], tube.markers["SSC-A"]
    x = thinned(guarded(tube, "cells", fsc, tube.step("margins").mask, "margins"))
    cut = debris_cut(np.log10(np.clip(x, 10.0, None)))
    if cut is None:
        cut, note = 0.0, "no debris population below the cells: FSC-A >= 0"
    else:
        cut, note = 10.0 ** cut, "FSC-A: least dense place between debris and the smallest cells"
    gate = gates.RectangleGate("cells", [dim(tube, fsc, lo=cut)])
    return gate_step(tube, "cells", "margins", gate, fsc, ssc, note)


def singlets(tube: TubeAnalysis, settings: Settings) -> Proposal:
    """FSC-A/FSC-H ratio within a few robust SDs of the median: doublets sit above the diagonal."""
    fsc_a, fsc_h = tube.markers["FSC-A"], tube.markers.get("FSC-H")
    if fsc_h is None:
        gate = gates.RectangleGate("singlets", [dim(tube, fsc_a, lo=float(tube.column(fsc_a).min()))])
        step = gate_step(tube, "singlets", "cells", gate, fsc_a, None, "not applied: no FSC-H channel")
        return Proposal((step,), ("no FSC-H channel: doublets not removed",), "singlets")
    parent = tube.step("cells").mask
    a = guarded(tube, "singlets", fsc_a, parent, "cells")
    h = guarded(tube, "singlets", fsc_h, parent, "cells")
    if not (h > 0).any():
        raise InputError(tube.fcs.path, "singlets: FSC-H is not positive on any cell")
    a, h = thinned(a), thinned(h)
    ratio = a[h > 0] / h[h > 0]
    k = settings.gating.singlet_ratio_mad
    centre, spread = np.median(ratio), density.robust_sd(ratio)
    lo, hi = max(centre - k * spread, 1e-3), centre + k * spread
    top = 2.0 * float(tube.fcs.channels[tube.fcs.channel_names().index(fsc_a)].range)
    vertices = [(0.0, 0.0), (top, top / hi), (top, top / lo)]
    gate = gates.PolygonGate("singlets", [dim(tube, fsc_a), dim(tube, fsc_h)], vertices)
    step = gate_step(tube, "singlets", "cells", gate, fsc_a, fsc_h, f"FSC-A/FSC-H between {lo:.2f} and {hi:.2f}")
    return Proposal((step,), (), "singlets")


def viable(tube: TubeAnalysis) -> Proposal:
    """Viability dye negative: below the valley between live and dead cells (``parent``: the next gate's)."""
    ch = tube.markers.get("viability")
    if ch is None:
        return Proposal((), ("no viability dye in the panel: dead cells not removed",), "singlets")
    x = thinned(guarded(tube, "viable", ch, tube.step("singlets").mask, "singlets"))
    lo, hi = np.percentile(x, [0.1, 99.9])
    peak = density.mode(x, lo, hi)
    # A small dead population beside a large live one (eosinophilia) still makes its own peak.
    cut = density.deepest_valley(x, lo, hi, above=peak, min_height=0.0005)
    note = "valley between live and dead cells"
    if cut is None:
        # No separate dead population: stay well above the live cells' spread.
        left = x[x <= peak]
        cut = peak + 6.0 * max(np.sqrt(np.mean((left - peak) ** 2)), 1e-3)
        note = "no dead population found: live peak + 6 SD"
    gate = gates.RectangleGate("viable", [dim(tube, ch, hi=cut)])
    step = gate_step(tube, "viable", "singlets", gate, ch, tube.markers["SSC-A"], note)
    return Proposal((step,), (), "viable")
