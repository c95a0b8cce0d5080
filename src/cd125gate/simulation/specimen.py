"""Simulated specimens: the cell populations of a leukemic sample and the tubes stained from it.

No public CD125-stained leukemia data exist, so cd125gate's accuracy tests,
README demo and benchmarks run on tubes simulated here. Each event gets a true
abundance of every dye (``CaseSpec`` says how many cells of which population),
and the instrument of ``instrument`` measures them. See
docs/simulator.md for the populations and the numbers chosen.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from cd125gate.simulation.beads import molecules
from cd125gate.simulation.instrument import (
    ANTIBODIES,
    CD125,
    CHANNELS,
    DETECTORS,
    DURATION,
    MARKERS,
    PANEL,
    RANGE,
    TIME_RANGE,
    TIMESTEP,
    VIABILITY,
    SimulatedTube,
    instrument_keywords,
    measure,
    spillover_matrix,
)

# Populations: median and log10 spread of FSC-A, SSC-A and each marker's antibody
# abundance (detector units), and of autofluorescence. A marker missing from
# `markers` has no antibody bound; (median, sd, share) puts it on a share only.
POPULATIONS = {
    "lymphocyte": dict(fsc=(45000, 0.04), ssc=(11000, 0.08), af=(60, 0.15), markers={
        "CD45": (25000, 0.12), "CD123": (80, 0.3), "HLA-DR": (8000, 0.15, 0.15)}),
    "monocyte": dict(fsc=(80000, 0.05), ssc=(45000, 0.07), af=(150, 0.15), markers={
        "CD45": (15000, 0.1), "CD33": (20000, 0.12), "HLA-DR": (6000, 0.15), "CD123": (600, 0.15)}),
    "neutrophil": dict(fsc=(90000, 0.05), ssc=(115000, 0.07), af=(300, 0.15), markers={
        "CD45": (6000, 0.1), "CD33": (2000, 0.15), "CD123": (150, 0.2)}),
    "eosinophil": dict(fsc=(85000, 0.05), ssc=(150000, 0.06), af=(1500, 0.12), markers={
        "CD45": (20000, 0.1), "CD125": (10000, 0.15), "CD33": (1500, 0.15), "CD123": (300, 0.2)}),
    "basophil": dict(fsc=(55000, 0.05), ssc=(15000, 0.08), af=(80, 0.15), markers={
        "CD45": (4000, 0.1), "CD123": (15000, 0.12), "CD125": (4000, 0.15), "CD33": (1500, 0.15)}),
    "blast": dict(fsc=(60000, 0.05), ssc=(18000, 0.09), af=(100, 0.15), markers={
        "CD45": (3000, 0.12), "CD34": (6000, 0.15), "CD117": (3000, 0.15), "HLA-DR": (5000, 0.15),
        "CD33": (4000, 0.15), "CD123": (1500, 0.15)}),
    # The neighbours of blasts in a real marrow (CaseSpec.extra): CD45-dim or negative, SSC-low or
    # intermediate like blasts, told apart only by their markers.
    "nrbc": dict(fsc=(38000, 0.05), ssc=(8000, 0.1), af=(50, 0.15), markers={
        "CD45": (60, 0.3), "CD117": (300, 0.25, 0.4)}),
    "hematogone": dict(fsc=(40000, 0.04), ssc=(9000, 0.08), af=(60, 0.15), markers={
        "CD45": (10000, 0.15), "CD34": (5000, 0.15, 0.4), "HLA-DR": (10000, 0.15), "CD123": (300, 0.2)}),
    "pdc": dict(fsc=(50000, 0.05), ssc=(13000, 0.08), af=(80, 0.15), markers={
        "CD45": (8000, 0.1), "CD123": (25000, 0.12), "HLA-DR": (15000, 0.12), "CD33": (400, 0.2)}),
    "immature_eosinophil": dict(fsc=(70000, 0.05), ssc=(55000, 0.1), af=(800, 0.15), markers={
        "CD45": (10000, 0.12), "CD125": (5000, 0.2), "CD33": (3000, 0.15), "CD123": (300, 0.2)}),
}
NEIGHBOURS = ("nrbc", "hematogone", "pdc", "immature_eosinophil")
# Nonspecific binding: an isotype antibody on live cells (monocytes carry Fc
# receptors), and every antibody on dead cells.
ISOTYPE_BINDING = {"default": (40, 0.2), "monocyte": (120, 0.2), "dead": (400, 0.25)}
DEAD_BINDING = (400, 0.25)
DEAD_VIABILITY = (20000, 0.15)
NORMAL = ("lymphocyte", "monocyte", "neutrophil")
# A short clog: ~14% of the events, so that removing its time bins stays under
# the 25% the analysis tolerates before sending a tube to REVIEW.
CLOG_WINDOW = (0.45, 0.50)  # share of the acquisition time
CLOG_RATE = 3.0             # flow-rate jump inside the window
CLOG_SIGNAL = 0.65          # signals drop inside the window


@dataclass
class CaseSpec:
    """One specimen; the defaults are a typical marrow sample with blasts.

    Fractions are of all events of a tube; lymphocytes, monocytes and
    neutrophils share what the other populations leave, by their weights.
    """

    name: str
    n_events: int = 10000
    blast_fraction: float = 0.35
    cd125_pos_fraction: float = 0.6
    # CD125 on positive blasts (median, log10 sd): by default dim (8x below eosinophils)
    # yet resolvable, its 1st percentile (~400 compensated) well above the FMO blasts'
    # 99.5th percentile (~210). A median of a few hundred makes it overlap the control.
    cd125_median: float = 1200.0
    cd125_sd: float = 0.2
    basophil_fraction: float = 0.01
    eosinophil_fraction: float = 0.05
    dead_fraction: float = 0.05
    debris_fraction: float = 0.05
    doublet_fraction: float = 0.03
    ceiling_fraction: float = 0.005
    lymphocyte_weight: float = 0.45
    monocyte_weight: float = 0.15
    neutrophil_weight: float = 0.40
    cd34_negative: bool = False
    # Blast phenotype overrides for the cohort: marker -> [median, log10 sd], or None for a
    # marker the blasts lack (e.g. {"CD45": [400, 0.12], "HLA-DR": None}). Empty: POPULATIONS.
    blast_markers: dict[str, list[float] | None] = field(default_factory=dict)
    clog: bool = False
    control: str | None = "fmo"       # "fmo" | "isotype" | None
    control_events: int | None = None  # default: n_events
    # $PnS of the CD125 detector in the control tube. An FMO tube exported with
    # tube-specific labels leaves it blank (None, the default); FACSDiva with
    # experiment-wide labels keeps "CD125". The analysis must accept both.
    control_cd125_stain: str | None = None
    drop_cd125_channel: bool = False
    corrupt: bool = False             # the stained file is written truncated
    fmt: str = "fcs31"                # "fcs31" | "diva30"
    rename: dict[str, str] = field(default_factory=dict)  # default $PnN -> name written
    specimen: str = "bone marrow"
    patient_id: str = ""
    notes: str = ""
    # Real-marrow variation (the cohort's confounders), all off by default:
    # shares of all events for the blasts' neighbours (NEIGHBOURS: nrbc, hematogone, pdc,
    # immature_eosinophil), taken before lymphocytes, monocytes and neutrophils share the rest;
    extra: dict[str, float] = field(default_factory=dict)
    # a second blast clone: its share of the blasts, phenotype overrides (as blast_markers),
    # CD125+ share and CD125 median;
    clone2_fraction: float = 0.0
    clone2_markers: dict[str, list[float] | None] = field(default_factory=dict)
    clone2_cd125_pos_fraction: float = 0.5
    clone2_cd125_median: float = 1200.0
    # markers whose channel the panel lacks (e.g. ("Viability",)); ADC bits of every detector
    # ($PnR 2**bits: 20-bit data hold every value x4); FSC and SSC detector gains.
    drop_markers: tuple[str, ...] = ()
    bits: int = 18
    scatter_gain: tuple[float, float] = (1.0, 1.0)
    # A calibration bead tube beside the case (simulation.beads): the sheet names it, the tubes carry
    # the instrument's serial and detector voltages, and the truth holds the CD125 molecules (ABC).
    beads: bool = False


# CaseSpec fields a truth.json records only when they differ from their default, so that the
# bundled truth.json stays as it was before they existed.
OPTIONAL_FIELDS = ("blast_markers", "extra", "clone2_fraction", "clone2_markers", "clone2_cd125_pos_fraction",
                   "clone2_cd125_median", "drop_markers", "bits", "scatter_gain", "beads")


def split_counts(n: int, fractions: list[float] | np.ndarray) -> np.ndarray:
    """Split ``n`` events into integer counts by ``fractions`` (largest remainder, exact sum)."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def population_counts(spec: CaseSpec, n_events: int) -> dict[str, int]:
    """Events per population label for one tube of ``spec``."""
    fixed = {
        "blast": spec.blast_fraction, "basophil": spec.basophil_fraction,
        "eosinophil": spec.eosinophil_fraction, "dead": spec.dead_fraction,
        "debris": spec.debris_fraction, "doublet": spec.doublet_fraction,
        "ceiling": spec.ceiling_fraction, **spec.extra,
    }
    unknown = set(spec.extra) - set(NEIGHBOURS)
    if unknown:
        raise ValueError(f"case {spec.name}: unknown extra population(s) {', '.join(sorted(unknown))}")
    rest = 1.0 - sum(fixed.values())
    if rest < 0 or min(fixed.values()) < 0:
        raise ValueError(f"case {spec.name}: population fractions must be >= 0 and sum to <= 1")
    weights = np.array([spec.lymphocyte_weight, spec.monocyte_weight, spec.neutrophil_weight])
    shares = dict(fixed, **dict(zip(NORMAL, rest * weights / weights.sum())))
    return dict(zip(shares, split_counts(n_events, list(shares.values())).tolist()))


