"""Loading settings: merging a layer over the defaults and checking every value against its field.

Each field of a settings section (``settings``) says in its metadata what it
takes (``settings.setting``); a value that does not fit raises ``BadSetting``
with the key path, which ``settings.load_settings`` turns into one line.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class BadSetting(Exception):
    """A settings value that is not allowed; the message names its key path."""


def merge_layer(base: dict[str, Any], override: object, path: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; an unknown key is refused with its path."""
    if not isinstance(override, dict):
        raise BadSetting(f"{path or 'analysis'}: expected a mapping of keys to values, got {override!r}")
    merged = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in merged:
            raise BadSetting(f"unknown settings key '{where}'")
        # Spellings and a phenotype's rule are replaced whole: a merge could never remove one.
        whole = key in ("markers", "scatter") or path.endswith("phenotypes")
        if isinstance(merged[key], dict) and isinstance(value, dict) and not whole:
            merged[key] = merge_layer(merged[key], value, where)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_section(cls: type[T], data: object, path: str) -> T:
    """An instance of the settings section ``cls`` from ``data``, every value checked against its field."""
    if not isinstance(data, dict):
        raise BadSetting(f"{path or 'analysis'}: expected a mapping of keys to values, got {data!r}")
    values = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            raise BadSetting(f"{where}: missing")
        values[f.name] = _value(f.metadata, data[f.name], where)
    return cls(**values)


def _value(meta, value, where):
    kind = meta["kind"]
    if value is None:
        if meta["nullable"]:
            return None
        raise BadSetting(f"{where}: must be set")
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return build_section(kind, value, where)
    if kind == "bool":
        if not isinstance(value, bool):
            raise BadSetting(f"{where}: {value!r} is not true or false")
        return value
    if kind in ("int", "float"):
        return _number(meta, value, where)
    if kind == "str":
        if not isinstance(value, str) or (meta["choices"] and value not in meta["choices"]):
            allowed = f"one of {', '.join(meta['choices'])}" if meta["choices"] else "text"
            raise BadSetting(f"{where}: {value!r} is not {allowed}")
        return value
    if kind == "names":
        return _names(value, where)
    if kind == "numbers":
        return _numbers(value, where)
    if kind == "levels":
        return _levels(value, where)
    if kind == "phenotypes":
        return _phenotypes(value, where)
    return _aliases(value, where)


def _number(meta, value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadSetting(f"{where}: {value!r} is not a number")
    if meta["kind"] == "int" and not float(value).is_integer():
        raise BadSetting(f"{where}: {value!r} is not a whole number")
    if value != value or (meta["within"] is not None and value not in meta["within"]):
        raise BadSetting(f"{where}: {value!r} is not in {meta['within']}")
    return int(value) if meta["kind"] == "int" else value


def _names(value, where):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadSetting(f"{where}: expected a list of names, got {value!r}")
    return list(value)


def _numbers(value, where):
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
        raise BadSetting(f"{where}: expected a list of positive numbers, got {value!r}")
    return list(value)


def _aliases(value, where):
    if not isinstance(value, dict):
        raise BadSetting(f"{where}: expected a mapping of names to lists of spellings, got {value!r}")
    for name, spellings in value.items():
        _names(spellings, f"{where}.{name}")
        if not spellings:
            raise BadSetting(f"{where}.{name}: needs at least one spelling")
    return dict(value)


# The level names of each feature of the phenotype table (populations.py); other markers use MARKER.
LEVEL_NAMES = {"CD45": ("neg", "dim", "pos", "bright"), "SSC": ("low", "mid", "high"), "FSC": ("low", "normal")}
MARKER_LEVEL_NAMES = ("neg", "dim", "pos", "bright")


def _levels(value, where):
    if not isinstance(value, dict) or "markers" not in value:
        raise BadSetting(f"{where}: expected feature -> list of edges, with a 'markers' entry, got {value!r}")
    for name, edges in value.items():
        names = LEVEL_NAMES.get(name, MARKER_LEVEL_NAMES)
        numeric = isinstance(edges, list) and all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
        if not numeric or len(edges) != len(names) - 1 or sorted(edges) != edges:
            raise BadSetting(f"{where}.{name}: expected {len(names) - 1} ascending numbers "
                       f"(edges between {', '.join(names)}), got {edges!r}")
    return dict(value)


def _phenotypes(value, where):
    if not isinstance(value, dict) or not value:
        raise BadSetting(f"{where}: expected population -> feature -> allowed levels, got {value!r}")
    for population, rule in value.items():
        if not isinstance(rule, dict):
            raise BadSetting(f"{where}.{population}: expected feature -> allowed levels, got {rule!r}")
        for feature, allowed in rule.items():
            names = LEVEL_NAMES.get(feature, MARKER_LEVEL_NAMES)
            if not isinstance(allowed, list) or not allowed or any(a not in names for a in allowed):
                raise BadSetting(f"{where}.{population}.{feature}: expected a list of {', '.join(names)}, "
                           f"got {allowed!r}")
    return dict(value)
