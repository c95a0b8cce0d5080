"""A varied cohort of simulated screening samples: marrows and bloods whose make-up differs case by case.

The bundled cases vary one thing at a time around a typical marrow; real
screening samples vary everything at once. ``cohort_specs(n, seed)`` draws
``n`` specimens whose population shares, blast phenotype, CD125 level, event
count and file format are drawn independently over the ranges seen in
screening marrows and bloods (issue 10), deterministically per seed. Each
case's truth says which answers are acceptable:

- ``REVIEW`` always; ``MET`` / ``NOT_MET`` on the side of 50 % the true fraction lies on, with
  >= 200 true blasts (``expected_criterion`` is stricter: it also asks REVIEW within 3 points of 50 %).

A case is *clear* when its true fraction is >= 10 points from 50 %, it has
>= 500 true blasts and its CD125 is not dim: those must not go to ``REVIEW``
too often (the robustness benchmark, ``scripts/accuracy.py --cohort``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cd125gate.io.fileio import atomic_write_json, atomic_write_text
from cd125gate.simulation.simulate import CaseSpec, sample_sheet, write_case

# Ranges drawn per case (fractions of all events of a tube).
EVENTS = (20_000, 300_000)
BLASTS = (0.002, 0.80)          # log-uniform
EOSINOPHILS = 0.45              # max; skewed towards few
NEUTROPHILS = 0.50
BASOPHILS = 0.10
LYMPHOCYTES = (0.01, 0.40)
DEAD = 0.25
DEBRIS = 0.08
MIN_MONOCYTES = 0.005
# Blast phenotype (antibody abundance, detector units; lymphocytes' CD45 is 25,000).
BLAST_CD45 = (200.0, 10_000.0)  # almost negative .. 0.4 decades below lymphocytes
BLAST_CD123 = (300.0, 10_000.0)  # low .. high (basophils: 15,000)
CD125_DIM = (150.0, 400.0)      # overlapping the control's blasts (99.5th percentile ~210)
CD125_RESOLVED = (600.0, 6000.0)
DIM_CD125_BELOW = 500.0         # a positive-blast median below this counts as dim CD125
CLEAR = dict(distance=0.10, blasts=500)


def _log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _blast_markers(rng):
    """A blast phenotype: CD45 from almost negative to near lymphocytes; CD34-/CD117-low/HLA-DR- cases."""
    return {
        "CD45": [_log_uniform(rng, *BLAST_CD45), 0.12],
        "CD34": None if rng.random() < 0.25 else [_log_uniform(rng, 2000, 15000), 0.15],
        "CD117": [_log_uniform(rng, 200, 600) if rng.random() < 0.25 else _log_uniform(rng, 1500, 8000),
                  0.15],
        "HLA-DR": None if rng.random() < 0.2 else [_log_uniform(rng, 2000, 12000), 0.15],
        "CD123": [_log_uniform(rng, *BLAST_CD123), 0.15],
        "CD33": None if rng.random() < 0.1 else [_log_uniform(rng, 1000, 10000), 0.15],
    }


def _shares(rng):
    """Population shares of one specimen; the non-blast ones shrink together if they do not fit."""
    blasts = _log_uniform(rng, *BLASTS)
    others = {
        "eosinophil": EOSINOPHILS * rng.random() ** 2, "neutrophil": NEUTROPHILS * rng.random(),
        "basophil": BASOPHILS * rng.random() ** 2, "lymphocyte": rng.uniform(*LYMPHOCYTES),
        "dead": DEAD * rng.random() ** 1.5, "debris": DEBRIS * rng.random(),
    }
    room = 1.0 - blasts - 0.035 - MIN_MONOCYTES  # doublets 3 %, ceiling 0.5 %, some monocytes
    total = sum(others.values())
    if total > room:
        others = {k: v * room / total for k, v in others.items()}
    others["monocyte"] = 1.0 - blasts - 0.035 - sum(others.values())
    return blasts, others


def cohort_spec(rng: np.random.Generator, name: str) -> CaseSpec:
    """One specimen drawn from the cohort's ranges."""
    blasts, shares = _shares(rng)
    dim = rng.random() < 0.25
    n = int(round(_log_uniform(rng, *EVENTS)))
    return CaseSpec(
        name=name, n_events=n, control_events=n,
        blast_fraction=blasts, cd125_pos_fraction=float(rng.random()),
        cd125_median=_log_uniform(rng, *(CD125_DIM if dim else CD125_RESOLVED)),
        basophil_fraction=shares["basophil"], eosinophil_fraction=shares["eosinophil"],
        dead_fraction=shares["dead"], debris_fraction=shares["debris"],
        # The three normal populations share what is left by these weights (= their shares).
        lymphocyte_weight=shares["lymphocyte"], monocyte_weight=shares["monocyte"],
        neutrophil_weight=shares["neutrophil"],
        blast_markers=_blast_markers(rng),
        control=("fmo", "isotype", None)[rng.choice(3, p=[0.8, 0.15, 0.05])],
        fmt=str(rng.choice(["fcs31", "diva30"])),
        specimen=str(rng.choice(["bone marrow", "peripheral blood"], p=[0.7, 0.3])),
    )


