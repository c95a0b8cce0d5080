"""The gates that find the blasts on the backbone: leukocytes, blast region, lymphocytes, blast markers, myeloid.

Each is drawn around the named populations (``populations``) and returned as
its step; ``hierarchy`` puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating import gates, populations
from cd125gate.analysis.gating.gatestep import FAR, Proposal, dim, gate_step, guarded
from cd125gate.analysis.gating.geometry import clip, plane, population_polygon, separating_line, to_display
from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.analysis.gating.populations import Populations
    from cd125gate.analysis.model import GateStep, Threshold, TubeAnalysis
    from cd125gate.settings import Gating, Settings


def leukocytes(tube: TubeAnalysis, parent: str) -> GateStep:
    """CD45+: above the dimmest named leukocyte population's CD45 (its mean - 4 SD)."""
    ch = tube.markers["CD45"]
    pops = tube.populations
    j = pops.feature("CD45")
    named = [i for i, label in enumerate(pops.labels) if label in populations.LEUKOCYTES]
    if named:
        edges = [(pops.means[i, j] - 4.0 * math.sqrt(pops.covariances[i, j, j]), pops.labels[i])
                 for i in named]
        low, which = min(edges)
        cut = low / pops.scale[j]
        note = f"CD45 above the dimmest leukocyte population ({which}) - 4 SD"
    else:
        x = guarded(tube, "leukocytes", ch, tube.step(parent).mask, parent)
        cut = float(np.percentile(x, 0.1))
        note = "no leukocyte population named: every event above the 0.1th CD45 percentile"
    gate = gates.RectangleGate("leukocytes", [dim(tube, ch, lo=cut)])
    return gate_step(tube, "leukocytes", parent, gate, ch, tube.markers["SSC-A"], note)



def blast_region_polygon(pops: Populations, gating_settings: Gating) -> tuple[np.ndarray, str]:
    """The blast region in (CD45 decades, log10 SSC-A) and how it was found.

    Around the named blast components (their ellipses at ``region_radius``),
    cut where the lymphocytes' CD45 and the monocytes' and granulocytes' SSC-A
    take over (``boundary``). Without a named blast population: the expected
    CD45-dim / SSC-low zone relative to the lymphocytes, so that the few
    events there are counted (and the checks say no blast population was found).
    """
    blasts = pops.components("blasts")
    if not blasts:
        ref45, refssc = pops.reference_mean("CD45"), pops.reference_mean("SSC")
        levels = gating_settings.levels
        left, right = ref45 + levels["CD45"][0], ref45 - gating_settings.checks.cd45_margin
        top = refssc + levels["SSC"][0]
        polygon = np.array([(left, refssc - 1.5), (right, refssc - 1.5), (right, top), (left, top)])
        return polygon, "no blast population named: the expected CD45-dim/SSC-low zone"
    polygon = population_polygon(pops, blasts, gating_settings.region_radius)
    notes = [(f"blast population ({len(blasts)} component(s), {100 * pops.share('blasts'):.1f}% of fitted "
              f"events) at Mahalanobis {gating_settings.region_radius:g}")]
    own = plane(pops, blasts)
    cut_off, spared = [], []
    by_markers = any(m in pops.features for m in gating_settings.checks.blast_markers[:2])
    for name in NEIGHBOURS:
        lines = [separating_line(own, plane(pops, [i]), gating_settings.region_odds) for i in pops.components(name)]
        # One population, judged as one: the mixture splits lymphocytes into T and B cells (HLA-DR),
        # and each line alone may take few blasts while together they take a CD45-brighter clone.
        if name in MARKER_SEPARATED and by_markers and _share_beyond(pops, blasts, lines) > MAX_BLASTS_CUT:
            spared.append(name)  # the blast-marker gate tells them apart; CD45 would cut blasts
            continue
        for line in lines:
            clipped = clip(polygon, *line)
            if len(clipped) < 3:
                continue  # the neighbour would leave nothing: the checks judge what is there
            if clipped.shape != polygon.shape or not np.allclose(clipped, polygon):
                cut_off.append(name)
            polygon = clipped
    if cut_off:
        notes.append(f"cut where blasts are < {gating_settings.region_odds:g}x as likely as "
                     + ", ".join(sorted(set(cut_off))))
    if spared:
        notes.append(f"not cut against {', '.join(sorted(set(spared)))} (it would take over "
                     f"{MAX_BLASTS_CUT:.0%} of the blasts): the blast-marker gate separates them")
    return polygon, "; ".join(notes)


# Neighbours that carry no blast marker (CD34, CD117): where the region's cut against them would
# take many blasts (CD45-bright blasts beside lymphocytes), the blast-marker gate excludes them instead.
MARKER_SEPARATED = ("lymphocytes",)
MAX_BLASTS_CUT = 0.05


def _share_beyond(pops: Populations, comps: Sequence[int], lines: list[tuple[np.ndarray, float]],
                  axes: tuple[str, str] = ("CD45", "SSC")) -> float:
    """Share of the fitted events of ``comps`` on the far side of any of ``lines`` (normal . p > offset)."""
    if pops.x is None or not lines:
        return 0.0
    points = pops.x[np.isin(pops.assigned, comps)][:, [pops.feature(a) for a in axes]]
    if not len(points):
        return 0.0
    beyond = np.zeros(len(points), dtype=bool)
    for normal, offset in lines:
        beyond |= points @ normal > offset
    return float(np.mean(beyond))


