"""An FCS file's DATA segment: where it lies, how each channel is stored, and decoding it.

Speed matters here (a tube holds up to millions of events): values are read with
``np.frombuffer`` and converted a block of rows at a time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from cd125gate.errors import InputError
from cd125gate.io.fcs_keywords import HEADER_SIZE, Channel, Header, int_keyword

# Events decoded at a time on the fast path (`decode_events`).
DECODE_BLOCK = 1 << 14


@dataclass(frozen=True)
class ChannelLayout:
    """How one channel is stored in the DATA segment."""

    kind: str             # "u" (unsigned integer) or "f" (IEEE float)
    nbytes: int
    mask: int | None      # bit mask for integer channels, from $PnR


def channel_layout(keywords: dict[str, str], kind: str, channel: Channel, path: str,
                   warnings: list[str]) -> ChannelLayout:
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
    return ChannelLayout("u", bits // 8, mask)


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
    return ChannelLayout("f", nbytes, None)


_FLOAT_LAYOUTS = {4: ChannelLayout("f", 4, None), 8: ChannelLayout("f", 8, None)}


def data_offsets(header: Header, keywords: dict[str, str], path: str) -> tuple[int, int]:
    """Locate DATA, from the HEADER and the TEXT copy of its offsets.

    The two are copies of the same fact. When both are given and disagree the
    file contradicts itself about where its events are, and nothing in the file
    says which copy is right (FlowKit's noncompliant examples): refuse. HEADER
    offsets of 0 or blank mean "see TEXT" (files over 99,999,999 bytes); FCS 2.0
    files have no TEXT copy.
    """
    header_start, header_end = header.data
    if "$BEGINDATA" not in keywords and "$ENDDATA" not in keywords:
        if header_start == 0 and header_end == 0:
            raise InputError(path, "HEADER gives no DATA offsets and TEXT has no $BEGINDATA/$ENDDATA")
        return header_start, header_end
    text_start = int_keyword(keywords, "$BEGINDATA", path, "byte offset")
    text_end = int_keyword(keywords, "$ENDDATA", path, "byte offset")
    if (header_start, header_end) not in ((0, 0), (text_start, text_end)):
        raise InputError(
            path,
            f"HEADER and TEXT disagree on where DATA is (HEADER bytes {header_start}-{header_end}, "
            f"TEXT $BEGINDATA/$ENDDATA {text_start}-{text_end}); refusing to guess")
    return text_start, text_end


def count_events(keywords: dict[str, str], data_start: int, data_end: int, event_size: int, path: str,
                 warnings: list[str]) -> int:
    """The number of events: $TOT, or (FCS 2.0) what the DATA segment's size implies."""
    if "$TOT" in keywords:
        count = int_keyword(keywords, "$TOT", path, "event count")
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


def check_data_segment(start: int, end: int, needed: int, size: int, header: Header, path: str,
                       warnings: list[str]) -> None:
    """Check the DATA segment is wholly in the file and holds exactly the events described.

    Runs before any event bytes are read, so a HEADER claiming 10^12 events
    fails here instead of exhausting memory.
    """
    if needed == 0:
        return
    text_start, text_end = header.text
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


def decode_events(raw: memoryview, count: int, layouts: list[ChannelLayout],
                  byte_order: str) -> tuple[np.ndarray, dict[int, int]]:
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


def preprocess_events(events: np.ndarray, channels: list[Channel], layouts: list[ChannelLayout],
                      timestep: float | None) -> np.ndarray:
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
