"""Leukocyte populations found in the panel's backbone space and named by a phenotype table.

A Gaussian mixture is fitted (``mixture.gaussian_mixture``, seeded from ``gating.seed``) on a
subsample of at most ``gating.max_events_fit`` viable singlets, in the
*backbone space*: log10 FSC-A and SSC-A, and CD45, CD34, CD117, HLA-DR, CD123
and CD33 where the panel has them, every axis in decades (a logicle display
unit times its M). Each component is then named by its mean against the
phenotype table of the config (``gating.phenotypes``): every marker's level
(neg / dim / pos / bright; SSC and FSC low / mid / high) is read *relative to
the tube's own lymphocytes* (``gating.levels``), which are found first as the
component brightest in CD45 for its SSC, and whose centre is the median of the
events assigned to them. The first row of the table whose
levels all match names the component; none matching leaves it "unknown".

The gates are then drawn around named populations (``blastgate``, ``exclusions``), and the
self-checks (``checks.py``) compare what ended up in a gate with the
populations found here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.settings_values import LEVEL_NAMES, MARKER_LEVEL_NAMES

if TYPE_CHECKING:
    from cd125gate.analysis.model import TubeAnalysis
    from cd125gate.analysis.transforms import Scale
    from cd125gate.settings import Gating

# Backbone markers used to find populations, in this order, when the panel has them.
BACKBONE = ("CD45", "CD34", "CD117", "HLA-DR", "CD123", "CD33")
SCATTER = ("FSC-A", "SSC-A")
LEUKOCYTES = ("lymphocytes", "monocytes", "neutrophils", "eosinophils", "basophils", "blasts",
              "immature_granulocytes", "pdc", "hematogones")


@dataclass
class Populations:
    """The mixture fitted on one tube and the name of each of its components."""

    features: list            # feature names: "FSC", "SSC", then markers
    channels: list            # $PnN per feature
    scale: np.ndarray         # decades per display unit, per feature (1 for log10 scatter)
    means: np.ndarray         # (k, d) component means, decades
    covariances: np.ndarray   # (k, d, d)
    weights: np.ndarray       # (k,)
    labels: list              # population name per component ("unknown" when none fits)
    levels: list              # per component: feature -> level name
    reference: int | None     # component of the lymphocyte reference
    rows: np.ndarray          # event indices of the fitted subsample
    assigned: np.ndarray      # component of each subsample event (most probable)
    notes: list = field(default_factory=list)
    x: np.ndarray | None = None  # the fitted events in the backbone space (rows x features)
    reference_point: np.ndarray | None = None  # per feature, the lymphocytes' median (decades)

    def components(self, name: str) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label == name]

    def found(self, name: str) -> bool:
        return bool(self.components(name))

    def rows_of(self, name: str) -> np.ndarray:
        """Subsample event indices assigned to ``name``'s components."""
        return self.rows[np.isin(self.assigned, self.components(name))]

    def share(self, name: str) -> float:
        return float(self.weights[self.components(name)].sum())

    def feature(self, name: str) -> int:
        return self.features.index(name)

    def reference_mean(self, feature: str) -> float:
        """The lymphocyte reference's centre in ``feature`` (its events' median; see ``label``)."""
        return float(self.reference_point[self.feature(feature)])


def decades_per_unit(scale: Scale) -> float:
    """Decades per display unit of a fluorescence scale (logicle: M; arcsinh: M of its FlowKit form)."""
    if scale.kind == "logicle":
        return float(scale.params["M"])
    if scale.kind == "arcsinh":
        from cd125gate.analysis.transforms import asinh_parameters

        return float(asinh_parameters(scale.params)[1])
    return 1.0


def backbone(tube: TubeAnalysis) -> tuple[list[str], list[str], np.ndarray]:
    """(features, channels, scale) of the tube's backbone space."""
    features, channels, scale = [], [], []
    for name in SCATTER:
        ch = tube.markers.get(name)
        if ch is not None:
            features.append(name[:3])
            channels.append(ch)
            scale.append(1.0)
    for marker in BACKBONE:
        ch = tube.markers.get(marker)
        if ch is not None:
            features.append(marker)
            channels.append(ch)
            scale.append(decades_per_unit(tube.scales[ch]))
    return features, channels, np.array(scale)


def feature_matrix(tube: TubeAnalysis, rows: np.ndarray, features: Sequence[str], channels: Sequence[str],
                   scale: np.ndarray) -> np.ndarray:
    """Events ``rows`` in the backbone space, in decades (scatter as log10 of the linear value)."""
    columns = []
    for name, ch, s in zip(features, channels, scale):
        x = tube.column(ch)[rows].astype(float)
        columns.append(np.log10(np.clip(x, 10.0, None)) if name in ("FSC", "SSC") else x * s)
    return np.column_stack(columns)


