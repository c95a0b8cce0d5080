"""Simulated stained and control tubes of a leukemic sample, with known truth per event.

No public CD125-stained leukemia data exist, so cd125gate's accuracy tests,
README demo and benchmarks run on tubes simulated here. Each event gets a true
abundance of every dye; the instrument is then simulated: dyes spill into
neighbouring detectors through the spillover matrix written into the file,
autofluorescence adds to every detector, photon counting spreads a signal by
~sqrt(signal), electronic noise adds a constant spread, and detectors clip at
their range. See docs/simulator.md for the populations and the numbers chosen.
"""

import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError
from .fcs_write import fcs_bytes
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

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
BLAST_LABELS = ("blast_cd125pos", "blast_cd125neg", "blast2_cd125pos", "blast2_cd125neg")
POSITIVE_BLASTS = ("blast_cd125pos", "blast2_cd125pos")
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
    blast_markers: dict = field(default_factory=dict)
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
    rename: dict = field(default_factory=dict)  # default $PnN -> name written
    specimen: str = "bone marrow"
    patient_id: str = ""
    notes: str = ""
    # Real-marrow variation (the cohort's confounders), all off by default:
    # shares of all events for the blasts' neighbours (NEIGHBOURS: nrbc, hematogone, pdc,
    # immature_eosinophil), taken before lymphocytes, monocytes and neutrophils share the rest;
    extra: dict = field(default_factory=dict)
    # a second blast clone: its share of the blasts, phenotype overrides (as blast_markers),
    # CD125+ share and CD125 median;
    clone2_fraction: float = 0.0
    clone2_markers: dict = field(default_factory=dict)
    clone2_cd125_pos_fraction: float = 0.5
    clone2_cd125_median: float = 1200.0
    # markers whose channel the panel lacks (e.g. ("Viability",)); ADC bits of every detector
    # ($PnR 2**bits: 20-bit data hold every value x4); FSC and SSC detector gains.
    drop_markers: tuple = ()
    bits: int = 18
    scatter_gain: tuple = (1.0, 1.0)
    # A calibration bead tube beside the case (simulate_beads): the sheet names it, the tubes carry
    # the instrument's serial and detector voltages, and the truth holds the CD125 molecules (ABC).
    beads: bool = False


# CaseSpec fields a truth.json records only when they differ from their default, so that the
# bundled truth.json stays as it was before they existed.
OPTIONAL_FIELDS = ("blast_markers", "extra", "clone2_fraction", "clone2_markers", "clone2_cd125_pos_fraction",
                   "clone2_cd125_median", "drop_markers", "bits", "scatter_gain", "beads")


@dataclass
class SimulatedTube:
    """One simulated tube: raw (uncompensated) events and the truth per event."""

    events: np.ndarray        # float32 (n_events, n_channels)
    channels: list            # $PnN
    stains: list              # $PnS (None where unstained)
    ranges: list              # $PnR
    spillover: np.ndarray     # (n_fluor, n_fluor), row = dye, column = detector
    fluor_channels: list      # $PnN of the spillover rows/columns
    labels: np.ndarray        # str population label per event
    keywords: dict            # further TEXT keywords
    cd125_molecules: np.ndarray | None = None  # true CD125 antibodies bound per event

    def column(self, channel):
        return self.events[:, self.channels.index(channel)]

    def compensated(self, channel):
        """Compensated values of one fluorescence channel (events @ inverse(spillover))."""
        idx = [self.channels.index(c) for c in self.fluor_channels]
        comp = self.events[:, idx].astype(float) @ np.linalg.inv(self.spillover)
        return comp[:, self.fluor_channels.index(channel)]

    def at_ceiling(self):
        """Events at or above 99.9% of $PnR in any channel but Time."""
        limits = 0.999 * np.asarray(self.ranges)
        check = [i for i, c in enumerate(self.channels) if c != "Time"]
        return (self.events[:, check] >= limits[check]).any(axis=1)

    def truth_blasts(self):
        """Viable singlet blasts not at the ceiling (bool per event)."""
        return np.isin(self.labels, BLAST_LABELS) & ~self.at_ceiling()


def spillover_matrix(detectors=DETECTORS):
    """The simulated instrument's spillover matrix over ``detectors`` (row = dye, column = detector)."""
    matrix = np.eye(len(detectors))
    for i, src in enumerate(detectors):
        for j, dst in enumerate(detectors):
            matrix[i, j] = SPILL.get((src, dst), matrix[i, j])
    return matrix


