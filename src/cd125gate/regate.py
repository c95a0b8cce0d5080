"""Re-gating: a sample analysed again with gates a reviewer edited (Gating-ML 2.0).

The reviewer exports ``gates.xml``, edits it in FlowJo, Cytobank or FlowKit,
and names the edited file on a REGATE line of the reviews file. FlowKit parses
it (``parse_gating_xml``) and counts every gate on the FCS files
(``GatingStrategy.gate_sample``): FlowKit's meaning of a gate is the
reference, so the reviewed counts are FlowKit's own. The CD125+ fraction of
blasts, its Wilson interval and the criterion then come from
`cd125gate.stats`, exactly as for the automatic result.

The reviewed result (``reviewed_result.json``) is written beside the
automatic ``result.json``, which is never touched: both are kept, and the
reviewed one records the digest of the result it re-gated and of the gates
it used.
"""

import copy
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .fileio import sha256_file

BLASTS, CD125_POS = "blasts", "cd125_pos"
REVIEWED_RESULT = "reviewed_result.json"


@dataclass
class Regated:
    """Counts of edited gates on a sample's tubes and what they imply."""

    gates: list                 # gate table of the stained tube (result.json's `gates` format)
    control_gates: list | None  # the same gates on the control tube, when there is one
    blasts: int
    positive: int
    threshold: tuple | None     # (transformed, raw) CD125 cut-off of the edited cd125_pos gate


def load_gates(path):
    """The FlowKit GatingStrategy of a Gating-ML 2.0 file; bad files are one-line InputErrors."""
    import flowkit as fk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fk.parse_gating_xml(str(path))
    except FileNotFoundError:
        raise InputError(path, "gates file does not exist") from None
    except Exception as exc:  # FlowKit raises ValueError, lxml errors, KeyError... for bad documents
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a usable Gating-ML 2.0 document: {problem}") from None


def load_sample(path):
    """A FlowKit Sample of an FCS file (the events FlowKit gates)."""
    import flowkit as fk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fk.Sample(str(path), ignore_offset_error=True)
    except FileNotFoundError:
        raise InputError(path, "FCS file does not exist") from None
    except Exception as exc:
        raise InputError(path, f"FlowKit cannot read this FCS file: {str(exc).splitlines()[0]}") from None


