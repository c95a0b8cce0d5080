"""Reading FCS 2.0, 3.0, 3.1 and 3.2 files into numpy arrays.

Why an own HEADER/TEXT/DATA parser instead of flowio 1.4 (which FlowKit uses):
flowio refuses or mis-reads several files that clinical instruments write and
that we must accept -- blank HEADER data offsets (files over 99,999,999 bytes),
24-bit integer channels (Cytek xP5), the one-byte-long DATA segment of MACSQuant
files (only behind a flag that also relaxes other checks) -- and it reads the
DATA segment before checking that the file holds it. The FCS layout is simple
enough that a short parser which checks every offset against the file size,
then decodes the bytes with ``np.frombuffer``, is the cleaner way to handle all
of these. Event values are then preprocessed exactly as flowio/FlowKit do
(``FlowData.as_array(preprocess=True)``), so results match FlowKit's raw events.
"""

import functools
import hashlib
import math
import os
import re
import stat
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1", "FCS3.2")
HEADER_SIZE = 58
# Vendor spellings of the spillover keyword, in the order we prefer them.
SPILLOVER_KEYWORDS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER")
# Bytes that some writers pad TEXT with after its last delimiter (CyFlow pads with spaces).
TEXT_PADDING = " \0\r\n\t"
# Largest FCS file read by default. Clinical tubes are a few MB to a few hundred MB; a
# bigger "FCS" file is far more likely a wrong path (a disk image, /dev/zero's cousin)
# than a tube, and reading it would exhaust memory. Override per call (max_bytes=) or
# for a whole run with the environment variable below.
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
MAX_BYTES_VARIABLE = "CD125GATE_MAX_FCS_BYTES"
# Decoded float64 events may take this many times the file-size limit (float32 data
# double in size; 8-bit integers grow eightfold).
DECODED_PER_FILE_BYTE = 4
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


@dataclass(frozen=True)
class Channel:
    index: int            # n of $PnN (1-based)
    name: str             # $PnN, made unique if the file repeats a name
    stain: str | None     # $PnS, None if absent or blank
    range: float          # $PnR
    bits: int | None      # $PnB
    amplification: tuple  # $PnE as (decades, offset) floats, (0.0, 0.0) when linear or absent
    gain: float | None    # $PnG


@dataclass(frozen=True)
class Spillover:
    channels: tuple       # $PnN names, in matrix order
    matrix: np.ndarray    # square float64
    keyword: str          # which keyword held it: "$SPILLOVER" | "SPILL" | "$SPILL" | "SPILLOVER"


@dataclass
class FCSData:
    """One FCS data set, read and checked.

    ``events`` are float64, one row per event, one column per channel, in the
    units FlowKit calls "raw" (preprocessed): log-amplified integer channels
    converted to linear, values divided by $PnG, and the channel named "Time"
    multiplied by $TIMESTEP (so it is in seconds when $TIMESTEP is given;
    ``timestep`` is kept for the record, do not apply it again).
    ``events`` is None when the file was read with ``read_events=False``.
    """

    path: str
    sha256: str
    version: str
    cytometer: str | None
    event_count: int
    channels: list
    keywords: dict
    events: np.ndarray | None
    spillover: Spillover | None
    warnings: list
    dataset_count: int
    byte_order: str
    datatype: str
    timestep: float | None
    # $PnN -> fraction of events whose stored integer had bits above $PnR (masked off).
    # Instruments set a flag bit now and then; most events over the range means the
    # keywords do not describe the data (see cd125gate.plausibility).
    over_range: dict = field(default_factory=dict)

    def channel_names(self):
        """Return the $PnN names (made unique), in file order."""
        return [channel.name for channel in self.channels]

    def column(self, name):
        """Return the events of channel ``name`` ($PnN) as a 1-D view."""
        names = self.channel_names()
        if name not in names:
            raise InputError(self.path, f"no channel named {name!r} (channels: {', '.join(names)})")
        return self.events[:, names.index(name)]


@dataclass(frozen=True)
class _Layout:
    """How one channel is stored in the DATA segment."""

    kind: str             # "u" (unsigned integer) or "f" (IEEE float)
    nbytes: int
    mask: int | None      # bit mask for integer channels, from $PnR


