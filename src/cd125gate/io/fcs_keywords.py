"""An FCS file's HEADER and TEXT segments: parsing them, and checking the keywords.

Everything here reads keywords only; the DATA segment is decoded in
``fcs_events`` and the two are put together in ``fcs.read_fcs``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from cd125gate.errors import InputError

VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1", "FCS3.2")
HEADER_SIZE = 58
# Bytes that some writers pad TEXT with after its last delimiter (CyFlow pads with spaces).
TEXT_PADDING = " \0\r\n\t"
# Only ASCII digits: str.isdigit() also accepts '²' and int() accepts '١٢' or '1_000'.
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# Whole numbers in TEXT are byte offsets, event and channel counts and bit widths; 2**64 has
# 20 digits and no FCS file comes near it. More significant digits are damage, not data: int()
# of over 4,300 digits raises Python's own ValueError, and sums and products of fewer can give
# numbers too long to print in a message. Leading zeros (fixed-width writers) do not count.
MAX_DIGITS = 20
# Repeated warnings of one kind are summarised after this many (a hostile file can
# repeat a channel name 50,000 times).
MAX_WARNINGS_PER_KIND = 5
# Parsed numbers are cached only for short strings, so that the cache never keeps a
# hostile file's text alive.
_CACHED_LENGTH = 64


def _cached_when_short(parse):
    """``parse(text, ...)`` cached for texts of at most _CACHED_LENGTH characters.

    A file with 50,000 channels repeats the same few range, gain and width strings.
    """
    cached = functools.lru_cache(maxsize=4096)(parse)

    @functools.wraps(parse)
    def call(text, *args):
        return cached(text, *args) if len(text) <= _CACHED_LENGTH else parse(text, *args)

    return call


@dataclass(frozen=True)
class Channel:
    index: int            # n of $PnN (1-based)
    name: str             # $PnN, made unique if the file repeats a name
    stain: str | None     # $PnS, None if absent or blank
    range: float          # $PnR
    bits: int | None      # $PnB
    amplification: tuple[float, float]  # $PnE as (decades, offset), (0.0, 0.0) when linear or absent
    gain: float | None    # $PnG


@dataclass(frozen=True)
class Header:
    """The 58-byte HEADER: the version and the (first, last) byte offsets of TEXT and DATA."""

    version: str
    text: tuple[int, int]
    data: tuple[int, int]


def parse_header(raw: bytes, path: str, size: int, where: str = "") -> Header:
    """Parse the 58-byte HEADER: the version and the byte offsets of TEXT and DATA."""
    if len(raw) < HEADER_SIZE:
        raise InputError(path, f"{where}file is {size} bytes, too short for an FCS HEADER (58 bytes)")
    version = raw[:6].decode("ascii", "replace")
    if not version.startswith("FCS"):
        raise InputError(path, f"{where}not an FCS file (starts with {raw[:6]!r}, expected 'FCSx.y')")
    if version not in VERSIONS:
        raise InputError(path, f"{where}FCS version {version!r} is not supported ({', '.join(VERSIONS)})")
    fields = [raw[10 + 8 * i:18 + 8 * i] for i in range(6)]
    offsets = []
    for name, cell in zip(("TEXT start", "TEXT end", "DATA start", "DATA end"), fields):
        text = cell.decode("ascii", "replace").strip()
        # Blank DATA offsets are legal: files over 99,999,999 bytes keep them only in TEXT.
        if text == "" and name.startswith("DATA"):
            offsets.append(0)
        elif whole_number(text) is not None:
            offsets.append(whole_number(text))
        else:
            raise InputError(path, f"{where}HEADER {name} offset is not a number: {cell!r}")
    text_start, text_end = offsets[0], offsets[1]
    if not HEADER_SIZE <= text_start < text_end:
        raise InputError(path, f"{where}HEADER gives an impossible TEXT segment (bytes {text_start}-{text_end})")
    if text_end >= size:
        raise InputError(
            path, f"{where}TEXT segment ends at byte {text_end} but the file has {size} bytes: truncated")
    return Header(version, (text_start, text_end), (offsets[2], offsets[3]))


def parse_text(raw: bytes, path: str, warnings: list[str]) -> dict[str, str]:
    """Split the TEXT segment into a keyword -> value dict (keys upper-cased, '$' kept)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # FCS 3.1 asks for UTF-8, older writers used Latin-1 or Mac Roman. Latin-1
        # maps every byte, so keywords and numbers stay readable.
        text = raw.decode("latin-1")
        warnings.append(f"TEXT is not valid UTF-8 (byte {exc.start}); decoded as Latin-1")
    delimiter = text[0]
    body = text[1:]
    if body.endswith(delimiter):
        body = body[:-1]
    else:
        last = body.rfind(delimiter)
        if last >= 0 and body[last + 1:].strip(TEXT_PADDING) == "":
            body = body[:last]
    tokens = _split_escaped(body, delimiter)
    if len(tokens) % 2:
        warnings.append(f"TEXT has an odd number of keywords and values; unpaired {tokens[-1][:40]!r} ignored")
        tokens = tokens[:-1]
    keys = [key.strip().upper() for key in tokens[::2]]
    values = tokens[1::2]
    keywords = dict(zip(keys, values))
    if len(keywords) < len(keys):
        # A key repeats: the first value is used (the slow path, only for such files).
        keywords = {}
        repeated = []
        for key, value in zip(keys, values):
            if key in keywords:
                if keywords[key] != value:
                    repeated.append(f"keyword {key} appears twice with different values; the first is used")
                continue
            keywords[key] = value
        warnings += summarised(repeated)
    return keywords


