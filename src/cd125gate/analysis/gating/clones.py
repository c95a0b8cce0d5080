"""Blast clones: every blast-like population the mixture found, grouped into clones and counted.

A leukemia can carry two blast clones that differ on a backbone marker (one
CD34-negative, one HLA-DR-negative, one CD45 brighter) and on CD125. The
criterion counts every blast, so each clone must be inside the blast gate, and
the reviewer must see when the clones disagree on CD125.

- ``blast_like``: the components that look like blasts, whatever the phenotype
  table named them: named blasts, and SSC-low, FSC-normal components positive
  for CD34 or CD117 that ``populations.is_blast`` accepts but the table took
  for basophils or left unknown.
- ``group``: components of different backbone levels whose means differ by at
  least ``CLONE_GAP`` decades and ``CLONE_SD`` pooled SDs on a backbone marker are
  different clones; the mixture often splits one population into a few close
  components, which stay one clone.
- Components the ``intact`` gate cut off as a lower-FSC population (dead blasts
  where the panel has no viability dye) are not clones.
- Unnamed populations in the blasts' CD45-dim/SSC-low place that the gate leaves
  out (a clone without blast markers) are a failed check too.
- ``clone_table``: per clone, its phenotype, the share of its fitted events the
  blast gate holds (a clone mostly outside is a failed check: REVIEW), and its
  gated blasts and CD125+ fraction; clones that disagree on CD125 are flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.gating.populations import BACKBONE, feature_matrix, is_blast

if TYPE_CHECKING:
    from cd125gate.analysis.gating.populations import Populations
    from cd125gate.analysis.model import Threshold, TubeAnalysis
    from cd125gate.settings import GatingChecks

CLONE_GAP = 0.25    # decades on one backbone marker ...
CLONE_SD = 2.0      # ... and pooled SDs, between two clones
# Beside the largest, a clone must hold this share of the blast-like fitted events, and this many,
# to be judged (smaller: a component's tail).
MIN_CLONE_SHARE = 0.05
MIN_CLONE_EVENTS = 50
# Clones disagree when one is at least this far above the criterion's fraction and another this far below.
DISAGREE = 0.15
POSITIVE = ("pos", "bright")


def blast_like(pops: Populations, checks: GatingChecks) -> list[int]:
    """Indices of the components that look like blasts (see the module's docstring)."""
    out = []
    for i, (label, levels) in enumerate(zip(pops.labels, pops.levels)):
        if label == "blasts":
            out.append(i)
        elif label in ("basophils", "unknown") and _blast_scatter(levels) \
                and any(levels.get(m) in POSITIVE for m in ("CD34", "CD117")) \
                and is_blast(levels, checks.blast_markers):
            out.append(i)
    return out


def _blast_scatter(levels: dict[str, str]) -> bool:
    return levels.get("SSC") == "low" and levels.get("FSC") != "low"


def _dead(tube: TubeAnalysis, pops: Populations, comp: int) -> bool:
    """Whether most of a component lies below the ``intact`` gate's FSC-A cut (dead blasts, no viability dye)."""
    step = next((s for s in tube.steps if s.name == "intact"), None)
    if step is None:
        return False
    rows = pops.rows[pops.assigned == comp]
    fsc = tube.column(tube.markers["FSC-A"])[rows]
    return bool(rows.size) and float(np.mean(fsc < step.gate.dimensions[0].min)) > 0.5


def group(pops: Populations, comps: Sequence[int]) -> list[list[int]]:
    """Clones: lists of components, single-linked when no backbone marker tells them apart."""
    markers = [pops.features.index(m) for m in BACKBONE if m in pops.features]
    clones = []
    for i in comps:
        joined = [c for c in clones if any(_same(pops, i, j, markers) for j in c)]
        merged = [i] + [j for c in joined for j in c]
        clones = [c for c in clones if c not in joined] + [sorted(merged)]
    return sorted(clones, key=lambda c: -float(pops.weights[c].sum()))


def _same(pops: Populations, i: int, j: int, markers: list[int]) -> bool:
    if pops.levels[i] == pops.levels[j]:
        return True  # the same phenotype: the mixture split one population
    for f in markers:
        gap = abs(pops.means[i, f] - pops.means[j, f])
        sd = np.sqrt((pops.covariances[i, f, f] + pops.covariances[j, f, f]) / 2.0)
        if gap >= CLONE_GAP and gap >= CLONE_SD * sd:
            return False
    return True


def phenotype(pops: Populations, clone: Sequence[int]) -> str:
    """The clone's backbone levels (of its largest component), e.g. 'CD45 dim, CD34 pos, HLA-DR neg'."""
    main = max(clone, key=lambda i: pops.weights[i])
    return ", ".join(f"{m} {pops.levels[main][m]}" for m in BACKBONE if m in pops.levels[main])


def assign(tube: TubeAnalysis, rows: np.ndarray, comps: Sequence[int]) -> np.ndarray:
    """The component of ``comps`` each event of ``rows`` most likely belongs to (backbone space)."""
    from cd125gate.analysis.numeric.mixture import Mixture

    pops = tube.populations
    x = feature_matrix(tube, rows, pops.features, pops.channels, pops.scale)
    own = Mixture(pops.weights[comps], pops.means[comps], pops.covariances[comps], 0.0, True)
    return np.asarray(comps)[own.predict(x)]


def clone_table(tube: TubeAnalysis, cut: Threshold,
                checks: GatingChecks) -> tuple[tuple[dict, ...], list[str], list[str]]:
    """(clones, REVIEW reasons, flags) of the stained tube's blast clones against the CD125 cut-off.

    :param cut: the CD125 Threshold
    :param checks: the config's ``gating.checks``
    """
    pops = tube.populations
    if pops is None or pops.reference is None:
        return (), [], []
    comps = [c for c in blast_like(pops, checks) if not _dead(tube, pops, c)]
    if not comps:
        return (), [], []
    total = np.isin(pops.assigned, comps).sum()
    least = max(MIN_CLONE_SHARE * total, MIN_CLONE_EVENTS)
    found = group(pops, comps)
    clones = found[:1] + [c for c in found[1:] if np.isin(pops.assigned, c).sum() >= least]
    gated = np.flatnonzero(tube.step("blasts").mask)
    # Every gated blast goes to one of the clones listed (the smallest ones' events included).
    owner = assign(tube, gated, [i for c in clones for i in c]) if gated.size and len(clones) > 1 else None
    cd125 = tube.column(tube.markers["CD125"])
    table, reasons = [], _unexplained(tube, pops, total, checks.min_blast_coverage)
    for k, clone in enumerate(clones, 1):
        fitted = pops.rows[np.isin(pops.assigned, clone)]
        coverage = float(tube.step("blasts").mask[fitted].mean())
        mine = gated if owner is None else gated[np.isin(owner, clone)]
        positive = int((cd125[mine] >= cut.value).sum())
        entry = {"clone": k, "phenotype": phenotype(pops, clone), "fitted_events": int(fitted.size),
                 "coverage": coverage, "blast_events": int(mine.size), "cd125_pos_events": positive,
                 "cd125_pos_fraction": positive / mine.size if mine.size else None}
        table.append(entry)
        if coverage < checks.min_blast_coverage:
            reasons.append(_coverage_reason(entry, len(clones), checks.min_blast_coverage))
    return tuple(table), reasons, _disagreement(table)


def _unexplained(tube, pops, blast_events, least):
    """REVIEW reasons for unnamed CD45-dim/SSC-low populations the blast gate leaves out.

    A clone negative for every blast marker the panel has (or lacking CD117 and CD33) is not
    called blasts; where such a population sits in the blasts' place, the count may miss a clone.
    """
    reasons = []
    for i, (label, levels) in enumerate(zip(pops.labels, pops.levels)):
        if label != "unknown" or not _blast_scatter(levels) or levels.get("CD45") not in ("dim", "pos"):
            continue
        rows = pops.rows[pops.assigned == i]
        if rows.size < max(MIN_CLONE_SHARE * blast_events, MIN_CLONE_EVENTS):
            continue
        inside = float(tube.step("blasts").mask[rows].mean())
        if inside < least:
            reasons.append(f"population check: an unnamed CD45-{levels['CD45']}/SSC-low population "
                           f"({phenotype(pops, [i])}; {rows.size} fitted events) lies outside the blast gate: "
                           "a blast clone without the blast markers? Gate by hand")
    return reasons


def _coverage_reason(entry, n, least):
    which = "the blast population" if n == 1 else f"blast clone {entry['clone']} of {n} ({entry['phenotype']})"
    return (f"coverage check: the blast gate holds {entry['coverage']:.0%} of the {entry['fitted_events']} "
            f"fitted events of {which} (at least {least:.0%} expected): the count may not represent the blasts")


def _disagreement(table, fraction=0.5):
    shares = [c["cd125_pos_fraction"] for c in table if c["cd125_pos_fraction"] is not None and c["blast_events"]]
    if len(shares) > 1 and max(shares) >= fraction + DISAGREE and min(shares) <= fraction - DISAGREE:
        parts = ", ".join(f"clone {c['clone']} {100 * c['cd125_pos_fraction']:.0f}% of {c['blast_events']}"
                          for c in table if c["cd125_pos_fraction"] is not None)
        return [f"blast clones disagree on CD125: {parts}"]
    return []