def read_fcs(path, *, read_events=True, max_bytes=None):
    """Read the first data set of an FCS file.

    Parameters
    ----------
    path : str or Path
        FCS file. It is opened read-only and never modified.
    read_events : bool
        If False, check the file's structure (including that the DATA
        segment is wholly present) but do not decode events.
    max_bytes : int, optional
        Refuse files larger than this. Default: the environment variable
        ``CD125GATE_MAX_FCS_BYTES`` if set, else ``DEFAULT_MAX_BYTES`` (2 GiB).

    Returns
    -------
    FCSData

    Raises
    ------
    InputError
        If the file cannot be opened, is not a regular file, is larger than
        ``max_bytes``, is not FCS, is truncated or corrupt, or its keywords do
        not describe its data consistently.
    """
    path = str(path)
    limit = max_file_bytes() if max_bytes is None else int(max_bytes)
    content = _read_bytes(path, limit)
    return _parse(content, path, read_events, limit)


def max_file_bytes():
    """The file size limit in force: $CD125GATE_MAX_FCS_BYTES, else DEFAULT_MAX_BYTES."""
    value = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    if not _WHOLE_NUMBER.fullmatch(value) or _digits(value) > MAX_DIGITS or _to_int(value) <= 0:
        raise InputError(MAX_BYTES_VARIABLE, f"must be a positive whole number of bytes, not {value[:40]!r}"
                                             + (f" ({_digits(value):,} digits)" if len(value) > 40 else ""))
    return _to_int(value)


