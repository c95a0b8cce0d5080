"""Analysis settings: the packaged defaults, overridden by a user's config."""

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml

from .errors import InputError


def default_config():
    """The packaged default analysis settings, as a fresh dict."""
    text = resources.files("cd125gate").joinpath("data/default_config.yaml").read_text()
    return yaml.safe_load(text)


def merge(base, override, path=""):
    """Deep-merge ``override`` into a copy of ``base``; an unknown key raises KeyError with its path."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        where = f"{path}.{key}" if path else str(key)
        if key not in merged:
            raise KeyError(where)
        if isinstance(merged[key], dict) and isinstance(value, dict) and key != "markers":
            merged[key] = merge(merged[key], value, where)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path=None, overrides=None):
    """Defaults, then the ``analysis`` block (or whole file) at ``path``, then ``overrides``."""
    config = default_config()
    layers = []
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(path, "cannot read config: " + " ".join(str(exc).split())) from None
        layers.append((path, data.get("analysis", data)))
    if overrides:
        layers.append(("config overrides", overrides))
    for source, layer in layers:
        try:
            config = merge(config, layer)
        except KeyError as exc:
            raise InputError(source, f"unknown config key '{exc.args[0]}'") from None
    return config


def config_digest(config):
    """SHA-256 of the canonical JSON of the settings: same settings, same digest."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
