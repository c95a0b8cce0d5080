"""Which channel carries which marker, from $PnS / $PnN as labs write them.

A stain is a marker, alone or beside its fluorochrome in either order, with spaces,
hyphens, underscores or slashes between (`CD45-ECD`, `CD125 PE`, `PE-CD125`,
`HLA DR-FITC`, `CD34 PerCP-Cy5.5`, `IL-5Rα BV421`, BD's `CD21;FITC;530/30@488/B`).
Markers are recognised from the config's spellings and fluorochromes from the
maintained list ``data/fluorochromes.txt``, so a lab's names need no config edit.
A stain that names two of the panel's markers (`CD34/CD117 PE`), or a marker found
on two channels, is refused: a wrong channel would silently change the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.io.fcs import Channel
    from cd125gate.io.samplesheet import Sample
    from cd125gate.settings import Panel

SCATTER = ("FSC-A", "FSC-H", "SSC-A", "SSC-H", "Time")
# Markers a gate or check uses when the panel has them; the rest of the config's markers
# are named "optional" in `cd125gate panel` only when listed here.
OPTIONAL = ("CD34", "CD117", "HLA-DR", "CD33", "CD123", "viability", "FSC-H", "SSC-H", "Time")


def normalise(text: str | None) -> str:
    """Spelling-insensitive key: lower case, 'α'/'ɑ' -> 'a', no spaces or punctuation."""
    text = (text or "").lower().replace("α", "a").replace("ɑ", "a")
    return re.sub(r"[\s\-_/.()]+", "", text)


# A detector's filter (`530/30`, `695/40@488/A`): part of a BD stain text, never a marker.
FILTER = re.compile(r"\b\d{3}/\d{2,3}(?:@\d{3}(?:/[A-Za-z])?)?")
SEPARATORS = re.compile(r"[\s\-_/;,:()\[\]]+")


def tokens(text: str | None) -> list[str]:
    """The words of a stain or channel name, filters and separators dropped."""
    return [t for t in SEPARATORS.split(FILTER.sub(" ", text or "")) if normalise(t)]


@cache
def fluorochromes() -> frozenset[str]:
    """Normalised names of the fluorochromes in ``data/fluorochromes.txt``."""
    text = resources.files("cd125gate").joinpath("data/fluorochromes.txt").read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(normalise(line) for line in lines if line)


def alias_keys(aliases: dict[str, list[str]], source: str = "config") -> dict[str, str]:
    """Normalised spelling -> marker; a spelling given for two markers is refused."""
    keys = {}
    for marker, spellings in aliases.items():
        for spelling in spellings:
            key = normalise(spelling)
            if keys.setdefault(key, marker) != marker:
                raise InputError(source, f"the spelling {spelling!r} is given for both "
                                         f"{keys[key]} and {marker}")
    return keys


def _key(words):
    return normalise("".join(words))


def markers_named(text: str, keys: dict[str, str]) -> tuple[set[str], str | None]:
    """The markers a stain names: ``({marker}, None)``, ``(set(), None)`` or ``(set(), why)``.

    A marker is a run of words that is one of its spellings, the words on each side of it
    a fluorochrome, nothing, or another spelling of it. Two different markers named in
    one text is ambiguous.
    """
    words = tokens(text)
    spans = [(i, j, keys[_key(words[i:j])]) for i in range(len(words))
             for j in range(i + 1, len(words) + 1) if _key(words[i:j]) in keys]
    named = sorted({marker for _, _, marker in spans})
    if len(named) > 1:
        return set(), f"{text!r} could be {' or '.join(named)}"
    dyes = fluorochromes()

    def beside(part, marker):  # a fluorochrome, nothing, or the marker again ("viability;7-AAD")
        return not part or _key(part) in dyes or keys.get(_key(part)) == marker

    for i, j, marker in spans:
        if beside(words[:i], marker) and beside(words[j:], marker):
            return {marker}, None
    return set(), None


def _scatter_channel(aliases, channels):
    """$PnN of the first spelling (in the config's order) that some channel is named."""
    by_key = {}
    for channel in channels:
        by_key.setdefault(normalise(channel.name), channel.name)
    for spelling in aliases:
        if normalise(spelling) in by_key:
            return by_key[normalise(spelling)]
    return None


def channel_name_words(name: str) -> str:
    """A $PnN read as a stain: an area suffix (`CD125 PE-A`) is not part of the name."""
    return re.sub(r"[\s\-_]A$", "", name)


@dataclass(frozen=True)
class PanelMap:
    """What one file's channels carry, and what is missing or cannot be told."""

    path: str
    markers: dict[str, str]                # marker -> $PnN
    missing: list[str]                     # required markers not found
    missing_optional: list[str]            # markers the gating uses when present, not found
    unrecognised: list[tuple[str, str | None]]  # fluorescence channels carrying no known marker: (PnN, PnS)
    problems: list[str]                    # ambiguous names: cannot be mapped at all
    channels: tuple[tuple[str, str | None], ...]  # every channel as (PnN, PnS or None)

    @property
    def blocking(self) -> str | None:
        """One line why this file's panel cannot be mapped, or None.

        A required marker missing while some fluorescence channel is unrecognised may be
        that marker under a spelling we do not know: it cannot be told, so it blocks. A
        required marker missing from a tube whose every channel is recognised is simply
        not in the tube (the analysis then fails that sample with its reason).
        """
        if self.problems:
            return "; ".join(self.problems)
        scatter = [m for m in self.missing if m in SCATTER]
        if scatter:
            return f"no channel named as {', '.join(scatter)} (channels: {self.channel_list()})"
        if self.missing and self.unrecognised:
            unknown = ", ".join(f"{name} ({stain})" if stain else name for name, stain in self.unrecognised)
            return (f"required marker(s) {', '.join(self.missing)} not found; unrecognised channel(s): "
                    f"{unknown} (add the spelling to panel.markers if one of them is it)")
        return None

    def channel_list(self) -> str:
        """Every channel of the file, "PnN (PnS)", for messages."""
        return ", ".join(f"{name} ({stain})" if stain else name for name, stain in self.channels)


def map_panel(channels: Sequence[Channel], panel: Panel, source: str | Path) -> PanelMap:
    """Map the panel's markers to one file's channels, without raising for what is missing.

    Fluorescence markers are looked up in $PnS first (what the tube was stained with),
    then in $PnN; scatter and Time in $PnN only, the config's first spelling winning
    (Cytek's `SSC-B-A` is used only when there is no `SSC-A`).

    :param channels: the file's channels (objects with ``name`` and ``stain``)
    :param panel: the ``panel`` section of the analysis settings
    :param source: file path, for messages
    :return: PanelMap
    """
    found, problems = {}, []
    for marker, aliases in panel.scatter.items():
        hit = _scatter_channel(aliases, channels)
        if hit is not None:
            found[marker] = hit
    keys = alias_keys(panel.markers)
    scatter_names = set(found.values())
    hits, unrecognised = {}, []
    for channel in channels:
        if channel.name in scatter_names or not is_fluorescence(channel.name):
            continue
        named, why = markers_named(channel.stain, keys) if channel.stain else (set(), None)
        if not named and not why:
            named, why = markers_named(channel_name_words(channel.name), keys)
        if why:
            problems.append(f"channel {channel.name}: {why}")
        for marker in named:
            hits.setdefault(marker, []).append(channel.name)
        if not named and not why:
            unrecognised.append((channel.name, channel.stain))
    for marker, names in hits.items():
        if len(names) > 1:
            problems.append(f"marker {marker} matches several channels: {', '.join(names)}")
        else:
            found[marker] = names[0]
    missing = [m for m in panel.required if m not in found]
    optional = [m for m in OPTIONAL if m not in found and m not in panel.required
                and (m in panel.markers or m in panel.scatter)]
    return PanelMap(str(source), found, missing, optional, unrecognised, problems,
                    tuple((c.name, c.stain) for c in channels))


def resolve_markers(channels: Sequence[Channel], panel: Panel, source: str | Path) -> dict[str, str]:
    """Map marker names to $PnN for one file, refusing what cannot be mapped.

    :return: dict marker -> $PnN (markers absent from the file are left out)
    :raises InputError: a name that could be two markers, a marker on two channels,
        or a required marker missing (the message lists the file's channels)
    """
    mapped = map_panel(channels, panel, source)
    if mapped.problems:
        raise InputError(source, "; ".join(mapped.problems))
    if mapped.missing:
        raise InputError(source, f"required marker(s) {', '.join(mapped.missing)} not found among "
                                 f"channels: {mapped.channel_list()}")
    return mapped.markers


NON_FLUORESCENCE = re.compile(r"^(fsc|ssc|fs|ss|bsc|vssc|time|event|width|hdr)")


def is_fluorescence(name: str) -> bool:
    """Whether a $PnN can carry a stain: not scatter (Sony's BSC too), Time or counters."""
    return not NON_FLUORESCENCE.match(normalise(name))


def fluorescence_channels(channels: Sequence[Channel], markers: dict[str, str]) -> list[str]:
    """$PnN of the channels to compensate and transform: all but scatter, Time and counters."""
    not_fluor = {markers.get(m) for m in SCATTER}
    return [c.name for c in channels if c.name not in not_fluor and is_fluorescence(c.name)]


def map_file(path: str | Path, panel_settings: Panel, required: Iterable[str] | None = None) -> PanelMap:
    """The PanelMap of one file from its HEADER and TEXT (``required`` overrides the panel's
    required markers)."""
    from cd125gate.io.fcs import read_channels

    if required is not None:
        panel_settings = replace(panel_settings, required=list(required))
    return map_panel(read_channels(path), panel_settings, path)


def sheet_problems(samples: Iterable[Sample], panel_settings: Panel) -> list[str]:
    """One line per file of the sheet whose panel cannot be mapped.

    The same check runs in `cd125gate validate-sheet` and in the workflow before its
    first job, reading only HEADER and TEXT: a panel that cannot be mapped stops the
    batch in seconds with one line per file, rather than failing every job after the
    batch has run. A stained tube blocks when a required marker may hide under a name
    we do not know, or a name is ambiguous; a control tube (whose CD125 channel is
    unstained or an isotype by design) only when a name is ambiguous. A file that cannot
    be read is left to its job, which fails that sample alone with the reader's reason.
    """
    lines = []
    for sample in samples:
        for role, path, required in (("stained", sample.fcs, None), ("control", sample.control, ())):
            if path is None:
                continue
            try:
                why = map_file(path, panel_settings, required).blocking
            except InputError:
                continue
            if why:
                lines.append(f"sample {sample.sample_id}: {role} tube {path}: {why}")
    return lines