def summarised(items: list[str]) -> list[str]:
    """At most MAX_WARNINGS_PER_KIND warnings, then how many more there were."""
    if len(items) <= MAX_WARNINGS_PER_KIND:
        return items
    return items[:MAX_WARNINGS_PER_KIND] + [f"... and {len(items) - MAX_WARNINGS_PER_KIND} more like these"]


def _split_escaped(body, delimiter):
    """Split on ``delimiter``, where a doubled delimiter stands for the character itself.

    Doubled delimiters are swapped for a character absent from the text, the
    text is split, and the swap is undone: three linear passes in C, where
    joining the pieces in Python took 30 s for a million escapes. Runs pair
    from the left, so three delimiters are an escaped one followed by a split.
    """
    escaped = delimiter * 2
    if escaped not in body:
        return body.split(delimiter)
    # Private-use characters: the first is almost never in a TEXT segment (a C-speed
    # scan); a text that holds it gets one linear pass to collect what is used.
    placeholder = "\ue000"
    if placeholder in body:
        used = set(body)
        placeholder = next(ch for ch in map(chr, range(0xE001, 0x110000)) if ch not in used)
    return [token.replace(placeholder, delimiter) if placeholder in token else token
            for token in body.replace(escaped, placeholder).split(delimiter)]


def required_keyword(keywords: dict[str, str], key: str, path: str) -> str:
    if key not in keywords:
        raise InputError(path, f"required keyword {key} is missing from TEXT")
    return keywords[key]


def int_keyword(keywords: dict[str, str], key: str, path: str, what: str) -> int:
    """A whole number (sign allowed) of at most MAX_DIGITS digits; ``what`` it counts names it."""
    value = required_keyword(keywords, key, path)
    number = whole_number(value, signed=True)
    if number is None:
        if too_many_digits(value):
            _check_digits(value, key, path, what)  # raises, giving the number of digits
        raise InputError(path, f"keyword {key} is not a whole number: {value[:40]!r}")
    return number


def whole_number(text: str, *, signed: bool = False) -> int | None:
    """``text`` as an int if it is a whole number in ASCII digits (a sign only when ``signed``)
    of at most MAX_DIGITS significant digits, else None. Surrounding spaces are allowed."""
    return _whole_number(text, signed)


@_cached_when_short
def _whole_number(text, signed):
    text = text.strip()
    if not _WHOLE_NUMBER.fullmatch(text) or (not signed and text[0] in "+-"):
        return None
    if significant_digits(text) > MAX_DIGITS:
        return None
    return _to_int(text)


def too_many_digits(text: str) -> bool:
    """Whether ``text`` is a whole number with more than MAX_DIGITS significant digits."""
    return bool(_WHOLE_NUMBER.fullmatch(text.strip())) and significant_digits(text) > MAX_DIGITS


def significant_digits(text: str) -> int:
    """Significant digits of a whole number's text: spaces, sign and leading zeros not counted."""
    return len(text.strip().lstrip("+-").lstrip("0"))


def _check_digits(text, key, path, what):
    """Refuse a whole number too long to be a plausible ``what`` (see MAX_DIGITS)."""
    digits = significant_digits(text)
    if digits > MAX_DIGITS:
        raise InputError(path, f"{key} is not a plausible {what} ({digits:,} digits)")


def _to_int(text):
    """int() of a whole number of at most MAX_DIGITS significant digits (leading zeros are
    stripped first: they would count towards Python's digit limit)."""
    text = text.strip()
    sign = "-" if text.startswith("-") else ""
    return int(sign + (text.lstrip("+-").lstrip("0") or "0"))


def float_keyword(keywords: dict[str, str], key: str, path: str) -> float:
    """A finite number: inf or nan in a range, gain or offset would poison every event."""
    value = required_keyword(keywords, key, path)
    number = finite_number(value)
    if number is None:
        raise InputError(path, f"keyword {key} is not a finite number: {value[:40]!r}")
    return number