def _lognormal(rng, n, median, sd_log10):
    return median * 10.0 ** (sd_log10 * rng.standard_normal(n))


def _cells(rng, population, n, spec, overrides=None):
    """Noise-free cells of one population: scatter areas/heights, dye abundances, autofluorescence.

    ``overrides`` (marker -> [median, sd] or None) changes the population's phenotype; blasts take
    ``spec.blast_markers`` by default.
    """
    p = POPULATIONS[population]
    fsc_a, ssc_a = _lognormal(rng, n, *p["fsc"]), _lognormal(rng, n, *p["ssc"])
    abundance = np.zeros((n, len(PANEL)))
    markers = p["markers"]
    if overrides is None and population == "blast":
        overrides = spec.blast_markers
    if overrides:
        markers = {m: v for m, v in {**markers, **overrides}.items() if v is not None}
    for marker, params in markers.items():
        if (population == "blast" and marker == "CD34" and spec.cd34_negative) or marker in spec.drop_markers:
            continue  # a marker the panel lacks has no antibody in the tube (nor its spillover)
        level = _lognormal(rng, n, *params[:2])
        if len(params) == 3:  # expressed on a subset only (e.g. HLA-DR on B cells)
            level *= rng.random(n) < params[2]
        abundance[:, MARKERS.index(marker)] = level
    return {
        "fsc_a": fsc_a, "fsc_h": fsc_a * rng.normal(0.80, 0.02, n),
        "ssc_a": ssc_a, "ssc_h": ssc_a * rng.normal(0.85, 0.02, n),
        "abundance": abundance, "af": _lognormal(rng, n, *p["af"]),
    }


