"""One sample: a stained tube and its control tube, from FCS files to the criterion and its evidence.

This module is wiring: read both tubes, compensate and transform them, gate,
threshold CD125, measure the evidence and let ``criterion.decide`` weigh it.
``analyze_sample`` returns every intermediate value (the gated tubes, the
threshold, the ``SampleResult``); ``outputs.write_outputs`` turns them into
files. Bad input never raises out of ``analyze_sample``: it becomes a FAILED
result with the reason (a control tube that cannot be used becomes a REVIEW).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cd125gate import results
from cd125gate.analysis import controltube, criterion, tubes
from cd125gate.analysis.antigen import assay
from cd125gate.analysis.model import TubeAnalysis
from cd125gate.errors import InputError
from cd125gate.io.fileio import sha256_file
from cd125gate.settings import load_settings, settings_digest
from cd125gate.version import __version__

if TYPE_CHECKING:
    import numpy as np

    from cd125gate.analysis.antigen.beads import Density
    from cd125gate.analysis.compensation import Compensation
    from cd125gate.analysis.model import Threshold
    from cd125gate.settings import Settings

A = TypeVar("A")
B = TypeVar("B")


@dataclass
class SampleAnalysis:
    """Everything one sample's analysis produced."""

    result: results.SampleResult
    stained: TubeAnalysis | None = None
    control: TubeAnalysis | None = None
    threshold: Threshold | None = None
    compensation: Compensation | None = None
    timings: dict = field(default_factory=dict)  # stage -> seconds (for the benchmark)
    threads: int = 1
    failed_stage: str | None = None              # the stage whose InputError made the result FAILED
    progress: Callable[[str, float], None] | None = None  # called with (stage, seconds) after each stage
    meta: dict = field(default_factory=dict)     # the sample sheet's fields of this sample
    density: Density | None = None               # beads.Density when the sheet named a bead tube
    allocate: Callable[[tuple[int, int]], np.ndarray] | None = None  # allocate(shape): where the tubes' events are made

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except InputError:
            self.failed_stage = self.failed_stage or name
            raise
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        if self.progress is not None:  # only stages that finished: an error stays one line
            self.progress(name, self.timings[name])

    def both(self, stained_call: Callable[[], A], control_call: Callable[[], B]) -> tuple[A, B]:
        """``(stained_call(), control_call())``, side by side when ``threads`` > 1."""
        if self.threads < 2:
            return stained_call(), control_call()
        with ThreadPoolExecutor(1) as pool:
            control = pool.submit(control_call)
            return stained_call(), control.result()


@dataclass
class Facts:
    """What is known about the inputs so far; a FAILED result keeps it."""

    inputs: dict
    warnings: list = field(default_factory=list)
    qc: dict = field(default_factory=dict)
    implausible: list = field(default_factory=list)  # plausibility doubts (REVIEW)
    internal_controls: dict | None = None            # CD125 of populations that carry it or not
    clones: tuple = ()                               # per blast clone: phenotype, coverage, CD125+
    assay: dict | None = None                        # acquisition and reagent metadata


def analyze_sample(fcs_path: Path | str, control_path: Path | str | None = None, settings: Settings | None = None,
                   *, sample_id: str | None = None, compensation_path: Path | str | None = None,
                   meta: dict | None = None, threads: int = 1, progress: Callable[[str, float], None] | None = None,
                   beads: Path | str | None = None, bead_lot: Path | str | None = None,
                   allocate: Callable[[tuple[int, int]], np.ndarray] | None = None) -> SampleAnalysis:
    """Analyse one sample; bad input ends as a FAILED result, never as an exception.

    ``compensation_path`` is this sample's matrix CSV, or the word ``precompensated``
    (its events are already compensated); either wins over the settings' ``compensation``.
    With ``threads=2`` the two tubes are read, compensated and transformed side
    by side (numpy releases the GIL); the result is the same to the byte.
    ``beads`` (a calibration bead tube) and ``bead_lot`` (its lot file; default the
    settings' ``beads``) add the CD125 density; beads that cannot be used withhold it,
    they never fail the sample. ``allocate(shape)``: where each tube's transformed events
    are made (default ``numpy.empty``; a `figure_worker.FigureWorker`'s ``allocate`` lets the
    worker see them without a copy).
    """
    settings = settings or load_settings()
    compensation_path, declared = compensation_choice(compensation_path, settings)
    base = result_header(fcs_path, control_path, compensation_path, settings, sample_id, meta)
    analysis = SampleAnalysis(base, threads=threads, progress=progress, meta=meta or {}, allocate=allocate)
    facts = Facts(copy.deepcopy(base.inputs))
    try:
        _run(analysis, facts, fcs_path, control_path, (compensation_path, declared), settings)
        if beads is not None:
            with analysis.stage("beads"):
                _density(analysis, beads, bead_lot, settings)
    except InputError as exc:
        reason = str(exc)
        if analysis.failed_stage in ("gate", "threshold_statistics") and not exc.problem.startswith("margins:"):
            from cd125gate.analysis.gating.ceiling import failure_note

            reason += failure_note(analysis.stained)
        analysis.result = results.failed(base, reason, inputs=facts.inputs,
                                         warnings=tuple(facts.warnings), qc=facts.qc, assay=facts.assay)
    return analysis