def split_counts(n, fractions):
    """Split ``n`` events into integer counts by ``fractions`` (largest remainder, exact sum)."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def population_counts(spec, n_events):
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


def arrival_times(rng, n, clog):
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


def _measure(rng, cells, scatter_gain=(1.0, 1.0), digitisation=1.0):
    """Detector values: spillover, autofluorescence, photon and electronic noise.

    Scatter detectors see the cells through their gains (FSC, SSC); every detector clips at its
    ceiling, and ``digitisation`` writes the same signal at a finer resolution (20-bit data: x4,
    with $PnR x4; see ``_digitisation``), as newer instruments do.
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


def _digitisation(spec):
    """Detector units per simulated unit: 2 ** (bits - 18)."""
    return float(2 ** (int(spec.bits) - 18))


def simulate_tube(spec, seed, role):
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
    signals = _measure(rng, cells, spec.scatter_gain, _digitisation(spec))
    events = np.column_stack([signals, t / TIMESTEP]).astype(np.float32)
    tube = _tube(spec, role, events, labels, seed, t)
    from .simulate_beads import instrument_keywords, molecules

    tube.cd125_molecules = molecules(cells["abundance"][:, CD125])
    if spec.beads:  # what the bead tube is checked against
        tube.keywords.update(instrument_keywords(tube.channels))
    return tube


def _tube(spec, role, events, labels, seed, t):
    """Wrap events in a SimulatedTube: names, stains, ranges, keywords; drop CD125 if asked."""
    stains = [None] * 4 + list(MARKERS) + [None]
    if role == "control":
        stains[4 + CD125] = spec.control_cd125_stain
    channels = list(SCATTER) + list(DETECTORS) + ["Time"]
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
    ranges = [RANGE * _digitisation(spec)] * (len(channels) - 1) + [float(np.ceil(DURATION / TIMESTEP * 1.1))]
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


def expected_criterion(spec, blasts, positives, settings=None):
    """What cd125gate's own ``criterion.decide`` concludes from the true counts: (criterion, reason).

    FAILED without a CD125 channel or with an unreadable file; otherwise the
    decision of perfect gating: the true blasts and true CD125+ blasts weighed
    by the same rules, and settings, as a real tube. (How far a real count may
    stray from the truth is the benchmarks' business: ``cohort.acceptable``.)
    """
    from .criterion import Evidence, decide
    from .settings import load_settings

    if spec.drop_cd125_channel:
        return "FAILED", "the stained tube has no CD125 channel"
    if spec.corrupt:
        return "FAILED", "the stained FCS file is truncated"
    verdict = decide(Evidence(blasts, positives, "control_percentile", control_used=True),
                     settings or load_settings())
    if verdict.reasons:
        return verdict.criterion, "; ".join(verdict.reasons)
    return verdict.criterion, f"true fraction {positives / blasts:.3f} at {blasts} blasts"


def simulate_case(spec, seed):
    """Simulate the stained tube and the control tube of one specimen.

    Parameters
    ----------
    spec : CaseSpec
    seed : int
        Same spec and seed give the same events.

    Returns
    -------
    stained : SimulatedTube
    control : SimulatedTube or None
        Same specimen, new events; FMO: no CD125 antibody; isotype: an
        isotype's nonspecific binding instead. None when ``spec.control`` is None.
    truth : dict
        JSON-serialisable truth (see `case_truth`).
    """
    if spec.control not in ("fmo", "isotype", None):
        raise ValueError(f"case {spec.name}: control must be 'fmo', 'isotype' or None")
    stained = simulate_tube(spec, seed, "stained")
    control = simulate_tube(spec, seed, "control") if spec.control else None
    return stained, control, case_truth(spec, seed, stained, control)


def case_truth(spec, seed, stained, control):
    """Truth of one case: counts per population, blasts, CD125+ blasts, expected criterion."""
    blast_mask = stained.truth_blasts()
    blasts = int(blast_mask.sum())
    positives = int((blast_mask & np.isin(stained.labels, POSITIVE_BLASTS)).sum())
    criterion, reason = expected_criterion(spec, blasts, positives)
    spec_dict = asdict(spec)
    defaults = CaseSpec("default")
    for name in OPTIONAL_FIELDS:
        if getattr(spec, name) == getattr(defaults, name):
            del spec_dict[name]
    truth = {
        "name": spec.name, "seed": int(seed), "spec": spec_dict, "format": spec.fmt,
        "events": {"stained": len(stained.events), "control": len(control.events) if control else 0},
        "populations": {"stained": _label_counts(stained.labels),
                        "control": _label_counts(control.labels) if control else {}},
        "blasts": blasts, "cd125_pos_blasts": positives,
        "true_fraction": positives / blasts if blasts else None,
        "control_blasts": int(control.truth_blasts().sum()) if control else 0,
        "expected_criterion": criterion, "criterion_reason": reason,
        **({"clones": _clone_truth(stained, blast_mask)} if spec.clone2_fraction else {}),
        "files": {"stained": f"{spec.name}_stained.fcs",
                  "control": f"{spec.name}_control.fcs" if control else None},
    }
    if spec.beads:
        from .simulate_beads import abc_truth

        truth["cd125_abc"] = abc_truth(stained)
        truth["files"].update({"beads": "beads.fcs", "bead_lot": "beads_lot.yaml"})
    return truth


