"""One sample: a stained tube and its control tube, from FCS files to the criterion and its evidence.

This module is wiring: read both tubes, compensate and transform them, gate,
threshold CD125, measure the evidence and let ``criterion.decide`` weigh it.
``analyze_sample`` returns every intermediate value (the gated tubes, the
threshold, the ``SampleResult``); ``outputs.write_outputs`` turns them into
files. Bad input never raises out of ``analyze_sample``: it becomes a FAILED
result with the reason (a control tube that cannot be used becomes a REVIEW).
"""

import copy
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, controltube, criterion, results, tubes
from .settings import load_settings, settings_digest
from .errors import InputError
from .model import TubeAnalysis

# Exit status of `cd125gate analyze`, so that scripts tell the outcomes apart.
EXIT_STATUS = {"MET": 0, "NOT_MET": 0, "REVIEW": 3, "FAILED": 4}


@dataclass
class SampleAnalysis:
    """Everything one sample's analysis produced."""

    result: results.SampleResult
    stained: TubeAnalysis | None = None
    control: TubeAnalysis | None = None
    threshold: object = None
    compensation: object = None
    timings: dict = field(default_factory=dict)  # stage -> seconds (for the benchmark)
    threads: int = 1
    failed_stage: str | None = None              # the stage whose InputError made the result FAILED
    progress: object = None                      # called with (stage, seconds) after each stage
    # role -> compensated events, kept only until `gating.settle` has used them
    compensated: dict = field(default_factory=dict, repr=False)

    @contextmanager
    def stage(self, name):
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

    def both(self, stained_call, control_call):
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


def analyze_sample(fcs_path, control_path=None, settings=None, *, sample_id=None,
                   compensation_path=None, meta=None, threads=1, progress=None):
    """Analyse one sample; bad input ends as a FAILED result, never as an exception.

    With ``threads=2`` the two tubes are read, compensated and transformed side
    by side (numpy releases the GIL); the result is the same to the byte.
    """
    settings = settings or load_settings()
    compensation_path = compensation_path or settings.compensation.matrix
    base = results.header(sample_id or Path(fcs_path).stem,
                          _inputs(fcs_path, control_path, compensation_path),
                          _provenance(settings), asdict(settings.criterion), meta or {})
    analysis = SampleAnalysis(base, threads=threads, progress=progress)
    facts = Facts(copy.deepcopy(base.inputs))
    try:
        _run(analysis, facts, fcs_path, control_path, compensation_path, settings)
    except InputError as exc:
        analysis.result = results.failed(base, str(exc), inputs=facts.inputs,
                                         warnings=tuple(facts.warnings), qc=facts.qc)
    return analysis


def _inputs(fcs_path, control_path, compensation_path):
    def entry(path):
        return None if path is None else {"path": str(path), "sha256": None}

    return {"fcs": entry(fcs_path), "control": entry(control_path), "compensation": entry(compensation_path)}


def _provenance(settings):
    from importlib.metadata import version

    # The installed FlowKit's version, read without importing FlowKit (about a second).
    return {"cd125gate_version": __version__, "config_digest": settings_digest(settings),
            "flowkit_version": version("flowkit")}


def _run(analysis, facts, fcs_path, control_path, compensation_path, settings):
    with analysis.stage("read"):
        stained_fcs, control_fcs, markers, control_problem = _read_inputs(
            analysis, facts, fcs_path, control_path, compensation_path, settings)
    with analysis.stage("compensate_transform"):
        analysis.stained, analysis.control, analysis.compensated = tubes.prepare(
            stained_fcs, control_fcs, markers, analysis.compensation, settings, analysis.both)
    with analysis.stage("gate"):
        _gate(analysis, settings)
    with analysis.stage("threshold_statistics"):
        evidence = _measure(analysis, facts, settings, control_problem)
        verdict = criterion.decide(evidence, settings)
        analysis.result = results.decided(analysis.result, verdict, evidence, analysis.stained,
                                          analysis.control, analysis.threshold, warnings=facts.warnings,
                                          inputs=facts.inputs, qc=facts.qc,
                                          internal_controls=facts.internal_controls)


def _read_inputs(analysis, facts, fcs_path, control_path, compensation_path, settings):
    """Read both tubes, find the markers and the compensation; say why a control cannot be used."""
    from . import compensation, panel, plausibility
    from .fcs import read_fcs

    stained, control = analysis.both(lambda: read_fcs(fcs_path), lambda: controltube.read(control_path))
    facts.inputs["fcs"]["sha256"] = stained.sha256
    facts.warnings += [f"stained tube: {w}" for w in stained.warnings]
    markers = panel.resolve_markers(stained.channels, settings.panel, fcs_path)
    analysis.compensation = compensation.choose_matrix(
        stained, compensation_path, settings.compensation.allow_uncompensated)
    facts.qc["compensation"] = analysis.compensation.source
    if compensation_path is not None:
        facts.inputs["compensation"]["sha256"] = _sha256(compensation_path)
    controltube.refuse_same_tube(stained, control, control_path)
    if control is not None and not isinstance(control, InputError):
        facts.inputs["control"]["sha256"] = control.sha256
        facts.warnings += [f"control tube: {w}" for w in control.warnings]
    control, problem = controltube.usable(control, control_path, markers, settings.panel)
    facts.implausible = plausibility.check(stained, control, markers, settings.panel.required)
    return stained, control, markers, problem


def _gate(analysis, settings):
    from . import gating

    gating.find_gates(analysis.stained, settings)
    if analysis.stained.step("blasts").count == 0:
        raise InputError(analysis.stained.fcs.path, "gating found no blasts")
    if analysis.control is not None:
        gating.apply_template(analysis.control, analysis.stained, settings)


