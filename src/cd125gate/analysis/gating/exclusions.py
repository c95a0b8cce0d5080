"""What leaves the blast gate last: basophils (CD123-bright, blast-marker negative) and, without a
viability dye, a lower-FSC population of dead blasts."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating import gates
from cd125gate.analysis.gating.gatestep import FAR, Proposal, dim, gate_step
from cd125gate.analysis.gating.geometry import moments
from cd125gate.analysis.numeric import density
from cd125gate.analysis.numeric.density import boundary

if TYPE_CHECKING:
    from cd125gate.analysis.gating.populations import Populations
    from cd125gate.analysis.model import TubeAnalysis
    from cd125gate.settings import Settings


# Markers basophils lack and blasts often carry: the basophil exclusion is drawn against the
# one of them that best tells this tube's blasts from its basophils.
BASOPHIL_NEGATIVE = ("HLA-DR", "CD34", "CD117")


def separating_marker(pops: Populations) -> str:
    """The marker of BASOPHIL_NEGATIVE on which the named blasts lie furthest above the basophils.

    Separation in SD units (blast mean - basophil mean over their pooled SD);
    without named basophils, the blasts' height over the lymphocyte reference.
    HLA-DR on ties and when no marker is present on the blasts.
    """
    blasts, basos = pops.components("blasts"), pops.components("basophils")
    best, best_score = "HLA-DR", -np.inf
    for marker in BASOPHIL_NEGATIVE:
        if marker not in pops.features or not blasts:
            continue
        b = moments(pops, blasts, pops.feature(marker))
        if basos:
            s = moments(pops, basos, pops.feature(marker))
            score = (b[0] - s[0]) / math.hypot(b[1], s[1])
        else:
            score = (b[0] - pops.reference_mean(marker)) / b[1]
        if score > best_score + 1e-9:
            best, best_score = marker, score
    return best


def basophil_cuts(pops: Populations, marker: str = "HLA-DR") -> tuple[float, float, str]:
    """(CD123 cut, ``marker`` cut, note) in decades: basophils are CD123 >= the first and ``marker`` < the second.

    With a named basophil population: when ``marker`` separates blasts from
    basophils (3 SD apart), the ``marker`` cut lies between them and the CD123
    cut low under the basophils (3 SD), so CD123-high blasts stay in by their
    ``marker``; otherwise the CD123 cut lies where the basophils take over
    from the blasts, at any ``marker``. Without named basophils: above the
    blasts' CD123 (their mean + 4 SD), excluding only ``marker``-negative
    events when the blasts carry ``marker``.
    """
    j123, jm = pops.feature("CD123"), pops.feature(marker)
    blasts, basos = pops.components("blasts"), pops.components("basophils")
    if not blasts:
        # Nothing to tell apart: the population check sends the sample to REVIEW; excluding only
        # named basophils keeps whatever lies in the expected zone countable (not a FAILED).
        if not basos:
            return np.inf, np.inf, "no blast or basophil population named: nothing excluded"
        s123 = moments(pops, basos, j123)
        bright = pops.reference_mean("CD123") + 1.5  # the 'bright' edge: a broad component stays above it
        return (max(s123[0] - 3 * s123[1], bright), np.inf,
                f"no blast population: named basophils' CD123 at any {marker}")
    b123, bm = moments(pops, blasts, j123), moments(pops, blasts, jm)
    if basos:
        s123, sm = moments(pops, basos, j123), moments(pops, basos, jm)
        if bm[0] - 3 * bm[1] > sm[0] + 3 * sm[1]:
            return (min(s123[0] - 3 * s123[1], boundary(b123, s123) if s123[0] > b123[0] else s123[0]),
                    boundary(sm, bm), f"named basophils: CD123 under them, {marker} between them and blasts")
        if s123[0] > b123[0] + 2 * b123[1]:
            return boundary(b123, s123), np.inf, "named basophils: CD123 where they take over from blasts"
        # Blasts as CD123-bright as the basophils and negative like them: no cut on this plane
        # separates them. Keep the blasts; the basophil check judges what is left.
        return (b123[0] + 4 * b123[1], np.inf,
                f"named basophils not separable from blasts on CD123/{marker}: above the blasts' CD123")
    cut = b123[0] + 4 * b123[1]
    if bm[0] - 4 * bm[1] > pops.reference_mean(marker):
        return cut, bm[0] - 4 * bm[1], f"no basophils named: CD123 above the blasts', {marker} below them"
    return cut, np.inf, f"no basophils named: CD123 above the blasts', at any {marker}"



def intact(tube: TubeAnalysis, settings: Settings, parent: str, min_separation: float = 2.5,
           min_share: float = 0.02) -> Proposal:
    """Without a viability dye: the marker-positive blasts minus a lower-FSC population (dead blasts).

    Dead cells shrink (lower FSC-A) and bind every antibody, so without a viability dye the dead
    blasts pass every marker gate. A two-component mixture on log10 FSC-A of the ``parent`` events
    finds them when a lower-FSC population is separated from the rest (``min_separation`` pooled
    SDs, at least ``min_share`` of the events); the cut is where the two become equally likely.
    With a viability dye, or without such a population, no gate.
    """
    if "viability" in tube.markers:
        return Proposal((), (), parent)
    fsc, ssc = tube.markers["FSC-A"], tube.markers["SSC-A"]
    rows = tube.step(parent).mask
    x = np.log10(np.clip(tube.column(fsc)[rows], 10.0, None))
    if x.size < 200:
        return Proposal((), (), parent)
    low = density.lower_peak(x, settings.gating.seed, min_separation=min_separation, min_weight=min_share)
    if low is None:
        return Proposal((), (), parent)
    high = x[x > low[0] + 3 * low[1]]
    cut = boundary(low, (float(np.median(high)), density.robust_sd(high), 1.0 - low[2]))
    gate = gates.RectangleGate("intact", [dim(tube, fsc, lo=10.0 ** cut)])
    step = gate_step(tube, "intact", parent, gate, fsc, ssc,
                     f"no viability dye: a lower-FSC population ({100 * low[2]:.1f}%, dead blasts) cut at "
                     f"FSC-A {10.0 ** cut:,.0f}")
    return Proposal((step,), (), "intact")


def blasts(tube: TubeAnalysis, parent: str = "blast_region") -> Proposal:
    """The ``parent`` gate's events minus basophils (CD123-bright, and negative for HLA-DR, CD34 or CD117).

    Basophils share the blasts' CD45-dim / SSC-low place and carry CD125, so
    leaving them in would raise the CD125+ fraction. The exclusion is drawn on
    CD123 against the marker that best tells this tube's blasts from its
    basophils (``separating_marker``): HLA-DR usually, CD34 or CD117 for
    HLA-DR-negative blasts. CD34 is not required: some blasts lack it.
    """
    cd123, hladr = tube.markers.get("CD123"), tube.markers.get("HLA-DR")
    region = tube.step("blast_region")
    if cd123 is None or hladr is None:
        by_markers = parent != "blast_region"  # basophils lack CD34 and CD117: the marker gate left them out
        flags = () if by_markers else ("CD123 or HLA-DR missing: basophils not excluded from blasts",)
        note = ("no basophil exclusion (CD123 or HLA-DR missing); basophils lack CD34 and CD117"
                if by_markers else "no backbone refinement")
        gate = gates.RectangleGate("blasts", [dim(tube, tube.markers["CD45"], lo=-FAR)])
        return Proposal((gate_step(tube, "blasts", parent, gate, region.x, region.y, note),), flags, "blasts")
    pops = tube.populations
    marker = separating_marker(pops)
    other = tube.markers[marker]
    c123, cm, how = basophil_cuts(pops, marker)
    c123 = FAR if not np.isfinite(c123) else min(c123 / pops.scale[pops.feature("CD123")], FAR)
    cm = FAR if not np.isfinite(cm) else min(cm / pops.scale[pops.feature(marker)], FAR)
    box = gates.RectangleGate("basophils", [dim(tube, other, hi=cm), dim(tube, cd123, lo=c123)])
    basophils = gate_step(tube, "basophils", parent, box, other, cd123,
                          f"CD123-bright, {marker}-negative ({how})", exclusion=True)
    vertices = [(-FAR, -FAR), (FAR, -FAR), (FAR, FAR), (cm, FAR), (cm, c123), (-FAR, c123)]
    gate = gates.PolygonGate("blasts", [dim(tube, other), dim(tube, cd123)], vertices)
    marker_note = f" with {marker} < {cm:.3f}" if cm < FAR else f" at any {marker}"
    kept = gate_step(tube, "blasts", parent, gate, other, cd123,
                     f"basophils excluded: CD123 >= {c123:.3f}{marker_note} (display units)")
    return Proposal((basophils, kept), (), "blasts")
