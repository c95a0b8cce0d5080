"""Analysis settings: typed, frozen, checked when loaded.

The packaged defaults (``data/default_config.yaml``) are overridden by a
user's YAML (its ``analysis:`` block, or the whole file) and then by
``overrides``. Every value is checked against its field's type, range or
choices as it is loaded, and a bad one stops with one line naming the key
path and what is allowed ("criterion.positive_fraction: 50 is not in
0 < x < 1"), instead of a traceback in every job or a silently wrong answer.
The ``analysis`` part of the workflow's config schema is generated from these
classes (``json_schema``; a test keeps the file in step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cd125gate.errors import InputError
from cd125gate.settings_values import BadSetting, build_section, merge_layer


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``lo`` <= x <= ``hi`` (strict where ``open_lo`` / ``open_hi``)."""

    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False

    def __contains__(self, x):
        above = x > self.lo if self.open_lo else x >= self.lo
        below = x < self.hi if self.open_hi else x <= self.hi
        return above and below

    def __str__(self):
        return f"{self.lo:g} {'<' if self.open_lo else '<='} x {'<' if self.open_hi else '<='} {self.hi:g}"


def setting(doc: str, kind: str | type, *, within: Range | None = None, choices: tuple[str, ...] | None = None,
            nullable: bool = False) -> Any:
    """A settings field: one line of documentation and what values it takes.

    ``kind`` is one of bool, int, float, str, aliases (marker -> list of
    spellings), names (list of strings) or a Settings section class. The
    default values live in one place, ``data/default_config.yaml``.
    """
    return field(metadata={"doc": doc, "kind": kind, "within": within, "choices": choices,
                           "nullable": nullable})


@dataclass(frozen=True)
class Reagent:
    clone: str = setting("anti-CD125 clone, recorded with every result", "str", nullable=True)
    fluorochrome: str = setting("its fluorochrome", "str", nullable=True)
    lot: str = setting("its lot (a sample sheet's cd125_lot wins)", "str", nullable=True)


@dataclass(frozen=True)
class Panel:
    markers: dict = setting("marker -> spellings recognised in $PnS first, then $PnN", "aliases")
    scatter: dict = setting("scatter / Time -> spellings recognised in $PnN", "aliases")
    required: list = setting("markers without which a tube fails", "names")
    cd125_reagent: Reagent = setting("the CD125 antibody of this panel", Reagent)


@dataclass(frozen=True)
class Compensation:
    matrix: str = setting("spillover matrix CSV overriding the one in the FCS files", "str",
                          nullable=True)
    precompensated: bool = setting("the FCS files hold compensated (or unmixed) events: apply no matrix",
                                   "bool")
    allow_uncompensated: bool = setting("analyse a tube without any matrix (then REVIEW)", "bool")


@dataclass(frozen=True)
class Logicle:
    M: float = setting("decades of the display", "float", within=Range(2, 7))
    A: float = setting("extra negative decades", "float", within=Range(0, 2))
    negative_quantile: float = setting("quantile of the negative events that sets the linear width",
                                       "float", within=Range(0, 0.5, open_lo=True))
    max_width: float = setting("largest linear width W", "float", within=Range(0, 3, open_lo=True))


@dataclass(frozen=True)
class Arcsinh:
    cofactor: float = setting("arcsinh cofactor", "float", within=Range(0, 1e6, open_lo=True))


@dataclass(frozen=True)
class Transform:
    kind: str = setting("transform of the fluorescence channels", "str",
                        choices=("logicle", "arcsinh"))
    logicle: Logicle = setting("logicle parameters", Logicle)
    arcsinh: Arcsinh = setting("arcsinh parameters", Arcsinh)