def count_gates(strategy, sample, source=None):
    """Counts of every gate of ``strategy`` on ``sample`` by FlowKit's ``gate_sample``.

    Returns
    -------
    list of dict
        ``name``, ``parent`` (None under the root), ``count``, ``parent_count``,
        ``percent_of_parent``, in FlowKit's report order.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = strategy.gate_sample(sample).report
    except Exception as exc:  # a gate naming a channel the file lacks, a missing transform...
        raise InputError(source or sample.original_filename,
                         f"FlowKit cannot apply the gates: {str(exc).splitlines()[0]}") from None
    # A quadrant's gates sit under the quadrant's parent, but paths below them name the quadrant
    # too: paths without quadrant names identify each gate's parent.
    quadrants = {q for q in report["quadrant_parent"] if isinstance(q, str)}

    def plain(path):
        return tuple(p for p in path if p not in quadrants)

    counts = {(row["gate_name"], plain(row["gate_path"])): int(row["count"]) for _, row in report.iterrows()}
    table = []
    for _, row in report.iterrows():
        path = plain(row["gate_path"])
        parent = None if row["parent"] == "root" or len(path) < 2 else row["parent"]
        parent_count = sample.event_count if parent is None else counts[(path[-1], path[:-1])]
        count = int(row["count"])
        table.append({"name": row["gate_name"], "parent": parent, "count": count,
                      "parent_count": int(parent_count),
                      "percent_of_parent": round(100.0 * count / parent_count, 4) if parent_count else 0.0})
    return table


def cd125_cutoff(strategy):
    """The (transformed, raw) lower edge of an edited 1-D ``cd125_pos`` gate, or None.

    None when the gate is not a single lower cut-off (a reviewer may draw any shape).
    """
    import numpy as np
    from flowkit import gates as fk_gates

    gate = strategy.get_gate(CD125_POS)
    if not isinstance(gate, fk_gates.RectangleGate) or len(gate.dimensions) != 1 or gate.dimensions[0].min is None:
        return None
    dim = gate.dimensions[0]
    value = float(dim.min)
    if dim.transformation_ref is None:
        return value, value
    xform = strategy.get_transform(dim.transformation_ref)
    raw = float(np.asarray(xform.inverse(np.array([[value]], dtype=float))).ravel()[0])
    return value, raw


def reanalyze(gates_path, fcs_path, control_path=None):
    """Count the edited gates on the stained tube (and the control): the reviewed counts.

    Raises
    ------
    InputError
        When the gates cannot be parsed or applied, or lack a ``cd125_pos`` gate under ``blasts``.
    """
    strategy = load_gates(gates_path)
    check_strategy(strategy, gates_path)
    stained = count_gates(strategy, load_sample(fcs_path), _applying(gates_path, fcs_path))
    control = None
    if control_path is not None:
        control = count_gates(strategy, load_sample(control_path), _applying(gates_path, control_path))
    by_name = {g["name"]: g for g in stained}
    return Regated(stained, control, by_name[BLASTS]["count"], by_name[CD125_POS]["count"],
                   cd125_cutoff(strategy))


def _applying(gates_path, fcs_path):
    # A gate that cannot be applied is the edited document's fault (a channel the tube lacks,
    # a missing transform): the message names the gates file, and the tube it was applied to.
    return f"{gates_path} (applied to {Path(fcs_path).name})"


def check_strategy(strategy, gates_path):
    """Refuse edited gates that lack ``blasts`` or ``cd125_pos``, or re-parent ``cd125_pos``."""
    names = {name for name, _ in strategy.get_gate_ids()}
    for needed in (BLASTS, CD125_POS):
        if needed not in names:
            raise InputError(gates_path, f"the edited gates have no '{needed}' gate "
                                         f"(gates found: {', '.join(sorted(names)) or 'none'})")
    paths = strategy.find_matching_gate_paths(CD125_POS)
    if any(path[-1] != BLASTS for path in paths):
        raise InputError(gates_path, f"the '{CD125_POS}' gate must sit directly under '{BLASTS}'")


def gate_channels(strategy):
    """gate name -> the FCS channels ($PnN) its dimensions name (ratio dimensions: their operands)."""
    used = {}
    for name, path in strategy.get_gate_ids():
        gate = strategy.get_gate(name, path)
        channels = set()
        for dim in getattr(gate, "dimensions", None) or ():
            ratio = getattr(dim, "ratio_ref", None)
            if ratio is not None:
                channels.update(getattr(strategy.get_transform(ratio), "dimensions", None) or ())
            else:
                channels.add(getattr(dim, "id", None) or getattr(dim, "dimension_ref", None))
        used[name] = channels - {None}
    return used


def check_channels(strategy, gates_path, tubes):
    """Refuse gates naming a channel a tube lacks: ``tubes`` maps an FCS path to its channel names."""
    for fcs_path, channels in tubes.items():
        for matrix_id, matrix in strategy.comp_matrices.items():
            missing = sorted(set(matrix.detectors) - set(channels))
            if missing:
                raise InputError(gates_path, f"compensation matrix '{matrix_id}' names channel(s) "
                                             f"{', '.join(missing)}, which {Path(fcs_path).name} does not have")
        for gate, needed in gate_channels(strategy).items():
            missing = sorted(needed - set(channels))
            if missing:
                raise InputError(gates_path, f"gate '{gate}' uses channel(s) {', '.join(missing)}, "
                                             f"which {Path(fcs_path).name} does not have "
                                             f"(its channels: {', '.join(channels)})")


def check_edited_gates(gates_path, fcs_paths):
    """Parse and check edited gates against the sample's tubes, as before any job (one InputError)."""
    from .fcs import read_channels

    strategy = load_gates(gates_path)
    check_strategy(strategy, gates_path)
    tubes = {path: [c.name for c in read_channels(path)] for path in fcs_paths}
    check_channels(strategy, gates_path, tubes)
    return strategy


