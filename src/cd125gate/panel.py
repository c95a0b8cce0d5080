"""Which channel carries which marker: matching $PnS / $PnN against the configured spellings."""

import re

from .errors import InputError

SCATTER = ("FSC-A", "FSC-H", "SSC-A", "SSC-H", "Time")


def normalise(text):
    """Spelling-insensitive key: lower case, 'α' -> 'a', no spaces or punctuation."""
    text = (text or "").lower().replace("α", "a")
    return re.sub(r"[\s\-_/.()]+", "", text)


def _match(aliases, texts):
    wanted = {normalise(a) for a in aliases}
    return [name for name, text in texts if normalise(text) in wanted]


def resolve_markers(channels, panel, source):
    """Map marker names to $PnN for one file.

    Fluorescence markers are looked up in $PnS first (what the tube was stained
    with), then in $PnN; scatter and Time in $PnN only. A marker found on two
    channels is ambiguous and refused, since a wrong channel would silently
    change the answer.

    :param channels: the file's channels (objects with ``name`` and ``stain``)
    :param panel: the ``panel`` section of the analysis settings
    :param source: file path, for error messages
    :return: dict marker -> $PnN (markers absent from the file are left out)
    """
    found = {}
    by_name = [(c.name, c.name) for c in channels]
    by_stain = [(c.name, c.stain) for c in channels if c.stain]
    for marker, aliases in panel.scatter.items():
        hits = _match(aliases, by_name)
        if hits:
            found[marker] = hits[0]
    for marker, aliases in panel.markers.items():
        hits = _match(aliases, by_stain) or _match(aliases, by_name)
        if len(set(hits)) > 1:
            raise InputError(source, f"marker {marker} matches several channels: {', '.join(hits)}")
        if hits:
            found[marker] = hits[0]
    missing = [m for m in panel.required if m not in found]
    if missing:
        have = ", ".join(f"{c.name} ({c.stain})" if c.stain else c.name for c in channels)
        raise InputError(source, f"required marker(s) {', '.join(missing)} not found among channels: {have}")
    return found


NON_FLUORESCENCE = re.compile(r"^(fsc|ssc|fs|ss|time|event|width|hdr)")


def fluorescence_channels(channels, markers):
    """$PnN of the channels to compensate and transform: all but scatter, Time and counters."""
    not_fluor = {markers.get(m) for m in SCATTER}
    return [
        c.name for c in channels
        if c.name not in not_fluor and not NON_FLUORESCENCE.match(normalise(c.name))
    ]