def _clone_truth(stained, blast_mask):
    """Per clone: true blasts and their CD125+ fraction."""
    out = {}
    for clone in ("blast", "blast2"):
        own = blast_mask & np.char.startswith(stained.labels.astype(str), clone + "_")
        pos = int((own & (stained.labels == f"{clone}_cd125pos")).sum())
        out[clone] = {"blasts": int(own.sum()), "true_fraction": pos / int(own.sum()) if own.any() else None}
    return out


def _label_counts(labels):
    names, counts = np.unique(labels, return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


FORMATS = {
    "fcs31": dict(version="3.1", byte_order="little", spill_keyword="$SPILLOVER"),
    "diva30": dict(version="3.0", byte_order="big", spill_keyword="SPILL"),
}


def tube_bytes(tube, fmt):
    """The FCS file bytes of a simulated tube in format ``fmt`` ("fcs31" or "diva30")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fcs_bytes(tube.events, tube.channels, stains=tube.stains, ranges=tube.ranges,
                     keywords=tube.keywords, spillover=tube.spillover,
                     spill_channels=tube.fluor_channels, **FORMATS[fmt])


def write_case(outdir, spec, seed, *, fmt=None):
    """Write ``<name>_stained.fcs`` and ``<name>_control.fcs`` (if any) into ``outdir``.

    ``fmt`` overrides ``spec.fmt``: "fcs31" (little-endian FCS 3.1, $SPILLOVER)
    or "diva30" (big-endian FCS 3.0 with SPILL, like BD FACSDiva). With
    ``spec.corrupt`` the stained file is cut in the middle of its DATA segment.
    Returns the truth dict.
    """
    spec = replace(spec, fmt=fmt or spec.fmt)
    stained, control, truth = simulate_case(spec, seed)
    outdir = Path(outdir)
    payload = tube_bytes(stained, spec.fmt)
    if spec.corrupt:
        payload = payload[: len(payload) - stained.events.nbytes // 2]
    atomic_write_bytes(outdir / truth["files"]["stained"], payload)
    if control is not None:
        atomic_write_bytes(outdir / truth["files"]["control"], tube_bytes(control, spec.fmt))
    if spec.beads:  # one bead tube for the batch: the same bytes whichever case writes it
        from .simulate_beads import write_beads

        write_beads(outdir, seed=seed)
    return truth


def write_set(outdir, specs, seed, *, fmt=None):
    """Write the cases, ``truth.json`` (one object per case) and the sample sheet ``samples.tsv``."""
    truths = {spec.name: write_case(outdir, spec, seed, fmt=fmt) for spec in specs}
    atomic_write_json(Path(outdir) / "truth.json", truths)
    atomic_write_text(Path(outdir) / "samples.tsv", sample_sheet(specs, truths))
    return truths


def sample_sheet(specs, truths):
    """Sample sheet text: sample_id, fcs, control, patient_id, specimen, notes (tab-separated).

    With bead tubes, also beads and bead_lot (empty for a case without).
    """
    beads = any(spec.beads for spec in specs)
    rows = ["sample_id\tfcs\tcontrol\tpatient_id\tspecimen\tnotes" + ("\tbeads\tbead_lot" if beads else "")]
    for i, spec in enumerate(specs, start=1):
        files = truths[spec.name]["files"]
        row = [spec.name, files["stained"], files["control"] or "",
               spec.patient_id or f"SIM-{i:03d}", spec.specimen, spec.notes]
        if beads:
            row += [files.get("beads") or "", files.get("bead_lot") or ""]
        rows.append("\t".join(row))
    return "\n".join(rows) + "\n"


def default_cases(n_events=5000, control_events=4000):
    """The bundled test_data set: one case per situation the analysis must handle.

    Small tubes keep test_data at a few MB; every case that must decide
    MET/NOT_MET still has >= 1,500 blasts and a truth >= 15 points from 50%.
    """
    def case(name, notes, **kw):
        kw = {"n_events": n_events, "control_events": control_events, **kw}
        return CaseSpec(name=name, notes=notes, **kw)

    return [
        case("low_fmo", "CD125 on ~20% of blasts; FMO control", cd125_pos_fraction=0.20),
        case("high_fmo", "CD125 on ~80% of blasts; FMO control", cd125_pos_fraction=0.80),
        # 51% of ~1,750 blasts: the 95% Wilson interval spans 50% even with a
        # point of gating error either way.
        case("near50_fmo", "CD125 on ~51% of blasts: too close to call", cd125_pos_fraction=0.51),
        case("high_isotype", "CD125 on ~75% of blasts; isotype control", cd125_pos_fraction=0.75,
             control="isotype"),
        case("low_nocontrol", "CD125 on ~25% of blasts; no control tube", cd125_pos_fraction=0.25,
             control=None),
        case("basophil_rich", "8% basophils (CD125+, CD123 bright) beside ~35% CD125+ blasts",
             cd125_pos_fraction=0.35, basophil_fraction=0.08),
        case("eosinophil_rich", "20% eosinophils (CD125 bright, autofluorescent)",
             cd125_pos_fraction=0.70, eosinophil_fraction=0.20, specimen="peripheral blood"),
        case("dead_rich", "25% dead cells binding every antibody", cd125_pos_fraction=0.30,
             dead_fraction=0.25),
        case("clog", "flow-rate jump with signal drop mid-acquisition", cd125_pos_fraction=0.65,
             clog=True, n_events=10000),
        case("cd34neg", "CD34-negative blasts", cd125_pos_fraction=0.60, cd34_negative=True),
        case("few_blasts", "too few blasts (<200)", blast_fraction=0.02, cd125_pos_fraction=0.6,
             specimen="peripheral blood"),
        case("no_cd125", "tube stained without CD125 (no PE-A channel)", drop_cd125_channel=True),
        case("diva_high", "BD FACSDiva-style big-endian FCS 3.0 with SPILL", cd125_pos_fraction=0.70,
             fmt="diva30"),
        case("corrupt", "stained FCS file truncated mid-DATA", corrupt=True),
    ]


def add_arguments(parser):
    parser.add_argument("outdir", help="folder for the FCS files, truth.json and samples.tsv")
    parser.add_argument("--events", type=int, help="events per tube (default: each case's own)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--cases", help="comma-separated case names (default: all bundled cases)")
    parser.add_argument("--format", choices=sorted(FORMATS), help="override every case's file format")
    parser.add_argument("--beads", action="store_true",
                        help="also a calibration bead tube and its lot file, named in the sheet for every "
                             "case, and each case's true CD125 antibodies bound per cell in truth.json")
    parser.add_argument("--cohort", type=int, metavar="N",
                        help="instead of the bundled cases, N varied specimens drawn from --seed "
                             "(see cd125gate.cohort)")
    parser.add_argument("--confounders", action="store_true",
                        help="with --cohort: each specimen also carries what real marrows hold beside blasts "
                             "(nucleated red cells, hematogones, a second clone, 20-bit data...; "
                             "cd125gate.cohort.CONFOUNDERS)")


def run(args):
    if args.cohort is not None:
        return _run_cohort(args)
    if args.confounders:
        raise InputError("--confounders", "only with --cohort N")
    specs = default_cases()
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        known = {s.name: s for s in specs}
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise InputError("--cases", f"unknown case(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(known)}")
        specs = [known[c] for c in wanted]
    if args.events is not None:
        if args.events < 10:
            raise InputError("--events", f"need at least 10 events per tube, not {args.events}")
        specs = [replace(s, n_events=args.events) for s in specs]
    if args.beads:
        specs = [replace(s, beads=True) for s in specs]
    truths = write_set(args.outdir, specs, args.seed, fmt=args.format)
    for name, truth in truths.items():
        fraction = truth["true_fraction"]
        shown = f"{fraction:.3f}" if fraction is not None else "-"
        print(f"{name}\tblasts={truth['blasts']}\tcd125+={shown}\t{truth['expected_criterion']}")
    return 0


def _run_cohort(args):
    from .cohort import EVENTS, write_cohort

    if args.cohort < 1:
        raise InputError("--cohort", f"need at least 1 case, not {args.cohort}")
    if args.cases or args.format:
        raise InputError("--cohort", "draws its own cases and formats; drop --cases/--format")
    events = EVENTS if args.events is None else (args.events, args.events)
    truths = write_cohort(args.outdir, args.cohort, args.seed, events, args.confounders, beads=args.beads)
    for name, truth in truths.items():
        fraction = truth["true_fraction"]
        shown = f"{fraction:.3f}" if fraction is not None else "-"
        print(f"{name}\tblasts={truth['blasts']}\tcd125+={shown}\t{truth['expected_criterion']}"
              f"\t{'clear' if truth['clear'] else ''}\t{','.join(truth['confounders'])}")
    return 0


__all__ = ["CaseSpec", "SimulatedTube", "simulate_case", "write_case", "write_set", "default_cases",
           "spillover_matrix", "expected_criterion"]