def reviewed_result(result, result_sha256, regated, gates_path, review=None):
    """The reviewed result: the automatic one with the counts, fraction, CI and criterion of the edited gates.

    ``review`` (a `reviews.Review`) supplies who re-gated, when and why.
    """
    from .criterion import Evidence, decide
    from .settings import load_settings

    # The reviewer's gates answer the automatic doubts; what remains is whether the counts decide.
    settings = load_settings(overrides={"criterion": result.get("criterion_settings") or {}})
    verdict = decide(Evidence(regated.blasts, regated.positive, "control_percentile", control_used=True),
                     settings)
    criterion, fraction, low, high = verdict.criterion, verdict.fraction, verdict.ci_low, verdict.ci_high
    reasons = list(verdict.reasons)
    reviewed = copy.deepcopy(result)
    notes = {g["name"]: g for g in result.get("gates") or []}
    reviewed.update(
        criterion=criterion, reasons=reasons, cd125_pos_fraction=fraction, ci_low=low, ci_high=high,
        blast_events=regated.blasts, cd125_pos_events=regated.positive,
        gates=_with_notes(regated.gates, notes),
        control_gates=_with_notes(regated.control_gates, {g["name"]: g for g in result.get("control_gates") or []}),
        # The medians describe the automatic blast gate; the edited one may hold other events.
        cd125_median=None,
    )
    who = f" by {review.reviewer} on {review.date}" if review else ""
    reviewed["flags"] = list(result.get("flags") or []) + [f"re-gated{who} with {Path(gates_path).name}"]
    if result.get("threshold") and regated.threshold is not None \
            and regated.threshold[0] != result["threshold"].get("value"):
        value, raw = regated.threshold
        old = result["threshold"]
        # The overlap check measured the automatic cut-off; it says nothing about this one.
        reviewed["threshold"] = dict(
            old, value=value, value_raw=raw, edited=True, overlap=None,
            description=f"CD125 cut-off edited by the reviewer: {raw:,.4g} raw "
                        f"(automatic: {old.get('value_raw', float('nan')):,.4g}, {old.get('description', '')})")
    reviewed["review"] = {
        "decision": "REGATE", "source_result_sha256": result_sha256, "gates": str(gates_path),
        "gates_sha256": sha256_file(gates_path),
        "reviewer": review.reviewer if review else None, "date": review.date if review else None,
        "reason": review.reason if review else None,
        "automatic_criterion": result["criterion"], "automatic_reasons": list(result.get("reasons") or []),
    }
    reviewed.setdefault("outputs", {})["result"] = REVIEWED_RESULT
    return reviewed


def _with_notes(table, automatic):
    """Gate rows noting they were re-counted, keeping the automatic exclusion marks."""
    if table is None:
        return None
    return [dict(g, note="counted by FlowKit on the reviewer's gates",
                 exclusion=bool(automatic.get(g["name"], {}).get("exclusion", False))) for g in table]