@dataclass(frozen=True)
class QC:
    time_qc: bool = setting("remove time bins with flow-rate or signal anomalies", "bool")
    bin_events: int = setting("target events per time bin", "int", within=Range(10, 1e6))
    max_rate_deviation: float = setting("robust z of the event rate per bin", "float",
                                        within=Range(0, 100, open_lo=True))
    max_signal_deviation: float = setting("robust z of a bin's mean signal per channel", "float",
                                          within=Range(0, 100, open_lo=True))
    max_removed_fraction: float = setting("time QC removing more than this share sends to REVIEW",
                                          "float", within=Range(0, 1))
    max_control_blast_share_ratio: float = setting(
        "stained vs control blast share of leukocytes off by more than this factor: REVIEW",
        "float", within=Range(1, 100))
    margin_fraction: float = setting("events at >= this fraction of $PnR are at the ceiling",
                                     "float", within=Range(0.5, 1, open_lo=True))


@dataclass(frozen=True)
class GatingChecks:
    min_reference_events: int = setting("lymphocytes needed to read CD45 and the blast markers against",
                                        "int", within=Range(1, 1e9))
    cd45_margin: float = setting("blasts' median CD45 at least this many decades below lymphocytes'",
                                 "float", within=Range(0, 5))
    ssc_high: float = setting("blasts' median SSC-A at most this many decades above lymphocytes'", "float",
                              within=Range(0, 5))
    blast_markers: list = setting("a blast carries at least one of these markers (positive)", "names")
    positive_above: float = setting("decades above the lymphocytes' median that count as positive", "float",
                                    within=Range(0, 5))
    min_blast_marker_share: float = setting("least share of gated blasts positive for a blast marker",
                                            "float", within=Range(0, 1))
    max_basophil_like_share: float = setting("most CD123-bright HLA-DR-negative events left among blasts",
                                             "float", within=Range(0, 1))
    min_blast_coverage: float = setting("least share of the named blast population's fitted events in the "
                                        "blast gate", "float", within=Range(0, 1))
    min_control_events: int = setting("fewer fitted events of a population: not an internal control", "int",
                                      within=Range(1, 1e9))
    min_positive_control: float = setting("positive internal control below this CD125+ share: REVIEW",
                                          "float", within=Range(0, 1))
    positive_control_decades: float = setting(
        "eosinophils' median less than this many decades above the cut-off: REVIEW", "float",
        within=Range(0, 5))
    basophil_control_decades: float = setting(
        "basophils' median less than this many decades above the cut-off: REVIEW (they carry less "
        "IL-5Ra than eosinophils)", "float", within=Range(0, 5))
    clearly_positive_share: float = setting(
        "a positive internal control with at least this CD125+ share is never a failed stain",
        "float", within=Range(0, 1))
    max_negative_control: float = setting("negative internal control above this CD125+ share: REVIEW",
                                          "float", within=Range(0, 1))


@dataclass(frozen=True)
class Gating:
    seed: int = setting("seed of every random subsample and mixture fit", "int", within=Range(0, 2**32 - 1))
    min_events: int = setting("a tube with fewer events fails", "int", within=Range(1, 1e9))
    max_events_fit: int = setting("events subsampled to find the populations", "int",
                                  within=Range(1000, 1e8))
    singlet_ratio_mad: float = setting("singlets: FSC-A/FSC-H within this many MADs of the median",
                                       "float", within=Range(0, 100, open_lo=True))
    components: int = setting("Gaussian mixture components in the backbone space", "int", within=Range(2, 50))
    min_population_share: float = setting("least share of the lymphocyte reference population", "float",
                                          within=Range(0, 1))
    region_radius: float = setting("Mahalanobis radius of the population gates", "float",
                                   within=Range(0.5, 10))
    region_odds: float = setting("a population gate stops where its population is this much less likely "
                                 "than a neighbour", "float", within=Range(1, 1e6))
    levels: dict = setting("feature -> ascending edges (decades from the lymphocytes) between its levels",
                           "levels")
    phenotypes: dict = setting("population -> feature -> allowed levels; the first matching row names "
                               "a component", "phenotypes")
    checks: GatingChecks = setting("self-checks of the gated blasts and the internal controls", GatingChecks)


