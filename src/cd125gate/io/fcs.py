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

HEADER and TEXT are parsed and their keywords checked in ``fcs_keywords``, the
DATA segment located and decoded in ``fcs_events``; this module reads the file
and puts the two together.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cd125gate.errors import InputError
from cd125gate.io.fcs_events import (
    channel_layout,
    check_data_segment,
    count_events,
    data_offsets,
    decode_events,
    preprocess_events,
)
from cd125gate.io.fcs_keywords import (
    HEADER_SIZE,
    Channel,
    channels_from_keywords,
    finite_number,
    parse_byte_order,
    parse_header,
    parse_text,
    required_keyword,
    significant_digits,
    too_many_digits,
    whole_number,
)

__all__ = ["Channel", "FCSData", "Spillover", "max_file_bytes", "read_channels", "read_fcs"]

# Vendor spellings of the spillover keyword, in the order we prefer them.
SPILLOVER_KEYWORDS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER")
# Largest FCS file read by default. Clinical tubes are a few MB to a few hundred MB; a
# bigger "FCS" file is far more likely a wrong path (a disk image, /dev/zero's cousin)
# than a tube, and reading it would exhaust memory. Override per call (max_bytes=) or
# for a whole run with the environment variable below.
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
MAX_BYTES_VARIABLE = "CD125GATE_MAX_FCS_BYTES"
# Decoded float64 events may take this many times the file-size limit (float32 data
# double in size; 8-bit integers grow eightfold).
DECODED_PER_FILE_BYTE = 4


@dataclass(frozen=True)
class Spillover:
    channels: tuple[str, ...]  # $PnN names, in matrix order
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
    channels: list[Channel]
    keywords: dict[str, str]
    events: np.ndarray | None
    spillover: Spillover | None
    warnings: list[str]
    dataset_count: int
    byte_order: str
    datatype: str
    timestep: float | None
    # $PnN -> fraction of events whose stored integer had bits above $PnR (masked off).
    # Instruments set a flag bit now and then; most events over the range means the
    # keywords do not describe the data (see cd125gate.analysis.plausibility).
    over_range: dict[str, float] = field(default_factory=dict)

    def channel_names(self) -> list[str]:
        """Return the $PnN names (made unique), in file order."""
        return [channel.name for channel in self.channels]

    def column(self, name: str) -> np.ndarray:
        """Return the events of channel ``name`` ($PnN) as a 1-D view."""
        names = self.channel_names()
        if name not in names:
            raise InputError(self.path, f"no channel named {name!r} (channels: {', '.join(names)})")
        return self.events[:, names.index(name)]


def read_fcs(path: str | Path, *, read_events: bool = True, max_bytes: int | None = None) -> FCSData:
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


def max_file_bytes() -> int:
    """The file size limit in force: $CD125GATE_MAX_FCS_BYTES, else DEFAULT_MAX_BYTES."""
    value = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    limit = whole_number(value, signed=True)
    if limit is None or limit <= 0:
        raise InputError(MAX_BYTES_VARIABLE, f"must be a positive whole number of bytes, not {value[:40]!r}"
                                             + (f" ({significant_digits(value):,} digits)" if len(value) > 40 else ""))
    return limit


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


def read_channels(path: str | Path) -> list[Channel]:
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
            header = parse_header(handle.read(HEADER_SIZE), path, size)
            text_start, text_end = header.text
            handle.seek(text_start)
            text = handle.read(text_end - text_start + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from None
    warnings = []
    return channels_from_keywords(parse_text(text, path, warnings), path, warnings)


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
    header = parse_header(content[:HEADER_SIZE], path, size)
    text_start, text_end = header.text
    keywords = parse_text(content[text_start:text_end + 1], path, warnings)
    datatype = required_keyword(keywords, "$DATATYPE", path).strip().upper()
    if datatype not in ("I", "F", "D"):
        raise InputError(path, f"$DATATYPE {datatype!r} is not supported (only I, F, D)")
    mode = keywords.get("$MODE", "L").strip().upper()
    if mode != "L":
        raise InputError(path, f"$MODE {mode!r} (histogram data) is not supported, only list mode L")
    byte_order = parse_byte_order(required_keyword(keywords, "$BYTEORD", path), path)
    channels = channels_from_keywords(keywords, path, warnings)
    # FCS 3.2 may override $DATATYPE per channel ($PnDATATYPE).
    kinds = [datatype] * len(channels)
    names = "\n".join(keywords)  # one C-level scan instead of a lookup per channel
    if names.count("DATATYPE") > names.count("$DATATYPE"):
        kinds = [keywords.get(f"$P{c.index}DATATYPE", datatype).strip().upper() for c in channels]
    layouts = [channel_layout(keywords, kind, channel, path, warnings) for kind, channel in zip(kinds, channels)]
    event_size = sum(layout.nbytes for layout in layouts)
    data_start, data_end = data_offsets(header, keywords, path)
    event_count = count_events(keywords, data_start, data_end, event_size, path, warnings)
    check_data_segment(data_start, data_end, event_count * event_size, size, header, path, warnings)
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
            events, over = decode_events(raw, event_count, layouts, byte_order)
            events = preprocess_events(events, channels, layouts, timestep)
        over_range = {channels[i].name: n / event_count for i, n in over.items()}
    dataset_count = _count_datasets(content, keywords, path, warnings)
    return FCSData(
        path=path,
        sha256=hashlib.sha256(content).hexdigest(),
        version=header.version,
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


def _timestep(keywords, warnings):
    if "$TIMESTEP" not in keywords:
        return None
    value = keywords["$TIMESTEP"].strip()
    if not value:
        return None
    number = finite_number(value)
    if number is None or number <= 0:
        warnings.append(f"$TIMESTEP is not a positive number ({value[:40]!r}); Time left in acquisition units")
        return None
    return number


def _spillover(keywords, channels, warnings):
    """Parse the first spillover keyword present: 'n,name1..namen,v11..vnn'."""
    present = [key for key in SPILLOVER_KEYWORDS if keywords.get(key, "").strip()]
    if not present:
        return None
    keyword = present[0]
    parts = [part.strip() for part in keywords[keyword].split(",")]
    try:
        n = whole_number(parts[0])
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
    if step and whole_number(step) is None:
        # Only the first data set is read: a damaged pointer to the next one is not fatal.
        if too_many_digits(step):
            warnings.append(f"$NEXTDATA is not a plausible byte offset ({significant_digits(step):,} digits); ignored")
        else:
            warnings.append(f"$NEXTDATA is not a whole number ({step[:40]!r}); ignored")
    while (whole_number(step) or 0) > 0:
        start += whole_number(step)
        where = f"data set {count + 1} (byte {start}): "
        try:
            header = parse_header(content[start:start + HEADER_SIZE], path, len(content) - start, where)
            text_start, text_end = header.text
            text = parse_text(content[start + text_start:start + text_end + 1], path, [])
        except InputError as exc:
            warnings.append(f"$NEXTDATA points to a data set that cannot be read ({exc.problem})")
            break
        count += 1
        step = text.get("$NEXTDATA", "0").strip()
    if count > 1:
        warnings.append(f"file holds {count} data sets ($NEXTDATA); only the first is read")
    return count