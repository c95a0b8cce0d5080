"""Simulated cases with known truth: a specimen's stained and control tubes, their truth, the files.

No public CD125-stained leukemia data exist, so cd125gate's accuracy tests,
README demo and benchmarks run on cases simulated here. The cells come from
``specimen``, the instrument that measures them from
``instrument``; this module puts a case together, says what the
analysis should conclude from it, and writes its files, ``truth.json`` and a
sample sheet. See docs/simulator.md for the populations and the numbers chosen.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.io.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from cd125gate.simulation.beads import abc_truth, write_beads
from cd125gate.simulation.instrument import POSITIVE_BLASTS, SimulatedTube, spillover_matrix, tube_bytes
from cd125gate.simulation.specimen import OPTIONAL_FIELDS, CaseSpec, simulate_tube

if TYPE_CHECKING:
    from cd125gate.settings import Settings



def expected_criterion(spec: CaseSpec, blasts: int, positives: int,
                       settings: Settings | None = None) -> tuple[str, str]:
    """What cd125gate's own ``criterion.decide`` concludes from the true counts: (criterion, reason).

    FAILED without a CD125 channel or with an unreadable file; otherwise the
    decision of perfect gating: the true blasts and true CD125+ blasts weighed
    by the same rules, and settings, as a real tube. (How far a real count may
    stray from the truth is the benchmarks' business: ``cohort.acceptable``.)
    """
    if spec.drop_cd125_channel:
        return "FAILED", "the stained tube has no CD125 channel"
    if spec.corrupt:
        return "FAILED", "the stained FCS file is truncated"
    from cd125gate.analysis.criterion import decide_counts
    from cd125gate.settings import load_settings

    verdict = decide_counts(positives, blasts, settings or load_settings())
    if verdict.reasons:
        return verdict.criterion, "; ".join(verdict.reasons)
    return verdict.criterion, f"true fraction {positives / blasts:.3f} at {blasts} blasts"


def simulate_case(spec: CaseSpec, seed: int) -> tuple[SimulatedTube, SimulatedTube | None, dict]:
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


def case_truth(spec: CaseSpec, seed: int, stained: SimulatedTube, control: SimulatedTube | None) -> dict:
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


def write_case(outdir: Path | str, spec: CaseSpec, seed: int, *, fmt: str | None = None) -> dict:
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
        write_beads(outdir, seed=seed)
    return truth


def write_set(outdir: Path | str, specs: list[CaseSpec], seed: int, *,
              fmt: str | None = None) -> dict[str, dict]:
    """Write the cases, ``truth.json`` (one object per case) and the sample sheet ``samples.tsv``."""
    truths = {spec.name: write_case(outdir, spec, seed, fmt=fmt) for spec in specs}
    atomic_write_json(Path(outdir) / "truth.json", truths)
    atomic_write_text(Path(outdir) / "samples.tsv", sample_sheet(specs, truths))
    return truths


def sample_sheet(specs: list[CaseSpec], truths: dict[str, dict]) -> str:
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


def default_cases(n_events: int = 5000, control_events: int = 4000) -> list[CaseSpec]:
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


__all__ = [
    "CaseSpec",
    "SimulatedTube",
    "default_cases",
    "expected_criterion",
    "simulate_case",
    "spillover_matrix",
    "tube_bytes",
    "write_case",
    "write_set",
]