import pytest

from cd125gate.config import config_digest, default_config, load_config
from cd125gate.errors import InputError


def test_overrides_merge_deeply_and_change_the_digest():
    config = load_config(overrides={"threshold": {"control_percentile": 99.0}})
    assert config["threshold"]["control_percentile"] == 99.0
    assert config["threshold"]["min_control_blasts"] == default_config()["threshold"]["min_control_blasts"]
    assert config_digest(config) != config_digest(default_config())
    assert config_digest(load_config()) == config_digest(default_config())


def test_unknown_key_is_named_with_its_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("analysis:\n  gating:\n    sed: 1\n")
    with pytest.raises(InputError, match=r"c.yaml: unknown config key 'gating.sed'"):
        load_config(path)


def test_unreadable_config_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("analysis: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: cannot read config"):
        load_config(path)