def regate_result(result_path, gates_path, out_path=None, fcs_path=None, control_path=None, review=None,
                  copies=(), settings=None, figures=False):
    """Re-gate the sample of ``result_path`` with ``gates_path`` and write its reviewed result.

    The FCS files default to those the automatic result names. ``copies``: more paths to
    write the same reviewed result to, once it is complete. With ``figures``, the
    re-gated QC figures (``reviewed_qc.png``) are drawn beside the reviewed result
    and each copy, the sample analysed again with ``settings`` (those of the
    automatic result). Returns the reviewed result.
    """
    import json

    from .fileio import atomic_write_json
    from .results import SampleResult, validate

    result_path = Path(result_path)
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(result_path, f"cannot read result: {exc}") from None
    inputs = result.get("inputs") or {}
    fcs_path = fcs_path or (inputs.get("fcs") or {}).get("path")
    if control_path is None and inputs.get("control"):
        control_path = inputs["control"].get("path")
    if control_path is not None and not Path(control_path).is_file():
        control_path = None  # the control may have moved; the stained tube alone decides
    if review is not None and review.gates_sha256 and sha256_file(gates_path) != review.gates_sha256:
        raise InputError(gates_path, f"not the gates file {review.where()} signed (its gates_sha256 differs)")
    regated = reanalyze(gates_path, fcs_path, control_path)
    reviewed = reviewed_result(result, sha256_file(result_path), regated, gates_path, review)
    validate(SampleResult.from_json(reviewed))
    out_path = Path(out_path or result_path.with_name(REVIEWED_RESULT))
    figures_at = out_path.parent
    if figures:
        from .regate_figure import draw_reviewed, figure_stem

        stem = figure_stem(out_path)
        note = draw_reviewed(result, reviewed, load_gates(gates_path), figures_at, settings, stem)
        reviewed["review"]["figure_note"] = note
        # The figures of this result are the re-gated ones (or the card saying why there are none).
        reviewed["outputs"] = {k: v for k, v in reviewed["outputs"].items() if not k.startswith("qc_")}
        for key, name in (("qc_png", f"{stem}.png"), ("qc_control_png", f"{stem}_control.png")):
            if (figures_at / name).is_file():
                reviewed["outputs"][key] = name
    # Written whole or not at all: a failing later REGATE never leaves a torn file behind.
    # Each copy gets the figures before the result that names them.
    for path in [out_path, *map(Path, copies)]:
        if figures and path != out_path:
            _copy_figures(figures_at, stem, path)
        atomic_write_json(path, reviewed)
    return reviewed


def _copy_figures(folder, stem, copy):
    """The re-gated figures of ``folder`` beside ``copy`` (a copy of the reviewed result), under its names."""
    from .fileio import atomic_write_bytes
    from .regate_figure import figure_stem

    for suffix in ("", "_control"):
        source = folder / f"{stem}{suffix}.png"
        if source.is_file():
            atomic_write_bytes(copy.parent / f"{figure_stem(copy)}{suffix}.png", source.read_bytes())


# --- command line --------------------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument("result", help="the automatic result.json of the sample")
    parser.add_argument("--gates", required=True, help="edited Gating-ML 2.0 file")
    parser.add_argument("--out", help="reviewed result to write (default: reviewed_result.json beside RESULT)")
    parser.add_argument("--fcs", help="stained tube (default: the one result.json names)")
    parser.add_argument("--control", help="control tube (default: the one result.json names)")
    parser.add_argument("--reviews", help="reviews file: the sample's latest REGATE line says who, when, why")
    parser.add_argument("--current", help="also write the reviewed result here once it is complete "
                                          "(the workflow's reviewed_result.json beside result.json)")
    parser.add_argument("--failure", help="when the inputs cannot be re-gated, write the one-line problem here "
                                          "and exit 0 (the workflow records it; the batch goes on)")
    parser.add_argument("--config", help="analysis settings of the automatic result, to draw the re-gated "
                                         "QC figures (reviewed_qc.png) with; default: the packaged settings")
    parser.add_argument("--no-figures", action="store_true", help="write the reviewed result only")


def run(args):
    if not args.failure:
        return _regate(args)
    try:
        return _regate(args)
    except InputError as exc:
        from .fileio import atomic_write_text

        # A recorded outcome, not a failed job: Snakemake would stop the batch over one sample.
        atomic_write_text(args.failure, f"{exc}\n")
        print(f"cd125gate: {exc}", file=sys.stderr)
        return 0


def _regate(args):
    from . import results, reviews

    review = None
    if args.reviews:
        import json

        sample_id = json.loads(Path(args.result).read_text(encoding="utf-8")).get("sample_id")
        review = reviews.latest_by_sample(reviews.read_reviews(args.reviews)).get(sample_id)
        if review is None or review.decision != "REGATE":
            raise InputError(args.reviews, f"sample '{sample_id}' has no REGATE as its latest line")
    from .settings import load_settings

    settings = load_settings(args.config) if args.config else None
    copies = [args.current] if args.current else []
    reviewed = regate_result(args.result, args.gates, args.out, args.fcs, args.control, review, copies,
                             settings, figures=not args.no_figures)
    if reviewed["review"].get("figure_note"):
        print(f"no re-gated figure: {reviewed['review']['figure_note']}")
    print("reviewed " + results.summary_line(results.SampleResult.from_json(reviewed)))
    return 0
