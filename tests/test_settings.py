"""Typed analysis settings: merged, checked when loaded, one line per bad value, schema in step."""

import pytest
import yaml

from cd125gate.errors import InputError
from cd125gate.settings import Settings, default_settings_dict, json_schema, load_settings, settings_digest
from conftest import ROOT


def test_overrides_merge_deeply_and_change_the_digest():
    settings = load_settings(overrides={"threshold": {"control_percentile": 99.0}})
    assert isinstance(settings, Settings)
    assert settings.threshold.control_percentile == 99.0
    assert settings.threshold.min_control_blasts == default_settings_dict()["threshold"]["min_control_blasts"]
    assert settings_digest(settings) != settings_digest(load_settings())
    assert load_settings().as_dict() == default_settings_dict()


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        load_settings().criterion.positive_fraction = 0.3


@pytest.mark.parametrize("overrides, message", [
    ({"criterion": "x"}, "criterion: expected a mapping of keys to values, got 'x'"),
    ({"criterion": {"positive_fraction": 50}}, "criterion.positive_fraction: 50 is not in 0 < x < 1"),
    ({"criterion": {"min_blasts": 2.5}}, "criterion.min_blasts: 2.5 is not a whole number"),
    ({"criterion": {"confidence": "high"}}, "criterion.confidence: 'high' is not a number"),
    ({"qc": {"time_qc": "yes"}}, "qc.time_qc: 'yes' is not true or false"),
    ({"threshold": {"fallback": "guess"}}, "threshold.fallback: 'guess' is not one of internal, fixed"),
    ({"threshold": {"fallback": "fixed"}}, "threshold.fixed_cutoff: must be set when threshold.fallback is fixed"),
    ({"gating": {"sed": 1}}, "unknown settings key 'gating.sed'"),
    ({"panel": {"required": ["FSC-A", "SSC-A", "CD45"]}}, "panel.required: must include CD125"),
    ({"panel": {"markers": {"CD125": []}}}, "panel.markers.CD125: needs at least one spelling"),
    ({"compensation": {"precompensated": "yes"}}, "compensation.precompensated: 'yes' is not true or false"),
    ({"compensation": {"precompensated": True, "matrix": "m.csv"}},
     "compensation.precompensated: cannot be true while compensation.matrix is set"),
])
def test_a_bad_value_is_one_line_naming_its_key_and_what_is_allowed(overrides, message):
    with pytest.raises(InputError) as caught:
        load_settings(overrides=overrides)
    assert caught.value.source == "settings overrides"
    assert message in caught.value.problem and "\n" not in str(caught.value)


def test_a_spelling_given_for_two_markers_is_refused_when_the_settings_load():
    # Once here, not by every file's panel mapping, where a batch's early check could not tell it apart.
    markers = dict(default_settings_dict()["panel"]["markers"])
    markers["CD34"] = list(markers["CD34"]) + ["CD45"]
    with pytest.raises(InputError) as caught:
        load_settings(overrides={"panel": {"markers": markers}})
    assert caught.value.problem == "panel.markers: the spelling 'CD45' is given for both CD45 and CD34"


def test_a_settings_file_names_itself(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("analysis:\n  gating:\n    sed: 1\n")
    with pytest.raises(InputError, match=r"c.yaml: unknown settings key 'gating.sed'"):
        load_settings(path)
    path.write_text("analysis: [unclosed\n")
    with pytest.raises(InputError, match="c.yaml: cannot read settings"):
        load_settings(path)


def test_the_workflow_schema_of_the_analysis_block_is_generated_from_the_settings():
    # Regenerate with: python -m cd125gate.settings (and paste under properties.analysis)
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    analysis = schema["properties"]["analysis"]
    assert {k: v for k, v in analysis.items() if k not in ("description", "default")} == json_schema()


def test_the_defaults_pass_the_generated_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator(json_schema()).validate(default_settings_dict())