def _concat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _mixture(rng, n, counts, spec):
    """``n`` live singlet cells drawn from the cell populations in proportion to ``counts``."""
    weights = np.array([counts.get(p, 0) for p in POPULATIONS], dtype=float)
    if not weights.sum():  # a tiny tube with no live cells: draw from all populations alike
        weights[:] = 1.0
    pops = [p for p, w in zip(POPULATIONS, weights) if w > 0]
    draw = rng.multinomial(n, weights[weights > 0] / weights.sum())
    cells = _concat([_cells(rng, p, k, spec) for p, k in zip(pops, draw)])
    return _take(cells, rng.permutation(n))


def _take(cells, index):
    return {k: v[index] for k, v in cells.items()}


def _blasts(rng, n, spec):
    """Blasts, the first ``round(n * cd125_pos_fraction)`` of them CD125-positive; with a second
    clone (``clone2_fraction``), that share of them from the clone's own phenotype and CD125."""
    n2 = int(round(n * spec.clone2_fraction))
    cells, labels = _clone(rng, n - n2, spec, spec.blast_markers, spec.cd125_pos_fraction,
                           spec.cd125_median, "blast")
    if n2:
        markers = {**spec.blast_markers, **spec.clone2_markers}
        second, labels2 = _clone(rng, n2, spec, markers, spec.clone2_cd125_pos_fraction,
                                 spec.clone2_cd125_median, "blast2")
        cells, labels = _concat([cells, second]), np.concatenate([labels, labels2])
    return cells, labels