def subsample(mask: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` event indices of ``mask``, drawn without replacement (sorted)."""
    rows = np.flatnonzero(mask)
    if rows.size > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return rows


def fit(tube: TubeAnalysis, mask: np.ndarray, settings: Gating) -> Populations:
    """Fit the mixture on up to ``max_events_fit`` events of ``mask`` and name its components.

    :param settings: the config's ``gating`` block
    """
    from threadpoolctl import threadpool_limits

    from cd125gate.analysis.numeric.mixture import gaussian_mixture

    features, channels, scale = backbone(tube)
    rows = subsample(mask, settings.max_events_fit, settings.seed)
    x = feature_matrix(tube, rows, features, channels, scale)
    k = int(min(settings.components, max(1, rows.size // 50)))
    # One thread: BLAS threads fighting over the cores made the fit ~10x slower on a busy machine.
    with threadpool_limits(1):
        gm = gaussian_mixture(x, k, seed=settings.seed, max_iter=200, tol=1e-3, reg_covar=1e-4)
        assigned = gm.predict(x)
    return label(features, channels, scale, gm.means, gm.covariances, gm.weights, rows, assigned,
                 settings, x)


def label(features: Sequence[str], channels: Sequence[str], scale: np.ndarray, means: np.ndarray,
          covariances: np.ndarray, weights: np.ndarray, rows: np.ndarray, assigned: np.ndarray, settings: Gating,
          x: np.ndarray | None = None) -> Populations:
    """Name every component against the phenotype table, relative to the lymphocyte reference.

    The reference point is the median of the events assigned to the
    lymphocyte component (its mean without ``x``): when the lymphocytes are a
    fraction of a percent of a blast-rich marrow, a few stray events can share
    their component and drag its mean half-way to the blasts, which would
    read every blast marker against the wrong place; the median stays on the
    lymphocytes while they are most of their component.
    """
    pops = Populations(list(features), list(channels), np.asarray(scale), np.asarray(means),
                       np.asarray(covariances), np.asarray(weights), [], [], None,
                       np.asarray(rows), np.asarray(assigned), x=x)
    ref = lymphocyte_reference(pops, settings.min_population_share)
    pops.reference = ref
    if ref is None:
        pops.labels = ["unknown"] * len(weights)
        pops.levels = [{} for _ in weights]
        pops.notes.append("no lymphocyte reference (CD45-bright, SSC-low) found")
        return pops
    own = None if x is None else x[pops.assigned == ref]
    pops.reference_point = pops.means[ref] if own is None or len(own) == 0 else np.median(own, axis=0)
    for i in range(len(weights)):
        levels = component_levels(pops.means[i] - pops.reference_point, pops.features, settings.levels)
        pops.levels.append(levels)
        name = match(levels, settings.phenotypes) if weights[i] > 0 else "unknown"
        if name == "blasts" and not is_blast(levels, settings.checks.blast_markers):
            name = "unknown"  # blast-like scatter and CD45 but no blast marker: not called blasts
        pops.labels.append(name)
    pops.labels[ref] = "lymphocytes"
    return pops


def lymphocyte_reference(pops: Populations, min_share: float, near: tuple[float, float] = (0.3, 0.2)) -> int | None:
    """The lymphocyte component every level is read against.

    Lymphocytes are the brightest CD45 for their SSC (CD45 - log SSC); among
    the components within ``near`` decades of that one in CD45 and SSC (T, B
    and NK cells may each get a component), the largest, so that HLA-DR and
    the other markers are read against the (mostly negative) T cells rather
    than the HLA-DR+ B cells.
    """
    if "CD45" not in pops.features or "SSC" not in pops.features:
        return None
    c45, cssc = pops.feature("CD45"), pops.feature("SSC")
    big = pops.weights >= min_share
    score = np.where(big, pops.means[:, c45] - pops.means[:, cssc], -np.inf)
    if not np.isfinite(score).any():
        return None
    top = int(np.argmax(score))
    close = (big & (np.abs(pops.means[:, c45] - pops.means[top, c45]) < near[0])
             & (np.abs(pops.means[:, cssc] - pops.means[top, cssc]) < near[1]))
    return int(np.argmax(np.where(close, pops.weights, -1.0)))


def level_of(diff: float, edges: Sequence[float], names: Sequence[str]) -> str:
    """The level name of a difference from the reference: ``names[i]`` for the i-th interval of ``edges``."""
    return names[int(np.searchsorted(edges, diff, side="right"))]


def component_levels(diff: np.ndarray, features: Sequence[str],
                     level_settings: dict[str, list[float]]) -> dict[str, str]:
    """feature -> level name for one component (``diff`` = its mean minus the reference's, decades)."""
    out = {}
    for j, name in enumerate(features):
        names = LEVEL_NAMES.get(name, MARKER_LEVEL_NAMES)
        edges = level_settings.get(name, level_settings["markers"])
        out[name] = level_of(float(diff[j]), edges, names)
    return out


def match(levels: dict[str, str], phenotypes: dict[str, dict[str, list[str]]]) -> str:
    """The first population of the table whose listed levels all hold ("unknown" if none)."""
    for population, rule in phenotypes.items():
        if all(levels[f] in allowed for f, allowed in rule.items() if f in levels):
            return population
    return "unknown"


def carries_blast_marker(levels: dict[str, str], markers: Sequence[str]) -> bool:
    """Whether a component is at least dim for one of the blast ``markers`` the panel has (True without any)."""
    present = [m for m in markers if m in levels]
    return not present or any(levels[m] != "neg" for m in present)


def is_blast(levels: dict[str, str], markers: Sequence[str]) -> bool:
    """A blast-scatter component is blasts when it carries a blast marker (at dim or above) and is
    myeloid (CD117 or CD33 not negative; CD34+ hematogones are neither); as CD45-bright as
    lymphocytes, only with CD34 or CD117 at pos or above (nothing else that bright carries them)."""
    myeloid = [m for m in ("CD117", "CD33") if m in levels]
    if myeloid and all(levels[m] == "neg" for m in myeloid):
        return False
    if levels.get("CD45") != "bright":
        return carries_blast_marker(levels, markers)
    return any(levels.get(m) in ("pos", "bright") for m in ("CD34", "CD117"))


def summary(pops: Populations) -> str:
    """One line per named population: share of the fitted events and components."""
    names = sorted(set(pops.labels), key=lambda n: (n == "unknown", n))
    return "; ".join(f"{n} {100 * pops.share(n):.1f}%" for n in names)
