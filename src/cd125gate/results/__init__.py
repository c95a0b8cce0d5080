"""A sample's result: one frozen value, its JSON, its schema, and the tables made from it.

``SampleResult`` is what ``result.json`` holds. The analysis builds it once,
at the end (``decided``) or at the step that failed (``failed``); the plots,
the review page and the screening table read its fields. ``load`` reads a
``result.json`` back and checks it against ``data/result.schema.json`` with
one message for every way it can be wrong.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.analysis.model import GATE_ORDER
from cd125gate.errors import InputError
from cd125gate.results import formatting as fmt

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from cd125gate.analysis.criterion import Criterion, Evidence
    from cd125gate.analysis.model import Threshold, TubeAnalysis

SCHEMA_VERSION = "1"
REVIEWED_RESULT = "reviewed_result.json"   # a REGATE's result, beside the automatic result.json
# Keys result.json holds only when they have a value.
OPTIONAL = ("internal_controls", "clones", "outputs", "assay", "review", "density")


@dataclass(frozen=True)
class GateCount:
    """One row of a gate table (``gates`` / ``control_gates``)."""

    name: str
    parent: str | None
    count: int
    parent_count: int
    percent_of_parent: float
    note: str = ""
    exclusion: bool = False

    @classmethod
    def from_json(cls, row: dict) -> GateCount:
        return cls(row["name"], row["parent"], row["count"], row["parent_count"], row["percent_of_parent"],
                   row.get("note") or "", bool(row.get("exclusion")))


@dataclass(frozen=True)
class CutOff:
    """The ``threshold`` section: the CD125 cut-off, how it was found, and the dim-CD125 guard."""

    method: str
    value: float
    value_raw: float
    description: str
    percentile: float | None = None
    reference_events: int = 0
    edited: bool = False            # a reviewer moved it (reviewed results only)
    overlap: dict | None = None     # threshold.overlap: cumulative_subtraction, tolerance, missed

    @classmethod
    def from_json(cls, data: dict) -> CutOff:
        return cls(data["method"], data["value"], data["value_raw"], data["description"], data.get("percentile"),
                   data.get("reference_events", 0), bool(data.get("edited")), data.get("overlap"))


@dataclass(frozen=True)
class InputFile:
    """A file a result was computed from, as recorded (the path is relative to where the analysis ran)."""

    path: str
    sha256: str | None


@dataclass(frozen=True)
class RegateSource:
    """The ``review`` section of a reviewed result: the REGATE and the edited gates it comes from."""

    source_result_sha256: str
    gates: str
    gates_sha256: str
    reviewer: str | None = None
    date: str | None = None
    reason: str | None = None
    automatic_criterion: str | None = None
    automatic_reasons: tuple = ()
    figure_note: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> RegateSource:
        return cls(data["source_result_sha256"], data["gates"], data["gates_sha256"], data.get("reviewer"),
                   data.get("date"), data.get("reason"), data.get("automatic_criterion"),
                   tuple(data.get("automatic_reasons") or ()), data.get("figure_note"))


@dataclass(frozen=True)
class SampleResult:
    """One sample's result. Lists are tuples; nested tables stay plain JSON values."""

    sample_id: str
    criterion: str
    reasons: tuple
    flags: tuple
    warnings: tuple
    inputs: dict            # role -> {"path", "sha256"} (or None for a role without a file)
    provenance: dict        # cd125gate and FlowKit versions, config digest
    criterion_settings: dict
    patient_id: str | None = None
    specimen: str | None = None
    notes: str | None = None
    cd125_pos_fraction: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    blast_events: int | None = None
    cd125_pos_events: int | None = None
    threshold: dict | None = None
    cd125_median: dict | None = None
    gates: tuple = ()
    control_gates: tuple | None = None
    qc: dict = field(default_factory=dict)
    internal_controls: dict | None = None  # population -> CD125+ share against the threshold
    clones: tuple | None = None     # per blast clone: phenotype, coverage, blasts, CD125+ fraction
    outputs: dict | None = None     # kind -> file name in the sample's folder (set when written)
    assay: dict | None = None       # acquisition metadata from the FCS keywords
    review: dict | None = None      # reviewed_result.json only: the REGATE it comes from
    density: dict | None = None     # CD125 ABC from calibration beads (beads.measure), when named
    schema_version: str = SCHEMA_VERSION

    @property
    def decided(self) -> bool:
        """True for MET / NOT_MET: an answer the evidence supports."""
        return self.criterion in ("MET", "NOT_MET")

    # -- typed views of the sections that are plain JSON values ---------------------------------

    @property
    def gate_counts(self) -> tuple[GateCount, ...]:
        """The stained tube's gate table."""
        return tuple(GateCount.from_json(g) for g in self.gates)

    @property
    def control_gate_counts(self) -> tuple[GateCount, ...]:
        """The control tube's gate table (empty without a control)."""
        return tuple(GateCount.from_json(g) for g in self.control_gates or ())

    @property
    def cutoff(self) -> CutOff | None:
        """The CD125 cut-off, or None for a result that never got one."""
        return CutOff.from_json(self.threshold) if self.threshold else None

    @property
    def regate(self) -> RegateSource | None:
        """The REGATE a reviewed result comes from; None for an automatic result."""
        return RegateSource.from_json(self.review) if self.review else None

    @property
    def median_ratio(self) -> float | None:
        """Median CD125 of blasts, stained / control."""
        return (self.cd125_median or {}).get("ratio")

    @property
    def positive_fraction_needed(self) -> float | None:
        """The CD125+ share of blasts MET needs, from the criterion settings recorded."""
        return self.criterion_settings.get("positive_fraction")

    def input_file(self, role: str) -> InputFile | None:
        """The ``fcs``, ``control`` or ``compensation`` input as recorded, or None."""
        entry = (self.inputs or {}).get(role)
        return InputFile(entry.get("path"), entry.get("sha256")) if entry else None

    def assay_field(self, name: str) -> str | None:
        """One acquisition field (``assay.FIELDS``) the result records, or None."""
        return (self.assay or {}).get(name)

    def output(self, kind: str) -> str | None:
        """The file name of an output (``gates``, ``qc_png``...) in the sample's folder, or None."""
        return (self.outputs or {}).get(kind)

    @property
    def precompensated(self) -> bool:
        """The tube came compensated already (no matrix was applied by us)."""
        return self.qc.get("compensation") == "precompensated"

    @property
    def cd125gate_version(self) -> str | None:
        """The cd125gate version that made the result."""
        return self.provenance.get("cd125gate_version")

    @property
    def flowkit_version(self) -> str | None:
        return self.provenance.get("flowkit_version")

    @property
    def config_digest(self) -> str | None:
        """SHA-256 of the analysis settings the result was made with."""
        return self.provenance.get("config_digest")

    def replace(self, **changes: object) -> SampleResult:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """The ``result.json`` document (tuples as lists; ``outputs`` only once written)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("reasons", "flags", "warnings", "gates"):
            data[name] = list(data[name])
        if self.clones is not None:
            data["clones"] = list(self.clones)
        if self.control_gates is not None:
            data["control_gates"] = list(self.control_gates)
        for name in OPTIONAL:
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_json(cls, data: dict) -> SampleResult:
        """The value of a schema-valid ``result.json`` document."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("reasons", "flags", "warnings", "gates"):
            values[name] = tuple(values.get(name) or ())
        if values.get("control_gates") is not None:
            values["control_gates"] = tuple(values["control_gates"])
        if values.get("clones") is not None:
            values["clones"] = tuple(values["clones"])
        values.setdefault("criterion_settings", {})
        return cls(**values)