@_cached_when_short
def finite_number(text: str) -> float | None:
    """``float(text)`` if it is a finite number written in ASCII, else None."""
    text = text.strip()
    if not text.isascii() or "_" in text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_byte_order(value: str, path: str) -> str:
    """'little' or 'big' from $BYTEORD ('1,2,3,4' or '4,3,2,1', any width)."""
    order = [part.strip() for part in value.split(",")]
    ascending = [str(i) for i in range(1, len(order) + 1)]
    if order == ascending:
        return "little"
    if order == ascending[::-1]:
        return "big"
    raise InputError(path, f"$BYTEORD {value!r} is neither little- nor big-endian")


def channels_from_keywords(keywords: dict[str, str], path: str, warnings: list[str]) -> list[Channel]:
    """The $PnN/$PnS/$PnR/$PnB/$PnE/$PnG of every channel, checked, names made unique."""
    count = int_keyword(keywords, "$PAR", path, "channel count")
    if count < 1:
        raise InputError(path, f"$PAR is {count}: the file has no channels")
    if count > len(keywords):
        # Each channel needs $PnN, $PnB and $PnR: refuse before building per-channel lists.
        raise InputError(path, f"$PAR is {count} but TEXT holds only {len(keywords)} keywords")
    # Column by column in comprehensions (a file may have 50,000 channels); each
    # distinct value string is parsed once (the parsers are cached).
    prefixes = [f"$P{n}" for n in range(1, count + 1)]
    get = keywords.get
    names = _column(keywords, prefixes, "N", path)
    ranges = [finite_number(value) for value in _column(keywords, prefixes, "R", path)]
    if None in ranges or min(ranges) <= 0.0:
        n = next(i for i, r in enumerate(ranges, start=1) if r is None or r <= 0.0)
        _range(keywords, n, path)  # raises, naming the keyword
    bits = [whole_number(value) for value in _column(keywords, prefixes, "B", path)]
    if None in bits:
        for n, value in enumerate(bits, start=1):
            if value is None:
                _check_digits(keywords[f"$P{n}B"], f"$P{n}B", path, "bit width")
    amplifications = [_decades_offset(get(p + "E", "0,0")) for p in prefixes]
    if None in amplifications:
        _amplification(keywords, amplifications.index(None) + 1, path)  # raises
    gains = [get(p + "G") for p in prefixes]
    if any(gain is not None for gain in gains):
        gains = [None if gain is None else float_keyword(keywords, p + "G", path)
                 for p, gain in zip(prefixes, gains)]
    stains = [get(p + "S", "").strip() or None for p in prefixes]
    seen = set()
    next_suffix = {}
    renamed = []
    channels = []
    for n, name, stain, range_, bits_, amplification, gain in zip(
            range(1, count + 1), names, stains, ranges, bits, amplifications, gains):
        name = name.strip()
        if name in seen:
            unique = _unique_name(name, seen, next_suffix)
            renamed.append(f"channel name {name!r} repeats; $P{n}N renamed to {unique!r}")
            name = unique
        seen.add(name)
        channels.append(Channel(n, name, stain, range_, bits_, amplification, gain))
    warnings += summarised(renamed)
    return channels


def _column(keywords, prefixes, letter, path):
    """``$PnX`` for every n, refusing the first that is missing."""
    values = [keywords.get(p + letter) for p in prefixes]
    if None in values:
        required_keyword(keywords, f"$P{values.index(None) + 1}{letter}", path)
    return values


def _unique_name(name, seen, next_suffix):
    """``name``, or ``name_k`` with the smallest free k >= 2.

    ``next_suffix`` remembers where the search for each name stopped, so
    10,000 repeats of one name cost linear time, not quadratic.
    """
    if name not in seen:
        return name
    k = next_suffix.get(name, 2)
    while f"{name}_{k}" in seen:
        k += 1
    next_suffix[name] = k + 1
    return f"{name}_{k}"


def _range(keywords, n, path):
    value = float_keyword(keywords, f"$P{n}R", path)
    if value <= 0.0:
        raise InputError(path, f"$P{n}R is {value:g}: a channel's range must be positive")
    return value


def _amplification(keywords, n, path):
    value = keywords.get(f"$P{n}E", "0,0")
    amplification = _decades_offset(value)
    if amplification is None:
        raise InputError(path, f"$P{n}E is not 'decades,offset' (two finite numbers): {value[:40]!r}")
    return amplification


@_cached_when_short
def _decades_offset(value):
    parts = [finite_number(part) for part in value.split(",")]
    if len(parts) != 2 or None in parts or parts[0] < 0:
        return None
    decades, offset = parts
    if decades > 0 and offset == 0:
        offset = 1.0  # the FCS standard says to read a log offset of 0 as 1 (flowio does the same)
    return (decades, offset)

