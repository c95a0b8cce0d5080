"""Write list-mode FCS 3.0 / 3.1 files with float32 events.

flowio has a writer (``flowio.create_fcs``), but it only writes little-endian
FCS 3.1 with a fixed set of keywords; the simulator also needs big-endian
FCS 3.0 files with the matrix under ``SPILL`` (as BD FACSDiva writes them), so
the few lines of HEADER/TEXT layout are written here instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.io.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

DELIMITER = "/"
HEADER_BYTES = 58  # "FCS3.x" + 4 spaces + six 8-character offsets
MAX_HEADER_OFFSET = 99_999_999  # larger offsets go into TEXT only; HEADER holds 0
BYTE_ORDERS = {"little": ("<", "1,2,3,4"), "big": (">", "4,3,2,1")}


def format_spillover(matrix: ArrayLike, channels: Sequence[str]) -> str:
    """Format a spillover matrix as an FCS ``$SPILLOVER`` / ``SPILL`` value.

    Parameters
    ----------
    matrix : array_like, shape (n, n)
        Spillover coefficients; row ``i`` is how much of dye ``i`` is seen
        by detector ``j`` (the FCS and FlowKit convention), diagonal 1.
    channels : list of str
        The $PnN of the ``n`` detectors, in matrix order.

    Returns
    -------
    str
        ``"n,name1,...,namen,v11,v12,...,vnn"``, row by row.
    """
    matrix = np.asarray(matrix, dtype=float)
    n = len(channels)
    if matrix.shape != (n, n):
        raise ValueError(f"spillover matrix shape {matrix.shape} does not match {n} channels")
    # repr of a Python float is the shortest text that reads back to the same value.
    values = [repr(float(v)) for v in matrix.ravel()]
    return ",".join([str(n), *channels, *values])


def channel_keywords(channels: Sequence[str], stains: Sequence[str | None] | None,
                     ranges: Sequence[float]) -> dict[str, str]:
    """The $PnN/$PnS/$PnR/$PnB/$PnE keywords of float32 channels."""
    keywords = {}
    for i, name in enumerate(channels, start=1):
        keywords[f"$P{i}N"] = name
        stain = stains[i - 1] if stains is not None else None
        if stain:  # FCS forbids empty values: an unstained channel has no $PnS
            keywords[f"$P{i}S"] = stain
        keywords[f"$P{i}R"] = _number(ranges[i - 1])
        keywords[f"$P{i}B"] = "32"
        keywords[f"$P{i}E"] = "0,0"
    return keywords


def encode_text(keywords: Mapping[str, object]) -> bytes:
    """Encode keywords as an FCS TEXT segment, doubling the delimiter inside keys and values.

    Keywords whose value is None or empty are left out, as FCS forbids empty values.
    """
    escape = DELIMITER * 2
    parts = [DELIMITER]
    for key, value in keywords.items():
        if value is None or str(value) == "":
            continue
        parts.append(str(key).replace(DELIMITER, escape) + DELIMITER)
        parts.append(str(value).replace(DELIMITER, escape) + DELIMITER)
    return "".join(parts).encode("utf-8")


def fcs_bytes(events: ArrayLike, channels: Sequence[str], *, stains: Sequence[str | None] | None = None,
              ranges: Sequence[float] | None = None, keywords: Mapping[str, object] | None = None,
              version: str = "3.1", byte_order: str = "little", spillover: ArrayLike | None = None,
              spill_keyword: str = "$SPILLOVER", spill_channels: Sequence[str] | None = None) -> bytes:
    """Build the bytes of a list-mode FCS file. See `write_fcs` for the parameters."""
    events = np.asarray(events, dtype=np.float32)
    if events.ndim != 2 or events.shape[1] != len(channels):
        raise ValueError(f"events of shape {events.shape} do not match {len(channels)} channels")
    if version not in ("3.0", "3.1"):
        raise ValueError(f"unsupported FCS version {version!r}")
    if byte_order not in BYTE_ORDERS:
        raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
    dtype_char, byteord = BYTE_ORDERS[byte_order]
    ranges = ranges if ranges is not None else [262144] * len(channels)
    data = events.astype(dtype_char + "f4").tobytes()

    text = {
        "$BYTEORD": byteord, "$DATATYPE": "F", "$MODE": "L", "$NEXTDATA": "0",
        "$PAR": str(len(channels)), "$TOT": str(len(events)),
        "$BEGINANALYSIS": "0", "$ENDANALYSIS": "0", "$BEGINSTEXT": "0", "$ENDSTEXT": "0",
        **channel_keywords(channels, stains, ranges),
    }
    if spillover is not None:
        text[spill_keyword] = format_spillover(spillover, spill_channels or channels)
    text.update(keywords or {})

    # $BEGINDATA sits inside TEXT, so its own length moves the data start: iterate
    # until the offsets no longer change (two or three rounds at most).
    begin = HEADER_BYTES
    while True:
        # An empty DATA segment has both offsets 0.
        end = begin + len(data) - 1 if data else 0
        text["$BEGINDATA"], text["$ENDDATA"] = (str(begin), str(end)) if data else ("0", "0")
        segment = encode_text(text)
        new_begin = HEADER_BYTES + len(segment)
        if new_begin == begin or not data:
            break
        begin = new_begin
    begin = begin if data else 0
    header = _header(version, HEADER_BYTES, HEADER_BYTES + len(segment) - 1, begin, end)
    return header + segment + data


def write_fcs(path: str | Path, events: ArrayLike, channels: Sequence[str], *,
              stains: Sequence[str | None] | None = None, ranges: Sequence[float] | None = None,
              keywords: Mapping[str, object] | None = None, version: str = "3.1", byte_order: str = "little",
              spillover: ArrayLike | None = None, spill_keyword: str = "$SPILLOVER",
              spill_channels: Sequence[str] | None = None) -> int:
    """Write float32 list-mode events to an FCS file, atomically.

    Parameters
    ----------
    path : str or Path
        File to write; its folder is created if needed.
    events : array_like, shape (n_events, n_channels)
        Event values; stored as 32-bit floats ($DATATYPE F).
    channels : list of str
        $PnN of each column.
    stains : list of str or None, optional
        $PnS of each column; None or "" leaves the keyword out.
    ranges : list of float, optional
        $PnR of each column (default 262144).
    keywords : dict, optional
        Further TEXT keywords (e.g. ``$CYT``, ``$DATE``, ``$TIMESTEP``); they
        override the computed ones of the same name.
    version : {"3.1", "3.0"}
        FCS version written in the HEADER.
    byte_order : {"little", "big"}
        Byte order of the data ($BYTEORD 1,2,3,4 or 4,3,2,1).
    spillover : array_like, shape (k, k), optional
        Spillover matrix (row = dye, column = detector).
    spill_keyword : str
        Keyword that holds the matrix: ``$SPILLOVER`` (FCS 3.1) or ``SPILL``
        (BD FACSDiva, FCS 3.0).
    spill_channels : list of str, optional
        $PnN of the matrix rows/columns; required when ``spillover`` does not
        cover all ``channels``.

    Returns
    -------
    int
        Bytes written.
    """
    payload = fcs_bytes(events, channels, stains=stains, ranges=ranges, keywords=keywords,
                        version=version, byte_order=byte_order, spillover=spillover,
                        spill_keyword=spill_keyword, spill_channels=spill_channels)
    atomic_write_bytes(path, payload)
    return len(payload)


def _header(version, text_begin, text_end, data_begin, data_end):
    """The 58-byte FCS HEADER; offsets past 99,999,999 are written as 0 (FCS 3.x rule)."""
    offsets = [text_begin, text_end, data_begin, data_end, 0, 0]
    if data_end > MAX_HEADER_OFFSET:
        offsets[2] = offsets[3] = 0
    return (f"FCS{version}    " + "".join(f"{o:>8d}" for o in offsets)).encode("ascii")


def _number(value):
    """Plain text of a number: 262144 rather than 262144.0."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