@dataclass(frozen=True)
class ThresholdSettings:
    """How the CD125 cut-off is set (``model.Threshold`` is a cut-off as set for one tube)."""

    control_percentile: float = setting("CD125 cut-off = this percentile of the control's blasts",
                                        "float", within=Range(50, 100, open_hi=True))
    min_control_blasts: int = setting("fewer control blasts and the control is not trusted", "int",
                                      within=Range(1, 1e9))
    fallback: str = setting("cut-off without a usable control", "str",
                            choices=("internal", "fixed"))
    internal_percentile: float = setting("percentile of CD125 on the internal negative population",
                                         "float", within=Range(50, 100, open_hi=True))
    fixed_cutoff: float = setting("raw (compensated) CD125 cut-off when fallback is fixed", "float",
                                  nullable=True, within=Range(-1e9, 1e9))
    overlap_alpha: float = setting("dim-CD125 guard: level of the KS critical value", "float",
                                   within=Range(0, 0.5, open_lo=True))
    overlap_min_gap: float = setting("dim-CD125 guard: least shortfall that withholds a NOT_MET",
                                     "float", within=Range(0, 1))


@dataclass(frozen=True)
class Criterion:
    positive_fraction: float = setting("CD125+ blasts / blasts needed for MET", "float",
                                       within=Range(0, 1, open_lo=True, open_hi=True))
    min_blasts: int = setting("fewer blasts: REVIEW", "int", within=Range(1, 1e9))
    confidence: float = setting("Wilson interval level; REVIEW when it straddles the threshold",
                                "float", within=Range(0.5, 1, open_hi=True))
    internal_cutoff_margin: float = setting(
        "without a control tube's cut-off, the interval must lie this far from positive_fraction",
        "float", within=Range(0, 0.5))


@dataclass(frozen=True)
class Beads:
    lot: str = setting("bead lot name, recorded with every density (a sheet's bead_lot file wins)", "str",
                       nullable=True)
    dye: str = setting("the beads' fluorochrome; density only where CD125 is on the same dye", "str")
    molecules: list = setting("dye molecules per bead of each level, dimmest first (empty: no lot here)",
                              "numbers")
    singlet_mad: float = setting("single beads: within this many robust SDs of the scatter centre",
                                 "float", within=Range(1, 100))
    min_r2: float = setting("bead curve R² below this: density withheld", "float", within=Range(0, 1))
    slope_min: float = setting("bead curve log-log slope below this: density withheld", "float",
                               within=Range(0, 10, open_lo=True))
    slope_max: float = setting("bead curve log-log slope above this: density withheld", "float",
                               within=Range(0, 10, open_lo=True))


@dataclass(frozen=True)
class Settings:
    panel: Panel = setting("which channel carries which marker", Panel)
    compensation: Compensation = setting("spillover correction", Compensation)
    transform: Transform = setting("display and gating transforms", Transform)
    qc: QC = setting("acquisition QC", QC)
    gating: Gating = setting("automated gating", Gating)
    threshold: ThresholdSettings = setting("the CD125 cut-off", ThresholdSettings)
    criterion: Criterion = setting("the trial criterion", Criterion)
    beads: Beads = setting("CD125 antigen density from calibration beads", Beads)

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples), as in the YAML."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# -- loading -------------------------------------------------------------------------------------