# What real marrows carry beside blasts (issue 21): each confounder is drawn with its own
# probability, several per case, from a random stream of its own (so the cohort without
# confounders stays what it was). Shares are of all events.
CONFOUNDERS = {
    "nrbc": 0.25,               # nucleated red cells 1-25 %
    "immature_eosinophils": 0.25,  # 1-20 %
    "hematogones": 0.2,         # 0.5-6 %
    "pdc": 0.2,                 # plasmacytoid dendritic cells 0.2-2 %
    "monocytosis": 0.15,        # monocytes 15-35 %
    "eosinophilia": 0.12,       # eosinophils 40-70 % with blasts 0.5-10 %
    "second_clone": 0.2,        # 20-50 % of the blasts, own phenotype and CD125
    "missing_marker": 0.15,     # a backbone marker or the viability dye not in the panel
    "bits20": 0.2,              # 20-bit data ($PnR 1,048,576)
    "scatter_gain": 0.2,        # FSC and SSC gains x0.5-2
    "no_control": 0.1,          # no control tube
}
EXTRA = {"nrbc": ("nrbc", 0.01, 0.25), "immature_eosinophils": ("immature_eosinophil", 0.01, 0.20),
         "hematogones": ("hematogone", 0.005, 0.06), "pdc": ("pdc", 0.002, 0.02)}
DROPPABLE = ("Viability", "Viability", "CD34", "CD117", "HLA-DR", "CD33", "CD123")


def confounded(spec: CaseSpec, rng: np.random.Generator) -> tuple[CaseSpec, list[str]]:
    """``spec`` with confounders drawn from ``rng``; returns (spec, names of the confounders)."""
    drawn = [name for name, p in CONFOUNDERS.items() if rng.random() < p]
    changes = {"extra": {}}
    for name in drawn:
        if name in EXTRA:
            population, lo, hi = EXTRA[name]
            changes["extra"][population] = float(rng.uniform(lo, hi))
    if "monocytosis" in drawn:
        changes["monocyte_fraction"] = float(rng.uniform(0.15, 0.35))
    if "eosinophilia" in drawn:
        changes["eosinophil_fraction"] = float(rng.uniform(0.40, 0.70))
        changes["blast_fraction"] = float(rng.uniform(0.005, 0.10))
    if "second_clone" in drawn:
        changes.update(_second_clone(rng, spec))
    if "missing_marker" in drawn:
        changes["drop_markers"] = (str(rng.choice(DROPPABLE)),)
    if "bits20" in drawn:
        changes["bits"] = 20
    if "scatter_gain" in drawn:
        changes["scatter_gain"] = tuple(float(2.0 ** rng.uniform(-1, 1)) for _ in range(2))
    if "no_control" in drawn:
        changes["control"] = None
    return _fit(spec, changes), drawn


def _second_clone(rng, spec):
    """A second clone differing from the first on one backbone marker, with its own CD125."""
    variant = str(rng.choice(["CD34-negative", "HLA-DR-negative", "CD45-brighter"]))
    markers = {"CD34-negative": {"CD34": None}, "HLA-DR-negative": {"HLA-DR": None}}.get(variant)
    if markers is None:
        cd45 = spec.blast_markers.get("CD45") or [3000.0, 0.12]
        markers = {"CD45": [min(cd45[0] * 2.0, 12_000.0), cd45[1]]}
    return {"clone2_fraction": float(rng.uniform(0.2, 0.5)), "clone2_markers": markers,
            "clone2_cd125_pos_fraction": float(rng.random()),
            "clone2_cd125_median": _log_uniform(rng, *CD125_RESOLVED)}