def header(sample_id: str, inputs: dict, provenance: dict, criterion_settings: dict,
           meta: dict) -> SampleResult:
    """What every result of a sample holds, decided or not: a FAILED result until decided."""
    return SampleResult(sample_id=sample_id, criterion="FAILED", reasons=(), flags=(), warnings=(),
                        inputs=inputs, provenance=provenance, criterion_settings=criterion_settings,
                        patient_id=meta.get("patient_id"), specimen=meta.get("specimen"),
                        notes=meta.get("notes"))


def failed(base: SampleResult, reason: str, **known: object) -> SampleResult:
    """``base`` as a FAILED result with ``reason`` (and whatever was ``known`` when it failed)."""
    return base.replace(criterion="FAILED", reasons=(reason,), **known)


def decided(base: SampleResult, verdict: Criterion, evidence: Evidence, stained: TubeAnalysis, control: TubeAnalysis | None,
            threshold: Threshold, *, warnings: Iterable[str], inputs: dict, qc: dict,
            internal_controls: dict | None = None, assay: dict | None = None,
            clones: Iterable[dict] | None = None) -> SampleResult:
    """The result of a sample analysed to the end: ``base`` with the criterion and its evidence."""
    return base.replace(
        criterion=verdict.criterion, reasons=verdict.reasons, flags=verdict.flags,
        warnings=tuple(warnings), inputs=inputs, qc=qc, internal_controls=internal_controls, assay=assay,
        clones=tuple(clones) if clones else None,
        cd125_pos_fraction=verdict.fraction, ci_low=verdict.ci_low, ci_high=verdict.ci_high,
        blast_events=evidence.blasts, cd125_pos_events=evidence.positive,
        cd125_median=cd125_medians(stained, control), gates=gate_table(stained),
        control_gates=gate_table(control) if control is not None else None,
        threshold={"method": threshold.method, "value": threshold.value, "value_raw": threshold.value_raw,
                   "percentile": threshold.percentile, "reference_events": threshold.reference_events,
                   "description": threshold.description, "overlap": evidence.overlap})