def compensation_choice(compensation: Path | str | None, settings: Settings) -> tuple[Path | str | None, str | None]:
    """(matrix CSV or None, where the data were declared precompensated or None) of one sample.

    ``compensation`` is the sample's own choice (a matrix CSV, the word ``precompensated``,
    or None); without one, the settings' ``compensation.matrix`` / ``precompensated`` apply.
    """
    from cd125gate.analysis.compensation import PRECOMPENSATED

    if compensation is not None and str(compensation) == PRECOMPENSATED:
        return None, "declared for this sample (compensation: precompensated)"
    if compensation is not None:
        return compensation, None
    if settings.compensation.precompensated:
        return None, "declared in the settings (compensation.precompensated)"
    return settings.compensation.matrix, None


def result_header(fcs_path: Path | str, control_path: Path | str | None, compensation_path: Path | str | None,
                  settings: Settings, sample_id: str | None = None, meta: dict | None = None) -> results.SampleResult:
    """The FAILED-until-decided result of a sample: who it is, its inputs and provenance."""
    return results.header(sample_id or Path(fcs_path).stem, _inputs(fcs_path, control_path, compensation_path),
                          _provenance(settings), asdict(settings.criterion), meta or {})


def _inputs(fcs_path, control_path, compensation_path):
    from cd125gate.analysis.compensation import PRECOMPENSATED

    def entry(path):
        # The word `precompensated` declares the data compensated: it names no file.
        return None if path is None or str(path) == PRECOMPENSATED else {"path": str(path), "sha256": None}

    return {"fcs": entry(fcs_path), "control": entry(control_path), "compensation": entry(compensation_path)}


def _provenance(settings):
    from importlib.metadata import version

    # The installed FlowKit's version, read without importing FlowKit (about a second).
    return {"cd125gate_version": __version__, "config_digest": settings_digest(settings),
            "flowkit_version": version("flowkit")}


def _run(analysis, facts, fcs_path, control_path, compensation, settings):
    with analysis.stage("read"):
        stained_fcs, control_fcs, markers, control_problem = _read_inputs(
            analysis, facts, fcs_path, control_path, compensation, settings)
    with analysis.stage("compensate_transform"):
        analysis.stained, analysis.control = tubes.prepare(
            stained_fcs, control_fcs, markers, analysis.compensation, settings, analysis.both, analysis.allocate)
    with analysis.stage("gate"):
        _gate(analysis, settings)
    with analysis.stage("threshold_statistics"):
        evidence = _measure(analysis, facts, settings, control_problem)
        verdict = criterion.decide(evidence, settings)
        analysis.result = results.decided(analysis.result, verdict, evidence, analysis.stained,
                                          analysis.control, analysis.threshold, warnings=facts.warnings,
                                          inputs=facts.inputs, qc=facts.qc,
                                          internal_controls=facts.internal_controls, assay=facts.assay,
                                          clones=facts.clones)