def _measure(analysis, facts, settings, control_problem):
    """Threshold CD125, count positive blasts, and gather the evidence the criterion weighs."""
    from . import checks, gating, threshold

    stained, control = analysis.stained, analysis.control
    cut = threshold.choose(stained, control, stained.scales[stained.markers["CD125"]], settings.threshold)
    if cut is None:
        raise InputError(stained.fcs.path, "no CD125 threshold: no usable control tube and no fallback")
    analysis.threshold = cut
    for tube in filter(None, (stained, control)):
        gating.cd125_positive(tube, cut)
        gating.settle(tube, analysis.compensated.pop(tube.role))
    time_removed = tuple((t.role, t.time_qc.removed_fraction) for t in filter(None, (stained, control))
                         if t.time_qc is not None)
    facts.qc.update({f"{role}_time_removed_fraction": removed for role, removed in time_removed})
    blasts, positive = stained.step("blasts").count, stained.step("cd125_pos").count
    doubts, facts.internal_controls = checks.all_checks(stained, control, cut, settings)
    return criterion.Evidence(
        blasts=blasts, positive=positive, threshold_method=cut.method,
        uncompensated=analysis.compensation.source == "none", control_used=control is not None,
        control_problem=control_problem, implausible=tuple(facts.implausible), time_removed=time_removed,
        blast_share=_blast_shares(stained, control) if control is not None else None,
        overlap=threshold.overlap(stained, control, cut, positive / blasts, settings.threshold),
        gating_doubts=tuple(doubts), gating_flags=tuple(stained.flags))


def _blast_shares(stained, control):
    """(stained, control) share of blasts among leukocytes: a control of the same specimen matches."""
    def share(tube):
        leukocytes = tube.step("leukocytes").count
        return tube.step("blasts").count / leukocytes if leukocytes else 0.0

    return share(stained), share(control)


def _sha256(path):
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None


# -- command line ----------------------------------------------------------------------------

def add_arguments(parser):
    parser.epilog = ("exit status: 0 MET or NOT_MET, 3 REVIEW, 4 FAILED (the result is written for each); "
                     "2 an input that cannot be read or analysed at all (one line on stderr). "
                     "--exit-zero: 0 for every written result, as a batch needs.")
    parser.add_argument("fcs", help="stained tube (FCS)")
    parser.add_argument("--control", help="control tube (FMO or isotype), gated the same way")
    parser.add_argument("--out", required=True, help="output folder for this sample")
    parser.add_argument("--sample-id", help="sample id (default: the FCS file name)")
    parser.add_argument("--config", help="settings YAML (its `analysis:` block, or the whole file)")
    parser.add_argument("--compensation", help="spillover matrix CSV overriding the file's own")
    parser.add_argument("--patient-id")
    parser.add_argument("--specimen")
    parser.add_argument("--notes")
    parser.add_argument("--plot-formats", default="png",
                        help="comma-separated figure formats: png (always), svg, pdf")
    parser.add_argument("--threads", type=int, default=1,
                        help="2 or more: read, compensate and transform the two tubes side by side")
    parser.add_argument("--exit-zero", action="store_true",
                        help="exit 0 whenever a result was written, FAILED and REVIEW included (workflow jobs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args):
    from .outputs import plot_formats, write_outputs

    formats = plot_formats(args.plot_formats)
    settings = load_settings(args.config)
    meta = {"patient_id": args.patient_id, "specimen": args.specimen, "notes": args.notes}
    try:
        analysis = analyze_sample(args.fcs, args.control, settings, sample_id=args.sample_id,
                                  compensation_path=args.compensation, meta=meta, threads=args.threads,
                                  progress=None if args.quiet else _progress)
        bad_inputs = analysis.failed_stage == "read" and not args.exit_zero
        result = write_outputs(analysis, args.out, formats,
                               progress=None if args.quiet or bad_inputs else _progress)
    except InputError:
        raise  # bad input or an unwritable folder: one line (cli.main), never a traceback
    except Exception as exc:
        if not args.exit_zero:
            raise  # the bench: the traceback is the bug report
        # A batch: the bug is this sample's FAILED row, and the other samples still get
        # their table. The traceback goes to the job log, where the reason points.
        import traceback

        traceback.print_exc(file=sys.stderr)
        bad_inputs = False
        result = write_outputs(_crashed(args, settings, meta, exc), args.out, formats)
    if bad_inputs:
        # The inputs themselves are bad (missing, unreadable, no CD125...): a one-line error.
        print(f"cd125gate: {result.reasons[0]}", file=sys.stderr)
        return 2
    print(results.summary_line(result))
    if not args.quiet:
        print(f"results: {Path(args.out) / 'result.json'} (figures and gates beside it)", file=sys.stderr)
    return 0 if args.exit_zero else EXIT_STATUS[result.criterion]


def _crashed(args, settings, meta, exc):
    """A FAILED analysis of nothing but the crash: what it was, and where its traceback is."""
    from .errors import one_line

    what = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if len(what) > 200:  # the job log holds all of it
        what = what[:200] + "..."
    base = results.header(args.sample_id or Path(args.fcs).stem,
                          _inputs(args.fcs, args.control, args.compensation or settings.compensation.matrix),
                          _provenance(settings), asdict(settings.criterion), meta)
    return SampleAnalysis(results.failed(base, f"cd125gate crashed ({what}); see the job log — please report"))


def _progress(stage, seconds):
    print(f"  {stage:<22} {seconds:6.2f} s", file=sys.stderr, flush=True)
