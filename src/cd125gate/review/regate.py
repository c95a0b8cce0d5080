"""Re-gating: a sample analysed again with gates a reviewer edited (Gating-ML 2.0).

The reviewer exports ``gates.xml``, edits it in FlowJo, Cytobank or FlowKit,
and names the edited file on a REGATE line of the reviews file. FlowKit parses
it (``parse_gating_xml``) and counts every gate on the FCS files
(``GatingStrategy.gate_sample``): FlowKit's meaning of a gate is the
reference, so the reviewed counts are FlowKit's own. The CD125+ fraction of
blasts and its Wilson interval then come from `cd125gate.analysis.numeric.stats`, exactly as
for the automatic result, and the criterion from `criterion.decide_counts`
(the reviewer's gates answer the automatic doubts).

The reviewed result (``reviewed_result.json``) is written beside the
automatic ``result.json``, which is never touched: both are kept, and the
reviewed one records the digest of the result it re-gated and of the gates
it used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.errors import InputError
from cd125gate.io.fileio import sha256_file
from cd125gate.io.gatesfile import BLASTS, CD125_POS, cd125_cutoff, load_gates, load_sample
from cd125gate.results import REVIEWED_RESULT, SampleResult
from cd125gate.results import formatting as fmt

if TYPE_CHECKING:
    from collections.abc import Iterable

    import flowkit as fk

    from cd125gate.review.reviews import Review
    from cd125gate.settings import Settings

@dataclass
class Regated:
    """Counts of edited gates on a sample's tubes and what they imply."""

    gates: list                 # gate table of the stained tube (result.json's `gates` format)
    control_gates: list | None  # the same gates on the control tube, when there is one
    blasts: int
    positive: int
    threshold: tuple | None     # (transformed, raw) CD125 cut-off of the edited cd125_pos gate


def count_gates(strategy: fk.GatingStrategy, sample: fk.Sample, source: Path | str | None = None) -> list[dict]:
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


def reanalyze(gates_path: Path | str, fcs_path: Path | str, control_path: Path | str | None = None) -> Regated:
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


def check_strategy(strategy: fk.GatingStrategy, gates_path: Path | str) -> None:
    """Refuse edited gates that lack ``blasts`` or ``cd125_pos``, or re-parent ``cd125_pos``."""
    names = {name for name, _ in strategy.get_gate_ids()}
    for needed in (BLASTS, CD125_POS):
        if needed not in names:
            raise InputError(gates_path, f"the edited gates have no '{needed}' gate "
                                         f"(gates found: {', '.join(sorted(names)) or 'none'})")
    paths = strategy.find_matching_gate_paths(CD125_POS)
    if any(path[-1] != BLASTS for path in paths):
        raise InputError(gates_path, f"the '{CD125_POS}' gate must sit directly under '{BLASTS}'")


def gate_channels(strategy: fk.GatingStrategy) -> dict[str, set[str]]:
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


def check_channels(strategy: fk.GatingStrategy, gates_path: Path | str, tubes: dict) -> None:
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


def check_edited_gates(gates_path: Path | str, fcs_paths: Iterable[Path | str]) -> fk.GatingStrategy:
    """Parse and check edited gates against the sample's tubes, as before any job (one InputError)."""
    from cd125gate.io.fcs import read_channels

    strategy = load_gates(gates_path)
    check_strategy(strategy, gates_path)
    tubes = {path: [c.name for c in read_channels(path)] for path in fcs_paths}
    check_channels(strategy, gates_path, tubes)
    return strategy


def reviewed_result(result: SampleResult, result_sha256: str, regated: Regated, gates_path: Path | str,
                    review: Review | None = None) -> SampleResult:
    """The reviewed result: the automatic one with the counts, fraction, CI and criterion of the edited gates.

    ``review`` (a `reviews.Review`) supplies who re-gated, when and why.
    """
    from cd125gate.analysis.criterion import decide_counts
    from cd125gate.settings import load_settings

    # The reviewer's gates answer the automatic doubts; what remains is whether the counts decide.
    settings = load_settings(overrides={"criterion": result.criterion_settings or {}})
    verdict = decide_counts(regated.positive, regated.blasts, settings)
    who = f" by {review.reviewer} on {review.date}" if review else ""
    return result.replace(
        criterion=verdict.criterion, reasons=verdict.reasons, cd125_pos_fraction=verdict.fraction,
        ci_low=verdict.ci_low, ci_high=verdict.ci_high,
        blast_events=regated.blasts, cd125_pos_events=regated.positive,
        gates=_with_notes(regated.gates, result.gate_counts),
        control_gates=_with_notes(regated.control_gates, result.control_gate_counts),
        # The medians describe the automatic blast gate; the edited one may hold other events.
        cd125_median=None,
        flags=(*result.flags, f"re-gated{who} with {Path(gates_path).name}"),
        threshold=_edited_threshold(result, regated.threshold),
        review={
            "decision": "REGATE", "source_result_sha256": result_sha256, "gates": str(gates_path),
            "gates_sha256": sha256_file(gates_path),
            "reviewer": review.reviewer if review else None, "date": review.date if review else None,
            "reason": review.reason if review else None,
            "automatic_criterion": result.criterion, "automatic_reasons": list(result.reasons),
        },
        outputs={**(result.outputs or {}), "result": REVIEWED_RESULT},
    )