def default_settings_dict() -> dict[str, Any]:
    """The packaged default analysis settings, as a fresh dict."""
    text = resources.files("cd125gate").joinpath("data/default_config.yaml").read_text()
    return yaml.safe_load(text)


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the ``analysis`` block (or whole file) at ``path``, then ``overrides``, checked."""
    data = default_settings_dict()
    layers = []
    if path is not None:
        try:
            document = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(path, "cannot read settings: " + " ".join(str(exc).split())) from None
        if not isinstance(document, dict):
            raise InputError(path, "settings must be a mapping of keys to values")
        layers.append((path, document.get("analysis", document)))
    if overrides:
        layers.append(("settings overrides", overrides))
    source = "default settings"
    try:
        for source, layer in layers:  # noqa: B007 - the except below names the layer that failed
            data = merge_layer(data, layer)
        return _check_cross_fields(build_section(Settings, data, ""))
    except BadSetting as exc:
        raise InputError(source, str(exc)) from None


def _check_cross_fields(settings):
    known = set(settings.panel.markers) | set(settings.panel.scatter)
    unknown = [m for m in settings.panel.required if m not in known]
    if unknown:
        raise BadSetting(f"panel.required: {', '.join(unknown)} not among panel.markers or panel.scatter")
    for needed in ("FSC-A", "SSC-A", "CD45", "CD125"):
        if needed not in settings.panel.required:
            raise BadSetting(f"panel.required: must include {needed} (the gating and the criterion need it)")
    # Checked here, once, rather than by every file's panel mapping: a batch's early panel
    # check reads files and would put this down to each of them.
    from cd125gate.analysis.panel import alias_keys

    try:
        alias_keys(settings.panel.markers)
    except InputError as exc:
        raise BadSetting(f"panel.markers: {exc.problem}") from None
    logicle = settings.transform.logicle
    try:  # the widest W the fit can return must still make a valid logicle
        from cd125gate.analysis.transforms import check_logicle

        check_logicle(262144.0, logicle.max_width, logicle.M, logicle.A)
    except ValueError as exc:
        raise BadSetting(f"transform.logicle (M={logicle.M}, A={logicle.A}, max_width={logicle.max_width}): "
                         f"{exc}") from None
    if settings.compensation.precompensated and settings.compensation.matrix is not None:
        raise BadSetting("compensation.precompensated: cannot be true while compensation.matrix is set "
                   "(a matrix would compensate the data again)")
    beads = settings.beads
    if beads.slope_min > beads.slope_max:
        raise BadSetting(f"beads.slope_min: {beads.slope_min:g} is above beads.slope_max {beads.slope_max:g}")
    if beads.molecules and (len(beads.molecules) < 3 or sorted(beads.molecules) != beads.molecules):
        raise BadSetting("beads.molecules: list 3 or more ascending numbers, one per bead level, dimmest first")
    if settings.threshold.fallback == "fixed" and settings.threshold.fixed_cutoff is None:
        raise BadSetting("threshold.fixed_cutoff: must be set when threshold.fallback is fixed")
    return settings


def settings_digest(settings: Settings) -> str:
    """SHA-256 of the canonical JSON of the settings: same settings, same digest."""
    canonical = json.dumps(settings.as_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the workflow's config schema ----------------------------------------------------------------

def json_schema(cls: type = Settings) -> dict[str, Any]:
    """JSON schema of a settings section, from its fields (for workflow/schemas/config.schema.yaml)."""
    properties = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        kind = meta["kind"]
        if isinstance(kind, type):
            prop = json_schema(kind)
        elif kind in ("bool", "str", "int", "float"):
            prop = {"type": {"bool": "boolean", "str": "string", "int": "integer", "float": "number"}[kind]}
            if meta["choices"]:
                prop["enum"] = list(meta["choices"])
            if meta["within"] is not None:
                r = meta["within"]
                prop["exclusiveMinimum" if r.open_lo else "minimum"] = r.lo
                prop["exclusiveMaximum" if r.open_hi else "maximum"] = r.hi
        elif kind == "names":
            prop = {"type": "array", "items": {"type": "string", "minLength": 1}}
        elif kind == "numbers":
            prop = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}}
        elif kind == "levels":
            prop = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}}
        elif kind == "phenotypes":
            prop = {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {
                "type": "array", "minItems": 1, "items": {"type": "string"}}}}
        else:
            prop = {"type": "object", "additionalProperties": {
                "type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}}
        if meta["nullable"]:
            prop["type"] = [prop["type"], "null"]
        prop["description"] = meta["doc"]
        properties[f.name] = prop
    return {"type": "object", "properties": properties, "additionalProperties": False}


if __name__ == "__main__":  # python -m cd125gate.settings: print the schema of the analysis block
    yaml.safe_dump(json_schema(), sys.stdout, sort_keys=False, width=100)