def cd125_medians(stained: TubeAnalysis, control: TubeAnalysis | None) -> dict:
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


def control_pos_fraction(control_gates: Iterable[dict] | None) -> float | None:
    """Share of the control tube's blasts above the CD125 threshold (from its gate table), or None."""
    for gate in control_gates or ():
        if gate["name"] == "cd125_pos" and gate["parent_count"]:
            return gate["count"] / gate["parent_count"]
    return None


def gate_table(tube: TubeAnalysis) -> tuple[dict, ...]:
    """Counts of every gate of a tube, in hierarchy order."""
    rank = {name: i for i, name in enumerate(GATE_ORDER)}
    steps = sorted(tube.steps, key=lambda s: (rank.get(s.name, len(rank)), s.name))
    return tuple({"name": s.name, "parent": s.parent, "count": s.count, "parent_count": s.parent_count,
                  "percent_of_parent": round(s.percent_of_parent, 4), "note": s.note,
                  "exclusion": s.exclusion} for s in steps)


# -- schema and loading ------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _schema_text(name):
    return resources.files("cd125gate").joinpath(f"data/{name}").read_text()


def load_schema(name: str) -> dict:
    """A JSON schema packaged in ``cd125gate/data`` (a fresh copy)."""
    return json.loads(_schema_text(name))


@lru_cache(maxsize=None)
def _validator(name="result.schema.json"):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name))


def schema_error(document: object, name: str = "result.schema.json") -> str | None:
    """The first schema violation of ``document`` as one line ("where: what"), or None."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(name).iter_errors(document))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "top level"
    return f"{where}: {error.message}"


def prepare_validation() -> None:
    """Import jsonschema and compile the result schema (~0.1 s) ahead of ``validate``, e.g. while waiting."""
    _validator()


def validate(result: SampleResult) -> None:
    """Check a result we made against the schema (a failure is a bug of ours, not bad input)."""
    error = schema_error(result.to_json())
    if error:
        raise ValueError(f"cd125gate made a result that breaks its own schema: {error}")


def load(path: Path | str) -> SampleResult:
    """The ``SampleResult`` in the ``result.json`` at ``path``.

    Raises
    ------
    InputError
        If the file cannot be read, is not JSON or is not a cd125gate result.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"cannot read result: {exc}") from None
    error = schema_error(document)
    if error:
        raise InputError(path, f"not a cd125gate result: {error}")
    return SampleResult.from_json(document)


# -- tables made from a result -----------------------------------------------------------------

def counts_tsv(result: SampleResult) -> str:
    """One row per gate and tube: tube, gate, parent, count, parent_count, percent_of_parent."""
    lines = ["tube\tgate\tparent\tcount\tparent_count\tpercent_of_parent"]
    for tube, table in (("stained", result.gates), ("control", result.control_gates or ())):
        for g in table:
            lines.append(f"{tube}\t{g['name']}\t{g['parent'] or ''}\t{g['count']}\t"
                         f"{g['parent_count']}\t{g['percent_of_parent']:.4f}")
    return "\n".join(lines) + "\n"


def summary_line(result: SampleResult) -> str:
    """One line for the bench: sample, criterion, fraction with CI, and the reasons."""
    text = f"{result.sample_id}: {result.criterion}"
    if result.cd125_pos_fraction is not None:
        text += (f" CD125+ {fmt.percent(result.cd125_pos_fraction)} "
                 f"(95% CI {fmt.percent(result.ci_low)}-{fmt.percent(result.ci_high)}) "
                 f"of {result.blast_events} blasts")
    if result.reasons:
        text += " | " + "; ".join(result.reasons)
    return text