# Populations whose CD45/SSC neighbourhood the blast region must not take.
NEIGHBOURS = ("lymphocytes", "monocytes", "neutrophils", "eosinophils", "debris", "immature_granulocytes",
              "nrbc")


def blast_region(tube: TubeAnalysis, settings: Settings) -> GateStep:
    """CD45-dim / SSC-low polygon around the named blast population (``blast_region_polygon``)."""
    cd45, ssc = tube.markers["CD45"], tube.markers["SSC-A"]
    pops = tube.populations
    if pops.reference is None:
        raise InputError(tube.fcs.path, "blast_region: no lymphocyte population to place CD45 against")
    polygon, note = blast_region_polygon(pops, settings.gating)
    gate = gates.PolygonGate("blast_region", [dim(tube, cd45), dim(tube, ssc)], to_display(pops, polygon))
    return gate_step(tube, "blast_region", "leukocytes", gate, cd45, ssc, note)



def lymphocytes(tube: TubeAnalysis, settings: Settings) -> GateStep:
    """The named lymphocytes (CD45-bright, SSC-low): the internal CD125-negative reference."""
    cd45, ssc = tube.markers["CD45"], tube.markers["SSC-A"]
    pops = tube.populations
    comps = pops.components("lymphocytes")
    polygon = population_polygon(pops, comps, settings.gating.region_radius)
    blasts = pops.components("blasts")
    note = f"lymphocyte population at Mahalanobis {settings.gating.region_radius:g}"
    if blasts:
        odds = settings.gating.region_odds
        clipped = clip(polygon, *separating_line(plane(pops, comps), plane(pops, blasts), odds))
        if len(clipped) >= 3:  # else the blasts sit on the lymphocytes: the CD45 check says so
            polygon = clipped
            note += f"; cut where lymphocytes are < {odds:g}x as likely as blasts"
    gate = gates.PolygonGate("lymphocytes", [dim(tube, cd45), dim(tube, ssc)], to_display(pops, polygon))
    return gate_step(tube, "lymphocytes", "leukocytes", gate, cd45, ssc, note)



def positive_cut(pops: Populations, marker: str, above: float) -> float:
    """Display units at which ``marker`` counts as positive: ``above`` decades over the lymphocytes' centre."""
    return (pops.reference_mean(marker) + above) / pops.scale[pops.feature(marker)]


def either_positive(tube: TubeAnalysis, name: str, parent: str, markers: Sequence[str], settings: Settings,
                    note: str) -> GateStep | None:
    """An L-shaped gate on two markers: events positive for either (the double-negative corner out).

    With one of the markers in the panel, a rectangle on it; with neither, no gate (None).
    """
    present = [m for m in markers if m in tube.markers][:2]
    if not present:
        return None
    pops, above = tube.populations, settings.gating.checks.positive_above
    cuts = [min(positive_cut(pops, m, above), FAR) for m in present]
    channels = [tube.markers[m] for m in present]
    shown = " or ".join(f"{m} >= {c:.3f}" for m, c in zip(present, cuts))
    if len(present) == 1:
        gate = gates.RectangleGate(name, [dim(tube, channels[0], lo=cuts[0])])
        return gate_step(tube, name, parent, gate, channels[0], tube.markers["SSC-A"],
                         f"{note}: {shown} (display units)")
    (cx, cy) = cuts
    vertices = [(-FAR, cy), (cx, cy), (cx, -FAR), (FAR, -FAR), (FAR, FAR), (-FAR, FAR)]
    gate = gates.PolygonGate(name, [dim(tube, channels[0]), dim(tube, channels[1])], vertices)
    return gate_step(tube, name, parent, gate, channels[0], channels[1], f"{note}: {shown} (display units)")


def blast_markers(tube: TubeAnalysis, settings: Settings) -> Proposal:
    """Blast-marker positive: the region's events positive for CD34 or CD117 (a cytometrist's blast gate).

    The first two of ``checks.blast_markers`` the panel has (CD34 and CD117 by default; HLA-DR when
    one of them is missing), each positive ``checks.positive_above`` decades over the lymphocytes.
    Nucleated red cells, monocytes, plasmacytoid dendritic cells, immature granulocytes and
    lymphocytes lack both and stay out; blasts negative for both are left to the checks (REVIEW).
    """
    step = either_positive(tube, "blast_markers", "blast_region", settings.gating.checks.blast_markers, settings,
                           "positive for a blast marker")
    if step is None:
        return Proposal((), ("no blast marker in the panel: blasts gated on CD45/SSC only",), "blast_region")
    return Proposal((step,), (), "blast_markers")


def myeloid(tube: TubeAnalysis, settings: Settings, parent: str) -> Proposal:
    """Myeloid blasts: CD117 or CD33 positive, so that CD34+ hematogones (B-cell precursors, CD117- and
    CD33-) and CD117-dim nucleated red cells (CD33-) leave the blast gate."""
    if "CD33" not in tube.markers:  # CD117 alone would drop CD34+ CD117-low blasts
        return Proposal((), (), parent)
    step = either_positive(tube, "myeloid", parent, ("CD117", "CD33"), settings,
                           "myeloid (hematogones and nucleated red cells out)")
    return Proposal((step,), (), "myeloid")



def cd125_positive(tube: TubeAnalysis, threshold: Threshold) -> GateStep:
    """Blasts at or above the CD125 threshold (transformed units)."""
    ch = tube.markers["CD125"]
    gate = gates.RectangleGate("cd125_pos", [dim(tube, ch, lo=threshold.value)])
    return gate_step(tube, "cd125_pos", "blasts", gate, ch, None, threshold.description)