def _read_bytes(path, limit):
    """The whole file, refusing anything that is not a regular file of at most ``limit`` bytes.

    The type is checked before opening: opening a FIFO blocks until a writer
    appears, and /dev/zero or a pipe never ends. The size is checked before
    reading so that memory is bounded by ``limit``.
    """
    try:
        info = _regular_file(path, limit)
        with open(path, "rb") as handle:
            # At most one byte more than stat said (a bounded buffer): more means the file
            # is still being written, and its offsets cannot be trusted yet.
            content = handle.read(info.st_size + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from None
    if len(content) > info.st_size:
        raise InputError(path, "file grew while being read (is it still being written?)")
    return content


def read_channels(path):
    """The channels of an FCS file from its HEADER and TEXT alone, DATA not read.

    For checking a batch's panels before any job: reading whole files would take
    minutes on hundreds of large tubes. The DATA segment is checked when the tube
    is analysed.

    :raises InputError: the file cannot be opened or its HEADER/TEXT cannot be parsed
    """
    path = str(path)
    try:
        size = _regular_file(path, max_file_bytes()).st_size
        with open(path, "rb") as handle:
            header = _parse_header(handle.read(HEADER_SIZE), path, size)
            text_start, text_end = header["text"]
            handle.seek(text_start)
            text = handle.read(text_end - text_start + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from None
    warnings = []
    return _channels(_parse_text(text, path, warnings), path, warnings)


def _regular_file(path, limit):
    """``os.stat`` of ``path``, refusing a folder, a special file or one over ``limit`` bytes."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, "cannot read file: it is a folder, not an FCS file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, f"cannot read file: it is a {_file_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise InputError(path, f"file is {info.st_size:,} bytes, more than the {limit:,}-byte limit "
                               f"(set {MAX_BYTES_VARIABLE} to raise it)")
    return info


def _file_kind(mode):
    for test, kind in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def _parse(content, path, read_events, limit=DEFAULT_MAX_BYTES):
    warnings = []
    size = len(content)
    header = _parse_header(content[:HEADER_SIZE], path, size)
    text_start, text_end = header["text"]
    keywords = _parse_text(content[text_start:text_end + 1], path, warnings)
    datatype = _keyword(keywords, "$DATATYPE", path).strip().upper()
    if datatype not in ("I", "F", "D"):
        raise InputError(path, f"$DATATYPE {datatype!r} is not supported (only I, F, D)")
    mode = keywords.get("$MODE", "L").strip().upper()
    if mode != "L":
        raise InputError(path, f"$MODE {mode!r} (histogram data) is not supported, only list mode L")
    byte_order = _byte_order(_keyword(keywords, "$BYTEORD", path), path)
    channels = _channels(keywords, path, warnings)
    # FCS 3.2 may override $DATATYPE per channel ($PnDATATYPE).
    kinds = [datatype] * len(channels)
    names = "\n".join(keywords)  # one C-level scan instead of a lookup per channel
    if names.count("DATATYPE") > names.count("$DATATYPE"):
        kinds = [keywords.get(f"$P{c.index}DATATYPE", datatype).strip().upper() for c in channels]
    layouts = [_layout(keywords, kind, channel, path, warnings) for kind, channel in zip(kinds, channels)]
    event_size = sum(layout.nbytes for layout in layouts)
    data_start, data_end = _data_offsets(header, keywords, path)
    event_count = _event_count(keywords, data_start, data_end, event_size, path, warnings)
    _check_data_segment(data_start, data_end, event_count * event_size, size, header, path, warnings)
    timestep = _timestep(keywords, warnings)
    events = None
    over_range = {}
    if read_events:
        # float64 events take up to 8x the bytes of 8-bit data: bound memory by the limit too.
        decoded = event_count * len(channels) * 8
        if decoded > DECODED_PER_FILE_BYTE * limit:
            raise InputError(path, f"decoding {event_count:,} events x {len(channels):,} channels would take "
                                   f"{decoded:,} bytes, more than {DECODED_PER_FILE_BYTE} x the {limit:,}-byte "
                                   f"limit (set {MAX_BYTES_VARIABLE} to raise it)")
        raw = memoryview(content)[data_start:data_start + event_count * event_size]
        # Signalling NaNs in float data warn on the cast and a hostile $PnE overflows the
        # anti-log: the values are kept (NaN, inf) and reported by the plausibility checks;
        # numpy's warnings would only add lines to stderr.
        with np.errstate(invalid="ignore", over="ignore"):
            events, over = _decode(raw, event_count, layouts, byte_order)
            events = _preprocess(events, channels, layouts, timestep)
        over_range = {channels[i].name: n / event_count for i, n in over.items()}
    dataset_count = _count_datasets(content, keywords, path, warnings)
    return FCSData(
        path=path,
        sha256=hashlib.sha256(content).hexdigest(),
        version=header["version"],
        cytometer=keywords.get("$CYT", "").strip() or None,
        event_count=event_count,
        channels=channels,
        keywords=keywords,
        events=events,
        spillover=_spillover(keywords, channels, warnings),
        warnings=warnings,
        dataset_count=dataset_count,
        byte_order=byte_order,
        datatype=datatype,
        timestep=timestep,
        over_range=over_range,
    )


def _parse_header(raw, path, size, where=""):
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
        elif _whole(text) is not None:
            offsets.append(_whole(text))
        else:
            raise InputError(path, f"{where}HEADER {name} offset is not a number: {cell!r}")
    text_start, text_end = offsets[0], offsets[1]
    if not HEADER_SIZE <= text_start < text_end:
        raise InputError(path, f"{where}HEADER gives an impossible TEXT segment (bytes {text_start}-{text_end})")
    if text_end >= size:
        raise InputError(
            path, f"{where}TEXT segment ends at byte {text_end} but the file has {size} bytes: truncated")
    return {"version": version, "text": (text_start, text_end), "data": (offsets[2], offsets[3])}


def _parse_text(raw, path, warnings):
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
        warnings += _summarised(repeated)
    return keywords


def _summarised(items):
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


def _keyword(keywords, key, path):
    if key not in keywords:
        raise InputError(path, f"required keyword {key} is missing from TEXT")
    return keywords[key]


def _int_keyword(keywords, key, path, what):
    """A whole number (sign allowed) of at most MAX_DIGITS digits; ``what`` it counts names it."""
    value = _keyword(keywords, key, path)
    if not _WHOLE_NUMBER.fullmatch(value.strip()):
        raise InputError(path, f"keyword {key} is not a whole number: {value[:40]!r}")
    _check_digits(value, key, path, what)
    return _to_int(value)


def _digits(text):
    """Significant digits of a whole number's text: spaces, sign and leading zeros not counted."""
    return len(text.strip().lstrip("+-").lstrip("0"))


def _check_digits(text, key, path, what):
    """Refuse a whole number too long to be a plausible ``what`` (see MAX_DIGITS)."""
    digits = _digits(text)
    if digits > MAX_DIGITS:
        raise InputError(path, f"{key} is not a plausible {what} ({digits:,} digits)")


def _to_int(text):
    """int() of a whole number already checked by _check_digits (leading zeros would count
    towards Python's digit limit)."""
    text = text.strip()
    sign = "-" if text.startswith("-") else ""
    return int(sign + (text.lstrip("+-").lstrip("0") or "0"))


def _float_keyword(keywords, key, path):
    """A finite number: inf or nan in a range, gain or offset would poison every event."""
    value = _keyword(keywords, key, path)
    number = _finite(value)
    if number is None:
        raise InputError(path, f"keyword {key} is not a finite number: {value[:40]!r}")
    return number


def _finite(text):
    """``float(text)`` if it is a finite number written in ASCII, else None.

    Cached: a file with 50,000 channels repeats the same few range and gain strings.
    (Only short strings, so that the cache never keeps a hostile file's text alive.)
    """
    return _finite_cached(text) if len(text) <= _CACHED_LENGTH else _finite_cached.__wrapped__(text)


_CACHED_LENGTH = 64


@functools.lru_cache(maxsize=4096)
def _finite_cached(text):
    text = text.strip()
    if not text.isascii() or "_" in text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _byte_order(value, path):
    order = [part.strip() for part in value.split(",")]
    ascending = [str(i) for i in range(1, len(order) + 1)]
    if order == ascending:
        return "little"
    if order == ascending[::-1]:
        return "big"
    raise InputError(path, f"$BYTEORD {value!r} is neither little- nor big-endian")


def _channels(keywords, path, warnings):
    count = _int_keyword(keywords, "$PAR", path, "channel count")
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
    ranges = [_finite(value) for value in _column(keywords, prefixes, "R", path)]
    if None in ranges or min(ranges) <= 0.0:
        n = next(i for i, r in enumerate(ranges, start=1) if r is None or r <= 0.0)
        _range(keywords, n, path)  # raises, naming the keyword
    bits = [_whole(value) for value in _column(keywords, prefixes, "B", path)]
    if None in bits:
        for n, value in enumerate(bits, start=1):
            if value is None:
                _check_digits(keywords[f"$P{n}B"], f"$P{n}B", path, "bit width")
    amplifications = [_decades_offset(get(p + "E", "0,0")) for p in prefixes]
    if None in amplifications:
        _amplification(keywords, amplifications.index(None) + 1, path)  # raises
    gains = [get(p + "G") for p in prefixes]
    if any(gain is not None for gain in gains):
        gains = [None if gain is None else _float_keyword(keywords, p + "G", path)
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
    warnings += _summarised(renamed)
    return channels


def _column(keywords, prefixes, letter, path):
    """``$PnX`` for every n, refusing the first that is missing."""
    values = [keywords.get(p + letter) for p in prefixes]
    if None in values:
        _keyword(keywords, f"$P{values.index(None) + 1}{letter}", path)
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
    value = _float_keyword(keywords, f"$P{n}R", path)
    if value <= 0.0:
        raise InputError(path, f"$P{n}R is {value:g}: a channel's range must be positive")
    return value


def _bits(keywords, n, path):
    # '*' is legal only for ASCII data, which we refuse elsewhere; any other
    # non-number is refused when the layout needs the width.
    return _whole(_keyword(keywords, f"$P{n}B", path))


def _whole(text):
    """A non-negative whole number written in ASCII digits, else None (also when it has more
    than MAX_DIGITS significant digits: callers that refuse such a number use _check_digits)."""
    return _whole_cached(text) if len(text) <= _CACHED_LENGTH else _whole_cached.__wrapped__(text)


@functools.lru_cache(maxsize=4096)
def _whole_cached(text):
    text = text.strip()
    if not _WHOLE_NUMBER.fullmatch(text) or text[0] in "+-" or _digits(text) > MAX_DIGITS:
        return None
    return _to_int(text)


def _amplification(keywords, n, path):
    value = keywords.get(f"$P{n}E", "0,0")
    amplification = _decades_offset(value)
    if amplification is None:
        raise InputError(path, f"$P{n}E is not 'decades,offset' (two finite numbers): {value[:40]!r}")
    return amplification


def _decades_offset(value):
    return _decades_offset_cached(value) if len(value) <= _CACHED_LENGTH else _decades_offset_cached.__wrapped__(value)


@functools.lru_cache(maxsize=4096)
def _decades_offset_cached(value):
    parts = [_finite(part) for part in value.split(",")]
    if len(parts) != 2 or None in parts or parts[0] < 0:
        return None
    decades, offset = parts
    if decades > 0 and offset == 0:
        offset = 1.0  # the FCS standard says to read a log offset of 0 as 1 (flowio does the same)
    return (decades, offset)


def _layout(keywords, kind, channel, path, warnings):
    """How channel ``channel`` is stored, as data type ``kind`` (I, F or D)."""
    if kind == "F":
        return _float_layout(channel, 4, warnings)
    if kind == "D":
        return _float_layout(channel, 8, warnings)
    if kind != "I":
        raise InputError(path, f"$P{channel.index}DATATYPE {kind!r} is not supported")
    bits = channel.bits
    if bits is None or bits == 0 or bits % 8 or bits > 64:
        written = keywords.get(f"$P{channel.index}B", "").strip()[:40]
        raise InputError(path, f"$P{channel.index}B={written!r}: only whole-byte integer widths up to 64 bits "
                               "are supported")
    return _integer_layout(bits, channel.range)


@functools.lru_cache(maxsize=4096)
def _integer_layout(bits, range_):
    # $PnR bounds the values; bits above the next power of two at or over $PnR are
    # flags or noise and must be masked off (FCS 3.1 section 3.3.x, as flowio does).
    limit = 1 << max(int(range_) - 1, 0).bit_length()
    mask = limit - 1 if limit < (1 << bits) else None
    return _Layout("u", bits // 8, mask)


def _float_layout(channel, nbytes, warnings):
    if channel.bits == nbytes * 8 and channel.amplification[0] == 0.0:
        return _FLOAT_LAYOUTS[nbytes]
    if channel.amplification[0] > 0.0:
        # FCS 3.1: floating-point data are linear; flowio would anti-log them anyway.
        warnings.append(f"{channel.name}: $P{channel.index}E={channel.amplification[0]:g},"
                        f"{channel.amplification[1]:g} ignored for float data")
    if channel.bits not in (None, nbytes * 8):
        warnings.append(f"$P{channel.index}B is {channel.bits} for {nbytes * 8}-bit float data; "
                        f"read as {nbytes * 8}-bit")
    return _Layout("f", nbytes, None)


_FLOAT_LAYOUTS = {4: _Layout("f", 4, None), 8: _Layout("f", 8, None)}


def _data_offsets(header, keywords, path):
    """Locate DATA, from the HEADER and the TEXT copy of its offsets.

    The two are copies of the same fact. When both are given and disagree the
    file contradicts itself about where its events are, and nothing in the file
    says which copy is right (FlowKit's noncompliant examples): refuse. HEADER
    offsets of 0 or blank mean "see TEXT" (files over 99,999,999 bytes); FCS 2.0
    files have no TEXT copy.
    """
    header_start, header_end = header["data"]
    if "$BEGINDATA" not in keywords and "$ENDDATA" not in keywords:
        if header_start == 0 and header_end == 0:
            raise InputError(path, "HEADER gives no DATA offsets and TEXT has no $BEGINDATA/$ENDDATA")
        return header_start, header_end
    text_start = _int_keyword(keywords, "$BEGINDATA", path, "byte offset")
    text_end = _int_keyword(keywords, "$ENDDATA", path, "byte offset")
    if (header_start, header_end) not in ((0, 0), (text_start, text_end)):
        raise InputError(
            path,
            f"HEADER and TEXT disagree on where DATA is (HEADER bytes {header_start}-{header_end}, "
            f"TEXT $BEGINDATA/$ENDDATA {text_start}-{text_end}); refusing to guess")
    return text_start, text_end


def _event_count(keywords, data_start, data_end, event_size, path, warnings):
    if "$TOT" in keywords:
        count = _int_keyword(keywords, "$TOT", path, "event count")
        if count < 0:
            raise InputError(path, f"$TOT is negative ({count})")
        length = data_end - data_start + 1
        if count == 0 and data_end > data_start and length > 1:
            # An empty tube has an empty DATA segment; events there mean $TOT was damaged,
            # and reading the tube as empty would hide them.
            raise InputError(path, f"$TOT is 0 but the DATA segment holds {length} bytes "
                                   f"({length / event_size:g} events of {event_size} bytes)")
        return count
    # $TOT became required only in FCS 3.0; older files imply it by the DATA size.
    length = data_end - data_start + 1
    if length <= 0 or length % event_size:
        raise InputError(path, f"no $TOT, and the DATA segment ({length} bytes) is not a whole number of "
                               f"{event_size}-byte events")
    warnings.append(f"no $TOT keyword; {length // event_size} events inferred from the DATA segment size")
    return length // event_size


def _check_data_segment(start, end, needed, size, header, path, warnings):
    """Check the DATA segment is wholly in the file and holds exactly the events described.

    Runs before any event bytes are read, so a HEADER claiming 10^12 events
    fails here instead of exhausting memory.
    """
    if needed == 0:
        return
    text_start, text_end = header["text"]
    if start < HEADER_SIZE or end < start or text_start <= start <= text_end:
        raise InputError(path, f"DATA segment offsets are impossible (bytes {start}-{end})")
    if end >= size:
        raise InputError(
            path, f"DATA segment ends at byte {end} but the file has {size} bytes: truncated")
    length = end - start + 1
    if length == needed + 1:
        # MACSQuant (and other writers) give the end offset one past the last byte.
        # The start and the size in $TOT x bytes per event agree, so the events are
        # unambiguous; the extra byte is ignored.
        warnings.append("DATA end offset is one byte past the data (written exclusive, as MACSQuant "
                        "and some other writers do); the extra byte is ignored")
    elif length != needed:
        raise InputError(
            path, f"DATA segment holds {length} bytes but $TOT and $PnB describe {needed}: "
                  f"{'truncated' if length < needed else 'the keywords do not match the data'}")


def _timestep(keywords, warnings):
    if "$TIMESTEP" not in keywords:
        return None
    value = keywords["$TIMESTEP"].strip()
    if not value:
        return None
    number = _finite(value)
    if number is None or number <= 0:
        warnings.append(f"$TIMESTEP is not a positive number ({value[:40]!r}); Time left in acquisition units")
        return None
    return number


# Events decoded at a time on the fast path (`_decode`).
DECODE_BLOCK = 1 << 14


def _decode(raw, count, layouts, byte_order):
    """Decode ``count`` events from DATA bytes.

    Returns a float64 array (count, channels) and, for masked integer
    channels, channel index -> number of events that had bits above the mask.
    The array is column-major: every later step reads a channel at a time
    (checks, detector margins, compensation's blocks), and a row-major
    column is a strided read of the whole tube.
    """
    endian = "<" if byte_order == "little" else ">"
    if count == 0:
        # Also the only safe path for mixed widths: a (0, -1) reshape is ambiguous.
        return np.empty((0, len(layouts)), dtype=np.float64), {}
    first = layouts[0]
    over = {}
    if all((l.kind, l.nbytes) == (first.kind, first.nbytes) for l in layouts) and first.nbytes in (1, 2, 4, 8):
        # Fast path: one dtype for every channel, one vectorised read.
        values = np.frombuffer(raw, np.dtype(f"{endian}{first.kind}{first.nbytes}"), count * len(layouts))
        values = values.reshape(count, len(layouts))
        masks = None
        if any(layout.mask is not None for layout in layouts):
            over = {i: int(np.count_nonzero(values[:, i] > layout.mask))
                    for i, layout in enumerate(layouts) if layout.mask is not None}
            everything = (1 << (8 * first.nbytes)) - 1
            masks = np.array([everything if layout.mask is None else layout.mask for layout in layouts],
                             dtype=values.dtype)
        # Row-major file to column-major events a block of rows at a time: both stay in
        # cache, twice as fast as one whole-tube astype (which strides through the file).
        events = np.empty(values.shape, dtype=np.float64, order="F")
        for start in range(0, count, DECODE_BLOCK):
            block = values[start:start + DECODE_BLOCK]
            events[start:start + DECODE_BLOCK] = block if masks is None else block & masks
        return events, over
    rows = np.frombuffer(raw, np.uint8).reshape(count, -1)
    events = np.empty((count, len(layouts)), dtype=np.float64, order="F")
    offset = 0
    for i, layout in enumerate(layouts):
        values = _decode_column(rows[:, offset:offset + layout.nbytes], layout, endian)
        if layout.mask is not None:
            over[i] = int(np.count_nonzero(values > layout.mask))
            values = values & np.asarray(layout.mask, dtype=values.dtype)
        events[:, i] = values
        offset += layout.nbytes
    return events, over


def _decode_column(columns, layout, endian):
    if layout.nbytes in (1, 2, 4, 8):
        values = np.ascontiguousarray(columns).view(f"{endian}{layout.kind}{layout.nbytes}")[:, 0]
    else:
        # Odd widths (24-bit Cytek xP5 channels): numpy has no such dtype, so
        # assemble each value from its bytes.
        order = range(layout.nbytes) if endian == "<" else range(layout.nbytes - 1, -1, -1)
        values = np.zeros(len(columns), dtype=np.uint64)
        for shift, k in enumerate(order):
            values |= columns[:, k].astype(np.uint64) << np.uint64(8 * shift)
    return values


def _preprocess(events, channels, layouts, timestep):
    """Apply $TIMESTEP, $PnE and $PnG in the order and form flowio's ``as_array`` uses."""
    for i, (channel, layout) in enumerate(zip(channels, layouts)):
        is_time = channel.name.lower() == "time"
        if is_time and timestep is not None:
            events[:, i] = events[:, i] * timestep
        decades, offset = channel.amplification
        # Floating-point data are already linear (FCS 3.1); _float_layout warned about any log $PnE.
        if decades > 0 and layout.kind == "u":
            events[:, i] = (10 ** (decades * events[:, i] / channel.range)) * offset
        # flowio ignores a gain on the Time channel: instruments copy the timestep
        # or a detector gain there, which would mis-scale time.
        if not is_time and channel.gain not in (None, 0.0, 1.0):
            events[:, i] = events[:, i] / channel.gain
    return events


def _spillover(keywords, channels, warnings):
    """Parse the first spillover keyword present: 'n,name1..namen,v11..vnn'."""
    present = [key for key in SPILLOVER_KEYWORDS if keywords.get(key, "").strip()]
    if not present:
        return None
    keyword = present[0]
    parts = [part.strip() for part in keywords[keyword].split(",")]
    try:
        n = _whole(parts[0])
        if n is None:
            raise ValueError(parts[0])  # not a count of at most MAX_DIGITS ASCII digits
        names = tuple(parts[1:n + 1])
        values = np.array([float(v) for v in parts[n + 1:]], dtype=np.float64)
    except ValueError:
        warnings.append(f"{keyword} is not a spillover matrix ('n,names,values'); ignored")
        return None
    if not np.all(np.isfinite(values)):
        warnings.append(f"{keyword} holds values that are not finite numbers; ignored")
        return None
    if n < 1 or len(names) != n or values.size != n * n:
        warnings.append(f"{keyword} is incomplete ({n} channels need {n} names and {n * n} values, "
                        f"it holds {len(parts) - 1} fields); ignored")
        return None
    known = {channel.name for channel in channels}
    missing = [name for name in names if name not in known]
    if missing:
        warnings.append(f"{keyword} names channels not in the file: {', '.join(missing)}")
    return Spillover(channels=names, matrix=values.reshape(n, n), keyword=keyword)


def _count_datasets(content, keywords, path, warnings):
    """Follow the $NEXTDATA chain (offsets relative to each data set) and count data sets."""
    count, start = 1, 0
    step = keywords.get("$NEXTDATA", "0").strip()
    if step and _whole(step) is None:
        # Only the first data set is read: a damaged pointer to the next one is not fatal.
        if _WHOLE_NUMBER.fullmatch(step) and _digits(step) > MAX_DIGITS:
            warnings.append(f"$NEXTDATA is not a plausible byte offset ({_digits(step):,} digits); ignored")
        else:
            warnings.append(f"$NEXTDATA is not a whole number ({step[:40]!r}); ignored")
    while (_whole(step) or 0) > 0:
        start += _whole(step)
        where = f"data set {count + 1} (byte {start}): "
        try:
            header = _parse_header(content[start:start + HEADER_SIZE], path, len(content) - start, where)
            text_start, text_end = header["text"]
            text = _parse_text(content[start + text_start:start + text_end + 1], path, [])
        except InputError as exc:
            warnings.append(f"$NEXTDATA points to a data set that cannot be read ({exc.problem})")
            break
        count += 1
        step = text.get("$NEXTDATA", "0").strip()
    if count > 1:
        warnings.append(f"file holds {count} data sets ($NEXTDATA); only the first is read")
    return count
