"""One sample: a stained tube and its control tube, from FCS files to the criterion and its evidence.

``analyze_sample`` returns every intermediate value (the gated tubes, the
threshold, the result dict); ``write_outputs`` turns them into files. Bad
input never raises out of ``analyze_sample``: it becomes a FAILED (or, for a
control tube that cannot be used, a REVIEW) result with the reason.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .config import config_digest, load_config
from .errors import InputError
from .model import GATE_ORDER, TubeAnalysis

OUTPUTS = {"result": "result.json", "gates": "gates.xml", "counts": "gate_counts.tsv"}


@dataclass
class SampleAnalysis:
    """Everything one sample's analysis produced."""

    result: dict
    stained: TubeAnalysis | None = None
    control: TubeAnalysis | None = None
    threshold: object = None
    compensation: object = None
    timings: dict = field(default_factory=dict)  # stage -> seconds (for the benchmark)
    threads: int = 1
    # role -> compensated events, kept only until `gating.settle` has used them
    compensated: dict = field(default_factory=dict, repr=False)

    @contextmanager
    def stage(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def both(self, stained_call, control_call):
        """``(stained_call(), control_call())``, side by side when ``threads`` > 1."""
        if self.threads < 2:
            return stained_call(), control_call()
        with ThreadPoolExecutor(1) as pool:
            control = pool.submit(control_call)
            return stained_call(), control.result()


def analyze_sample(fcs_path, control_path=None, config=None, *, sample_id=None,
                   compensation_path=None, meta=None, threads=1):
    """Analyse one sample; bad input ends as a FAILED result, never as an exception.

    With ``threads=2`` the two tubes are read, compensated and transformed side
    by side (numpy releases the GIL); the result is the same to the byte.
    """
    config = config or load_config()
    compensation_path = compensation_path or config["compensation"]["matrix"]
    result = _skeleton(fcs_path, control_path, compensation_path, config, sample_id, meta or {})
    analysis = SampleAnalysis(result, threads=threads)
    try:
        _run(analysis, fcs_path, control_path, compensation_path, config)
    except InputError as exc:
        _fail(result, str(exc))
    return analysis


def _skeleton(fcs_path, control_path, compensation_path, config, sample_id, meta):
    import flowkit

    def file_entry(path):
        return None if path is None else {"path": str(path), "sha256": None}

    return {
        "schema_version": "1",
        "sample_id": sample_id or Path(fcs_path).stem,
        "patient_id": meta.get("patient_id"),
        "specimen": meta.get("specimen"),
        "notes": meta.get("notes"),
        "criterion": "FAILED", "reasons": [], "flags": [], "warnings": [],
        "cd125_pos_fraction": None, "ci_low": None, "ci_high": None,
        "blast_events": None, "cd125_pos_events": None,
        "criterion_settings": config["criterion"],
        "threshold": None, "cd125_median": None, "gates": [], "control_gates": None, "qc": {},
        "inputs": {"fcs": file_entry(fcs_path), "control": file_entry(control_path),
                   "compensation": file_entry(compensation_path)},
        "provenance": {"cd125gate_version": __version__, "config_digest": config_digest(config),
                       "flowkit_version": flowkit.__version__},
    }


def _fail(result, reason):
    result["criterion"] = "FAILED"
    result["reasons"].append(reason)


def _run(analysis, fcs_path, control_path, compensation_path, config):
    with analysis.stage("read"):
        stained_fcs, control_fcs, markers, doubts = _read_inputs(
            analysis, fcs_path, control_path, compensation_path, config)
    with analysis.stage("compensate_transform"):
        _prepare(analysis, stained_fcs, control_fcs, markers, config)
    with analysis.stage("gate"):
        _gate(analysis, config)
    with analysis.stage("threshold_statistics"):
        _decide(analysis, config, doubts)


def _read_inputs(analysis, fcs_path, control_path, compensation_path, config):
    """Read both tubes, find the markers and the compensation; note what puts the answer in doubt."""
    from . import compensation, panel
    from .fcs import read_fcs

    result = analysis.result
    stained, control = analysis.both(lambda: read_fcs(fcs_path), lambda: _try_read(control_path))
    result["inputs"]["fcs"]["sha256"] = stained.sha256
    result["warnings"] += [f"stained tube: {w}" for w in stained.warnings]
    markers = panel.resolve_markers(stained.channels, config["panel"], fcs_path)
    analysis.compensation = compensation.choose_matrix(
        stained, compensation_path, config["compensation"]["allow_uncompensated"])
    result["qc"]["compensation"] = analysis.compensation.source
    if compensation_path is not None:
        result["inputs"]["compensation"]["sha256"] = _sha256(compensation_path)
    doubts = []
    if analysis.compensation.source == "none":
        doubts.append("no compensation matrix: the tube was analysed uncompensated")
        result["flags"].append("uncompensated")
    control = _usable_control(control, control_path, markers, config, result, doubts)
    return stained, control, markers, doubts


def _prepare(analysis, stained_fcs, control_fcs, markers, config):
    """Compensate both tubes with one matrix and transform them with the stained tube's scales.

    The control shares the stained tube's scales so that its CD125 values,
    and so the threshold, are on the same axis.
    """
    from . import compensation, panel, transforms

    comp = analysis.compensation
    minimum = config["gating"]["min_events"]
    if len(stained_fcs.events) < minimum:
        raise InputError(stained_fcs.path, f"only {len(stained_fcs.events)} events; "
                                           f"at least {minimum} are needed")

    def compensate_control():
        if control_fcs is None:
            return None
        if comp.source != "none":
            compensation.validate_matrix(comp.channels, comp.matrix, control_fcs.channel_names(),
                                         control_fcs.path)
        return compensation.compensate(control_fcs.events, control_fcs.channel_names(), comp)

    compensated = analysis.both(
        lambda: compensation.compensate(stained_fcs.events, stained_fcs.channel_names(), comp),
        compensate_control)
    fluor = panel.fluorescence_channels(stained_fcs.channels, markers)
    ranges = {c.name: c.range for c in stained_fcs.channels}
    scales = transforms.make_scales(compensated[0], stained_fcs.channel_names(), fluor, ranges, config)
    stained, control = analysis.both(
        lambda: _tube("stained", stained_fcs, compensated[0], markers, scales, comp),
        lambda: control_fcs and _tube("control", control_fcs, compensated[1], markers, scales, comp))
    analysis.stained, analysis.compensated["stained"] = stained
    if control is not None:
        analysis.control, analysis.compensated["control"] = control


def _gate(analysis, config):
    from . import gating

    gating.find_gates(analysis.stained, config)
    if analysis.stained.step("blasts").count == 0:
        raise InputError(analysis.stained.fcs.path, "gating found no blasts")
    if analysis.control is not None:
        gating.apply_template(analysis.control, analysis.stained, config)


def _decide(analysis, config, doubts):
    """Threshold CD125, count positive blasts, and decide the criterion."""
    from . import checks, gating, stats, threshold

    stained, control, result = analysis.stained, analysis.control, analysis.result
    cd125_scale = stained.scales[stained.markers["CD125"]]
    cut, flags = threshold.choose(stained, control, cd125_scale, config["threshold"])
    result["flags"] += flags
    if cut is None:
        raise InputError(stained.fcs.path, "no CD125 threshold: no usable control tube and no fallback")
    analysis.threshold = cut
    for tube in filter(None, (stained, control)):
        gating.cd125_positive(tube, cut)
        gating.settle(tube, analysis.compensated.pop(tube.role))
    doubts += _qc_doubts(stained, control, config, result)
    blasts, positive = stained.step("blasts").count, stained.step("cd125_pos").count
    overlap = threshold.overlap(stained, control, cut, positive / blasts, config["threshold"])
    doubts += _overlap_doubts(overlap, positive / blasts, config["criterion"]["positive_fraction"], result)
    checked, result["internal_controls"] = checks.all_checks(stained, control, cut, config)
    doubts += checked
    criterion, fraction, low, high, reasons = stats.decide(positive, blasts, config["criterion"], doubts)
    result.update(criterion=criterion, reasons=reasons, cd125_pos_fraction=fraction,
                  ci_low=low, ci_high=high, blast_events=blasts, cd125_pos_events=positive,
                  cd125_median=_medians(stained, control), gates=gate_table(stained),
                  control_gates=gate_table(control) if control is not None else None)
    result["threshold"] = {"method": cut.method, "value": cut.value, "value_raw": cut.value_raw,
                           "percentile": cut.percentile, "reference_events": cut.reference_events,
                           "description": cut.description, "overlap": overlap}
    result["flags"] += stained.flags


def _try_read(path):
    """The FCS file at ``path`` (None without a path), or the InputError that refused it."""
    from .fcs import read_fcs

    if path is None:
        return None
    try:
        return read_fcs(path)
    except InputError as exc:
        return exc


def _usable_control(control, control_path, markers, config, result, doubts):
    """The control tube as read, or None (with the reason as a REVIEW doubt) when it cannot be used."""
    if control is None:
        return None
    try:
        if isinstance(control, InputError):
            raise control
        result["inputs"]["control"]["sha256"] = control.sha256
        problem = _control_mismatch(control, markers, config["panel"])
    except InputError as exc:
        doubts.append(f"control tube unusable: {exc}")
        return None
    result["warnings"] += [f"control tube: {w}" for w in control.warnings]
    if problem:
        doubts.append(f"control tube unusable: {control_path}: {problem}")
        return None
    return control


def _control_mismatch(control, markers, panel_config):
    """Why the control cannot be gated like the stained tube, or None.

    The control must hold the stained tube's channels. Its CD125 channel
    carries no anti-CD125 (FMO) or an isotype, so its $PnS differs by design;
    every other marker must not sit on another channel.
    """
    from . import panel

    names = control.channel_names()
    missing = sorted({ch for ch in markers.values() if ch not in names})
    if missing:
        return f"channel(s) {', '.join(missing)} of the stained tube missing"
    own = panel.resolve_markers(control.channels, dict(panel_config, required=[]), control.path)
    moved = sorted(m for m in markers if m != "CD125" and m in own and own[m] != markers[m])
    if moved:
        return f"marker(s) {', '.join(moved)} on other channels than in the stained tube"
    return None


def _tube(role, fcs, compensated, markers, scales, comp):
    """A TubeAnalysis of compensated events, transformed fast (see `gating.settle`).

    Returns the tube and its compensated events, columns as the tube's channels.
    """
    from . import transforms

    names = fcs.channel_names()
    missing = [c for c in scales if c not in names]
    if missing:
        raise InputError(fcs.path, f"channel(s) {', '.join(missing)} missing")
    if list(scales) != names:
        compensated = compensated[:, [names.index(c) for c in scales]]
    data = transforms.apply_scales(compensated, list(scales), scales, fast=True)
    tube = TubeAnalysis(role, fcs, list(scales), markers, data, scales, [], compensation=comp.source)
    return tube, compensated


def _qc_doubts(stained, control, config, result):
    """QC findings that put the number itself in doubt (each sends the result to REVIEW)."""
    doubts = []
    limit = config["qc"]["max_removed_fraction"]
    for tube in filter(None, (stained, control)):
        if tube.time_qc is None:
            continue
        removed = tube.time_qc.removed_fraction
        result["qc"][f"{tube.role}_time_removed_fraction"] = removed
        if removed > limit:
            doubts.append(f"time QC removed {removed:.0%} of the {tube.role} tube's events "
                          f"(more than {limit:.0%})")
        elif removed > 0:
            result["flags"].append(f"time QC removed {removed:.1%} of the {tube.role} tube's events")
    if control is not None:
        doubts += _control_consistency(stained, control, config["qc"]["max_control_blast_share_ratio"])
    return doubts


def _overlap_doubts(overlap, fraction, needed, result):
    """Dim CD125 under the cut-off: REVIEW where the missed positives could reach MET, else a flag.

    Below ``needed``, a significant shortfall against cumulative subtraction, or
    cumulative subtraction alone reaching ``needed``, withholds the NOT_MET.
    """
    if overlap is None:
        return []
    share = overlap["cumulative_subtraction"]
    finding = (f"CD125 overlaps the control: {fraction:.1%} of blasts are above the cut-off, "
               f"but cumulative subtraction shows at least {share:.1%} brighter than the control's blasts")
    if fraction < needed and (overlap["missed"] or share >= needed):
        return [finding + "; dim CD125+ blasts lie under the threshold"]
    if overlap["missed"]:
        result["flags"].append(finding + "; the fraction is a lower bound")
    return []


def _control_consistency(stained, control, max_ratio):
    """A control from the same specimen has about the same share of blasts among leukocytes."""
    def share(tube):
        leukocytes = tube.step("leukocytes").count
        return tube.step("blasts").count / leukocytes if leukocytes else 0.0

    s, c = share(stained), share(control)
    if c == 0 or not 1 / max_ratio <= s / c <= max_ratio:
        return [f"blasts are {s:.1%} of leukocytes in the stained tube but {c:.1%} in the control tube: "
                "the control may be from another specimen, or the gates may not fit it"]
    return []


def _medians(stained, control):
    """Median CD125 of blasts in compensated raw units, stained and control, and their ratio."""
    def median(tube):
        if tube is None:
            return None
        ch = tube.markers["CD125"]
        values = tube.column(ch)[tube.step("blasts").mask]
        return float(tube.scales[ch].inverse(np.array([np.median(values)]))[0]) if values.size else None

    s, c = median(stained), median(control)
    ratio = s / c if s is not None and c is not None and c > 0 else None
    return {"stained": s, "control": c, "ratio": ratio}


def gate_table(tube):
    """Counts of every gate of a tube, in hierarchy order."""
    rank = {name: i for i, name in enumerate(GATE_ORDER)}
    steps = sorted(tube.steps, key=lambda s: (rank.get(s.name, len(rank)), s.name))
    return [{"name": s.name, "parent": s.parent, "count": s.count, "parent_count": s.parent_count,
             "percent_of_parent": round(s.percent_of_parent, 4), "note": s.note,
             "exclusion": s.exclusion} for s in steps]


def _sha256(path):
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None


# -- outputs ---------------------------------------------------------------------------------

def write_outputs(analysis, out_dir, formats=("png",)):
    """Write result.json, gates.xml (+ control_gates.xml), gate_counts.tsv and the QC figure.

    Every file is written atomically, and result.json last, so a sample whose
    result.json exists is complete. A FAILED sample gets the same files (an
    empty Gating-ML, a figure stating the reason) so a batch always finds them.
    """
    from . import gatingml, plots
    from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    result = analysis.result
    outputs = dict(OUTPUTS)
    gated = analysis.stained is not None and analysis.stained.steps and result["gates"]
    if gated:
        atomic_write_bytes(out_dir / OUTPUTS["gates"], gatingml.export(analysis.stained, analysis.compensation))
        if analysis.control is not None:
            outputs["control_gates"] = "control_gates.xml"
            atomic_write_bytes(out_dir / outputs["control_gates"],
                               gatingml.export(analysis.control, analysis.compensation))
        figures = plots.plot_sample(analysis.stained, analysis.control, analysis.threshold, result,
                                    out_dir, formats)
    else:
        atomic_write_bytes(out_dir / OUTPUTS["gates"], gatingml.export_empty("; ".join(result["reasons"])))
        figures = plots.plot_failure(result, out_dir, formats)
    outputs.update({f"qc_{Path(f).suffix[1:]}": Path(f).name for f in figures})
    atomic_write_text(out_dir / OUTPUTS["counts"], counts_tsv(result))
    result["outputs"] = outputs
    validate_result(result)
    atomic_write_json(out_dir / OUTPUTS["result"], result)


def counts_tsv(result):
    """One row per gate and tube: tube, gate, parent, count, parent_count, percent_of_parent."""
    lines = ["tube\tgate\tparent\tcount\tparent_count\tpercent_of_parent"]
    for tube, table in (("stained", result["gates"]), ("control", result["control_gates"] or [])):
        for g in table:
            lines.append(f"{tube}\t{g['name']}\t{g['parent'] or ''}\t{g['count']}\t"
                         f"{g['parent_count']}\t{g['percent_of_parent']:.4f}")
    return "\n".join(lines) + "\n"


def validate_result(result):
    """Check a result against the packaged JSON schema (a failure is a bug of ours, not bad input)."""
    import jsonschema

    from .screening import load_schema

    jsonschema.validate(result, load_schema("result.schema.json"))


# -- command line ----------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("fcs", help="stained tube (FCS)")
    parser.add_argument("--control", help="control tube (FMO or isotype), gated the same way")
    parser.add_argument("--out", required=True, help="output folder for this sample")
    parser.add_argument("--sample-id", help="sample id (default: the FCS file name)")
    parser.add_argument("--config", help="config YAML (its `analysis:` block, or the whole file)")
    parser.add_argument("--compensation", help="spillover matrix CSV overriding the file's own")
    parser.add_argument("--patient-id")
    parser.add_argument("--specimen")
    parser.add_argument("--notes")
    parser.add_argument("--plot-formats", default="png",
                        help="comma-separated figure formats: png (always), svg, pdf")
    parser.add_argument("--threads", type=int, default=1,
                        help="2 or more: read, compensate and transform the two tubes side by side")


def run(args):
    from .plots import FORMATS

    formats = tuple(dict.fromkeys(["png"] + [f for f in args.plot_formats.split(",") if f]))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError("--plot-formats", f"unknown format(s) {', '.join(unknown)}; "
                                           f"choose from {', '.join(FORMATS)}")
    config = load_config(args.config)
    meta = {"patient_id": args.patient_id, "specimen": args.specimen, "notes": args.notes}
    analysis = analyze_sample(args.fcs, args.control, config, sample_id=args.sample_id,
                              compensation_path=args.compensation, meta=meta, threads=args.threads)
    write_outputs(analysis, args.out, formats)
    print(summary_line(analysis.result))
    return 0


def summary_line(result):
    """One line for the bench: sample, criterion, fraction with CI, and the reasons."""
    text = f"{result['sample_id']}: {result['criterion']}"
    if result["cd125_pos_fraction"] is not None:
        text += (f" CD125+ {result['cd125_pos_fraction']:.1%} "
                 f"(95% CI {result['ci_low']:.1%}-{result['ci_high']:.1%}) "
                 f"of {result['blast_events']} blasts")
    if result["reasons"]:
        text += " | " + "; ".join(result["reasons"])
    return text