def _edited_threshold(result: SampleResult, edited: tuple | None) -> dict | None:
    """The automatic ``threshold`` section, or the reviewer's cut-off when the edited gates moved it."""
    old = result.cutoff
    if old is None or edited is None or edited[0] == old.value:
        return result.threshold
    value, raw = edited
    # The overlap check measured the automatic cut-off; it says nothing about this one.
    return dict(result.threshold, value=value, value_raw=raw, edited=True, overlap=None,
                description=f"CD125 cut-off edited by the reviewer: {fmt.raw_value(raw)} raw "
                            f"(automatic: {fmt.raw_value(old.value_raw)}, {old.description})")


def _with_notes(table: list[dict] | None, automatic: tuple) -> tuple[dict, ...] | None:
    """Gate rows noting they were re-counted, keeping the automatic exclusion marks."""
    if table is None:
        return None
    excluded = {g.name for g in automatic if g.exclusion}
    return tuple(dict(g, note="counted by FlowKit on the reviewer's gates", exclusion=g["name"] in excluded)
                 for g in table)


def regate_result(result_path: Path | str, gates_path: Path | str, out_path: Path | str | None = None,
                  fcs_path: Path | str | None = None, control_path: Path | str | None = None,
                  review: Review | None = None, copies: Iterable[Path | str] = (),
                  settings: Settings | None = None, figures: bool = False) -> SampleResult:
    """Re-gate the sample of ``result_path`` with ``gates_path`` and write its reviewed result.

    The FCS files default to those the automatic result names. ``copies``: more paths to
    write the same reviewed result to, once it is complete. With ``figures``, the
    re-gated QC figures (``reviewed_qc.png``) are drawn beside the reviewed result
    and each copy, the sample analysed again with ``settings`` (those of the
    automatic result). Returns the reviewed result.
    """
    from cd125gate import results
    from cd125gate.io.fileio import atomic_write_json

    result_path = Path(result_path)
    result = results.load(result_path)
    fcs_path = fcs_path or result.input_file("fcs").path
    control = result.input_file("control")
    if control_path is None and control is not None:
        control_path = control.path
    if control_path is not None and not Path(control_path).is_file():
        control_path = None  # the control may have moved; the stained tube alone decides
    if review is not None and review.gates_sha256 and sha256_file(gates_path) != review.gates_sha256:
        raise InputError(gates_path, f"not the gates file {review.where()} signed (its gates_sha256 differs)")
    regated = reanalyze(gates_path, fcs_path, control_path)
    reviewed = reviewed_result(result, sha256_file(result_path), regated, gates_path, review)
    results.validate(reviewed)
    out_path = Path(out_path or result_path.with_name(REVIEWED_RESULT))
    figures_at = out_path.parent
    if figures:
        from cd125gate.figures.regate_figure import draw_reviewed, figure_files, figure_stem
        from cd125gate.results.outputs import output_key

        stem = figure_stem(out_path)
        note = draw_reviewed(result, reviewed, load_gates(gates_path), figures_at, settings, stem)
        # The figures of this result are the re-gated ones (or the card saying why there are none).
        outputs = {k: v for k, v in reviewed.outputs.items() if not k.startswith("qc_")}
        for drawn, name in zip(figure_files("qc"), figure_files(stem)):
            if (figures_at / name).is_file():
                outputs[output_key(drawn)] = name  # the key the automatic result has for it
        reviewed = reviewed.replace(review={**reviewed.review, "figure_note": note}, outputs=outputs)
    # Written whole or not at all: a failing later REGATE never leaves a torn file behind.
    # Each copy gets the figures before the result that names them.
    document = reviewed.to_json()
    for path in [out_path, *map(Path, copies)]:
        if figures and path != out_path:
            _copy_figures(figures_at, stem, path)
        atomic_write_json(path, document)
    return reviewed


def _copy_figures(folder: Path, stem: str, copy: Path) -> None:
    """The re-gated figures of ``folder`` beside ``copy`` (a copy of the reviewed result), under its names."""
    from cd125gate.figures.regate_figure import figure_files, figure_stem
    from cd125gate.io.fileio import atomic_write_bytes

    for name, copied in zip(figure_files(stem), figure_files(figure_stem(copy))):
        source = folder / name
        if source.is_file():
            atomic_write_bytes(copy.parent / copied, source.read_bytes())