def _clone(rng, n, spec, markers, pos_fraction, median, label):
    cells = _cells(rng, "blast", n, spec, markers)
    n_pos = int(round(n * pos_fraction))
    cells["abundance"][:n_pos, CD125] = _lognormal(rng, n_pos, median, spec.cd125_sd)
    return cells, np.array([f"{label}_cd125pos"] * n_pos + [f"{label}_cd125neg"] * (n - n_pos))


def _dead(rng, n, counts, spec):
    """Dead cells: smaller, more granular, viability-dye bright, binding every antibody."""
    cells = _mixture(rng, n, counts, spec)
    cells["fsc_a"] *= 0.6
    cells["fsc_h"] *= 0.6
    cells["ssc_a"] *= 1.3
    cells["ssc_h"] *= 1.3
    binding = _lognormal(rng, n * len(ANTIBODIES), *DEAD_BINDING).reshape(n, len(ANTIBODIES))
    cells["abundance"][:, ANTIBODIES] += binding
    cells["abundance"][:, VIABILITY] = _lognormal(rng, n, *DEAD_VIABILITY)
    cells["abundance"][:, [MARKERS.index(m) for m in spec.drop_markers]] = 0.0
    return cells


def _debris(rng, n):
    """Debris: very low FSC, scattered SSC, a little of everything."""
    fsc_a = _lognormal(rng, n, 8000, 0.2)
    ssc_a = _lognormal(rng, n, 5000, 0.35)
    return {
        "fsc_a": fsc_a, "fsc_h": fsc_a * rng.normal(0.85, 0.05, n),
        "ssc_a": ssc_a, "ssc_h": ssc_a * rng.normal(0.9, 0.05, n),
        "abundance": _lognormal(rng, n * len(PANEL), 100, 0.4).reshape(n, len(PANEL)),
        "af": _lognormal(rng, n, 30, 0.3),
    }


def _doublets(rng, n, counts, spec):
    """Two cells passing together: areas and fluorescence add, the heights do not."""
    a, b = _mixture(rng, n, counts, spec), _mixture(rng, n, counts, spec)
    stretch = rng.uniform(1.0, 1.15, n)  # a doublet's peak is barely higher than one cell's
    return {
        "fsc_a": a["fsc_a"] + b["fsc_a"], "fsc_h": np.maximum(a["fsc_h"], b["fsc_h"]) * stretch,
        "ssc_a": a["ssc_a"] + b["ssc_a"], "ssc_h": np.maximum(a["ssc_h"], b["ssc_h"]) * stretch,
        "abundance": a["abundance"] + b["abundance"], "af": a["af"] + b["af"],
    }


def _ceiling(rng, n, counts, spec):
    """Aggregates large enough to saturate the scatter detectors."""
    cells = _mixture(rng, n, counts, spec)
    scale = rng.uniform(1.0, 2.0, n) * RANGE / cells["fsc_a"]  # FSC-A always saturates
    for key in ("fsc_a", "fsc_h", "ssc_a", "ssc_h"):
        cells[key] = cells[key] * scale
    return cells


def _specimen(rng, spec, n_events):
    """Noise-free cells and labels of one tube, in acquisition order."""
    counts = population_counts(spec, n_events)
    neighbours = tuple(p for p in NEIGHBOURS if counts.get(p))
    live = {p: counts[p] for p in (*NORMAL, "blast", "basophil", "eosinophil", *neighbours)}
    parts, labels = [], []
    for pop in (*NORMAL, "basophil", "eosinophil", *neighbours):
        parts.append(_cells(rng, pop, counts[pop], spec))
        labels += [pop] * counts[pop]
    blasts, blast_labels = _blasts(rng, counts["blast"], spec)
    parts.append(blasts)
    labels += list(blast_labels)
    for name, cells in (("dead", _dead(rng, counts["dead"], live, spec)),
                        ("debris", _debris(rng, counts["debris"])),
                        ("doublet", _doublets(rng, counts["doublet"], live, spec)),
                        ("ceiling", _ceiling(rng, counts["ceiling"], live, spec))):
        parts.append(cells)
        labels += [name] * len(cells["af"])
    order = rng.permutation(n_events)
    return _take(_concat(parts), order), np.array(labels, dtype="<U24")[order]


def _apply_control(rng, cells, labels, control):
    """Remove the CD125 antibody (FMO), or replace it by an isotype's nonspecific binding."""
    cells["abundance"][:, CD125] = 0.0
    if control == "isotype":
        for group, params in ISOTYPE_BINDING.items():
            mask = labels == group if group != "default" else ~np.isin(labels, ["monocyte", "dead"])
            cells["abundance"][mask, CD125] = _lognormal(rng, int(mask.sum()), *params)