def _fit(spec, changes):
    """Apply ``changes``; the other populations shrink together to make room (monocytes by weight)."""
    monocytes = changes.pop("monocyte_fraction", None)
    spec = replace(spec, **changes)
    fixed = (spec.blast_fraction + spec.basophil_fraction + spec.eosinophil_fraction + spec.dead_fraction
             + spec.debris_fraction + spec.doublet_fraction + spec.ceiling_fraction + sum(spec.extra.values()))
    if fixed > 0.97:  # keep room for the normal populations: shrink all but the blasts
        squeeze = (0.97 - spec.blast_fraction) / (fixed - spec.blast_fraction)
        spec = replace(spec, basophil_fraction=spec.basophil_fraction * squeeze,
                       eosinophil_fraction=spec.eosinophil_fraction * squeeze,
                       dead_fraction=spec.dead_fraction * squeeze, debris_fraction=spec.debris_fraction * squeeze,
                       extra={k: v * squeeze for k, v in spec.extra.items()})
    if monocytes is not None:  # monocytes take that share of what the normal populations get
        rest = 1.0 - min(fixed, 0.97)
        share = min(monocytes / rest, 0.95)
        others = spec.lymphocyte_weight + spec.neutrophil_weight
        spec = replace(spec, monocyte_weight=others * share / (1.0 - share))
    return spec


def cohort_specs(n: int, seed: int, events: tuple[int, int] = EVENTS, confounders: bool = False) -> list[CaseSpec]:
    """``n`` specimens, the same for the same ``seed`` (and ``events`` range).

    With ``confounders``, each specimen also carries the confounders drawn for it
    (``CONFOUNDERS``); ``spec.notes`` names them.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 125_010]))
    extra = np.random.default_rng(np.random.SeedSequence([int(seed), 125_021]))
    specs = []
    for i in range(n):
        spec = cohort_spec(rng, f"cohort{seed}_{i:04d}")
        if confounders:
            spec, drawn = confounded(spec, extra)
            spec = replace(spec, notes=",".join(drawn))
        if tuple(events) != EVENTS:  # same make-up, fewer events (fast CI runs)
            lo, hi = events
            scaled = int(round(lo + (spec.n_events - EVENTS[0]) * (hi - lo) / (EVENTS[1] - EVENTS[0])))
            spec = replace(spec, n_events=scaled, control_events=scaled)
        specs.append(spec)
    return specs


def acceptable(truth: dict) -> list[str]:
    """The answers that are not confidently wrong for this case's truth.

    ``REVIEW`` always; ``MET`` / ``NOT_MET`` only on the side of 50 % the true
    fraction lies on, and never with fewer than ``min_blasts`` true blasts.
    """
    if truth["expected_criterion"] == "FAILED":
        return ["FAILED"]
    fraction = truth["true_fraction"]
    if truth["blasts"] < 200 or fraction is None:
        return ["REVIEW"]
    return ["MET" if fraction >= 0.5 else "NOT_MET", "REVIEW"]


def annotate(truth: dict, spec: CaseSpec) -> dict:
    """Add the cohort's verdict keys to a case's truth: acceptable answers, dim CD125, clear."""
    dim = spec.cd125_median < DIM_CD125_BELOW
    fraction = truth["true_fraction"]
    truth["acceptable"] = acceptable(truth)
    truth["confounders"] = [c for c in spec.notes.split(",") if c in CONFOUNDERS]
    truth["cd125_dim"] = bool(dim)
    truth["clear"] = bool(fraction is not None and truth["blasts"] >= CLEAR["blasts"] and not dim
                          and abs(fraction - 0.5) >= CLEAR["distance"])
    return truth


def write_cohort(outdir: Path | str, n: int, seed: int, events: tuple[int, int] = EVENTS, confounders: bool = False,
                 beads: bool = False) -> dict[str, dict]:
    """Write ``n`` cohort cases, ``truth.json`` and ``samples.tsv`` into ``outdir``; return the truths.

    ``beads``: with a calibration bead tube named for every case (CD125 density and its truth).
    """
    specs = cohort_specs(n, seed, events, confounders)
    if beads:
        specs = [replace(s, beads=True) for s in specs]
    truths = {s.name: annotate(write_case(outdir, s, seed), s) for s in specs}
    atomic_write_json(Path(outdir) / "truth.json", truths)
    atomic_write_text(Path(outdir) / "samples.tsv", sample_sheet(specs, truths))
    return truths