def _read_inputs(analysis, facts, fcs_path, control_path, choice, settings):
    """Read both tubes, find the markers and the compensation; say why a control cannot be used.

    :param choice: ``compensation_choice``'s (matrix CSV or None, declared precompensated where or None)
    """
    from cd125gate.analysis import compensation, panel, plausibility
    from cd125gate.io.fcs import read_fcs

    compensation_path, declared = choice
    stained, control = analysis.both(lambda: read_fcs(fcs_path), lambda: controltube.read(control_path))
    facts.inputs["fcs"]["sha256"] = stained.sha256
    facts.assay = assay.record(stained.keywords, settings.panel.cd125_reagent, analysis.meta)
    facts.warnings += [f"stained tube: {w}" for w in stained.warnings]
    markers = panel.resolve_markers(stained.channels, settings.panel, fcs_path)
    analysis.compensation = compensation.choose_matrix(
        stained, compensation_path, settings.compensation.allow_uncompensated, declared)
    facts.qc["compensation"] = analysis.compensation.source
    if compensation_path is not None:
        facts.inputs["compensation"]["sha256"] = sha256_file(compensation_path)
    controltube.refuse_same_tube(stained, control.fcs, control_path)
    if control.fcs is not None:
        facts.inputs["control"]["sha256"] = control.fcs.sha256
        facts.warnings += [f"control tube: {w}" for w in control.fcs.warnings]
    if analysis.compensation.source == compensation.PRECOMPENSATED and declared is None \
            and control.fcs is not None and compensation.prior_compensation(control.fcs) is None:
        # The stained tube says it is compensated; a control that does not may be raw data.
        facts.warnings.append("control tube: no sign of prior compensation in the file, unlike the "
                              f"stained tube ({analysis.compensation.detail}); used as it is")
    control, problem = controltube.usable(control, control_path, markers, settings.panel)
    facts.implausible = plausibility.check(stained, control, markers, settings.panel.required,
                                           settings.qc.margin_fraction, analysis.both)
    return stained, control, markers, problem


def _gate(analysis, settings):
    from cd125gate.analysis.gating import hierarchy

    hierarchy.find_gates(analysis.stained, settings, analysis.control, analysis.both)


def _measure(analysis, facts, settings, control_problem):
    """Threshold CD125, count positive blasts, and gather the evidence the criterion weighs."""
    from cd125gate.analysis import checks, threshold
    from cd125gate.analysis.gating import ceiling
    from cd125gate.analysis.gating.blastgate import cd125_positive
    from cd125gate.analysis.gating.boundaries import settle_in_place

    stained, control = analysis.stained, analysis.control
    cut = threshold.choose(stained, control, stained.scales[stained.markers["CD125"]], settings.threshold)
    if cut is None:
        raise InputError(stained.fcs.path, "no CD125 threshold: no usable control tube and no fallback")
    analysis.threshold = cut
    for tube in filter(None, (stained, control)):
        tube.steps.append(cd125_positive(tube, cut))
    analysis.both(lambda: settle_in_place(stained, analysis.compensation),
                  lambda: settle_in_place(control, analysis.compensation) if control is not None else 0)
    time_removed = tuple((t.role, t.time_qc.removed_fraction) for t in filter(None, (stained, control))
                         if t.time_qc is not None)
    facts.qc.update({f"{role}_time_removed_fraction": removed for role, removed in time_removed})
    blasts, positive = stained.step("blasts").count, stained.step("cd125_pos").count
    # Two independent readings of the gated tubes, side by side (the overlap sorts every blast's CD125).
    (doubts, facts.internal_controls, facts.clones, clone_flags), overlap = analysis.both(
        lambda: checks.all_checks(stained, control, cut, settings),
        lambda: threshold.overlap(stained, control, cut, positive / blasts, settings.threshold) if blasts else None)
    at_ceiling = [ceiling.findings(tube) for tube in filter(None, (stained, control))]
    return criterion.Evidence(
        blasts=blasts, positive=positive, threshold_method=cut.method,
        uncompensated=analysis.compensation.source == "none", control_used=control is not None,
        precompensated=(analysis.compensation.detail
                        if analysis.compensation.source == "precompensated" else None),
        control_problem=control_problem, implausible=tuple(facts.implausible), time_removed=time_removed,
        ceiling_doubts=tuple(r for reasons, _ in at_ceiling for r in reasons),
        ceiling_flags=tuple(f for _, flags in at_ceiling for f in flags),
        blast_share=_blast_shares(stained, control) if control is not None else None,
        overlap=overlap,
        gating_doubts=tuple(doubts), gating_flags=tuple(stained.flags) + tuple(clone_flags))


def _density(analysis, beads_path, lot_path, settings):
    from cd125gate.analysis.antigen.beads import measure

    dye = (analysis.result.assay or {}).get("cd125_fluorochrome")
    analysis.density = measure(analysis.stained, analysis.control, beads_path, lot_path, settings, dye)
    analysis.result = analysis.result.replace(density=analysis.density.record)


def _blast_shares(stained, control):
    """(stained, control) share of blasts among leukocytes: a control of the same specimen matches."""
    def share(tube):
        leukocytes = tube.step("leukocytes").count
        return tube.step("blasts").count / leukocytes if leukocytes else 0.0

    return share(stained), share(control)