def arrival_times(rng: np.random.Generator, n: int, clog: bool) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrival times (s) over the acquisition; with ``clog``, a window of faster flow.

    Returns the sorted times and a bool mask of the events inside the clog window.
    """
    start, stop = (DURATION * f for f in CLOG_WINDOW)
    factor = CLOG_RATE if clog else 1.0
    # Cumulative intensity Lambda(t) is piecewise linear; events are a unit-rate
    # Poisson process in Lambda, mapped back to t.
    total = DURATION + (factor - 1.0) * (stop - start)
    lam = np.cumsum(rng.exponential(1.0, n))
    lam *= total / lam[-1] if n else 1.0
    t = np.where(lam < start, lam, start + (lam - start) / factor)
    after = lam >= start + factor * (stop - start)
    t[after] = lam[after] - (factor - 1.0) * (stop - start)
    window = clog & (t >= start) & (t < stop)
    return t, window


def digitisation_factor(spec: CaseSpec) -> float:
    """Detector units per simulated unit: 2 ** (bits - 18)."""
    return float(2 ** (int(spec.bits) - 18))


def simulate_tube(spec: CaseSpec, seed: int, role: str) -> SimulatedTube:
    """One tube of ``spec``: ``role`` is "stained" or "control" (kind from ``spec.control``)."""
    key = [int(seed), zlib.crc32(spec.name.encode()), 0 if role == "stained" else 1]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    n = spec.n_events if role == "stained" else (spec.control_events or spec.n_events)
    cells, labels = _specimen(rng, spec, n)
    if role == "control":
        _apply_control(rng, cells, labels, spec.control)
    t, clogged = arrival_times(rng, n, spec.clog)
    for key_ in cells:
        if key_ != "af":
            cells[key_][clogged] *= CLOG_SIGNAL
    labels[clogged] = "clog"
    signals = measure(rng, cells, spec.scatter_gain, digitisation_factor(spec))
    events = np.column_stack([signals, t / TIMESTEP]).astype(np.float32)
    tube = _tube(spec, role, events, labels, seed, t)
    tube.cd125_molecules = molecules(cells["abundance"][:, CD125])
    if spec.beads:  # what the bead tube is checked against
        tube.keywords.update(instrument_keywords(tube.channels))
    return tube


def _tube(spec, role, events, labels, seed, t):
    """Wrap events in a SimulatedTube: names, stains, ranges, keywords; drop CD125 if asked."""
    stains = [None] * 4 + list(MARKERS) + [None]
    if role == "control":
        stains[4 + CD125] = spec.control_cd125_stain
    channels = list(CHANNELS)
    fluor = list(DETECTORS)
    spill = spillover_matrix()
    dropped = {MARKERS.index(m) for m in spec.drop_markers} | ({CD125} if spec.drop_cd125_channel else set())
    if dropped:
        keep = [i for i in range(len(channels)) if i - 4 not in dropped]
        events, channels, stains = events[:, keep], [channels[i] for i in keep], [stains[i] for i in keep]
        fluor_keep = [i for i in range(len(fluor)) if i not in dropped]
        spill, fluor = spill[np.ix_(fluor_keep, fluor_keep)], [fluor[i] for i in fluor_keep]
    channels = [spec.rename.get(c, c) for c in channels]
    fluor = [spec.rename.get(c, c) for c in fluor]
    ranges = [RANGE * digitisation_factor(spec)] * (len(channels) - 1) + [TIME_RANGE]
    keywords = _keywords(spec, role, seed, t)
    return SimulatedTube(events, channels, stains, ranges, spill, fluor, labels, keywords)


def _keywords(spec, role, seed, t):
    """TEXT keywords fixed by the spec and seed, so that files are byte-identical across runs."""
    seconds = int(np.ceil(t[-1])) if len(t) else 0
    tube = "CD125 stained" if role == "stained" else f"{(spec.control or '').upper()} CD125 control"
    return {
        "$CYT": "cd125gate simulator", "$DATE": "01-JAN-2025", "$BTIM": "09:00:00",
        "$ETIM": f"09:{seconds // 60:02d}:{seconds % 60:02d}", "$TIMESTEP": str(TIMESTEP),
        "$SRC": spec.name, "$SMNO": spec.patient_id or spec.name, "TUBE NAME": tube,
        "CD125GATE_SIMULATED": "1", "CD125GATE_SEED": str(seed), "CD125GATE_ROLE": role,
    }

