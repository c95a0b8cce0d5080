"""Spillover compensation: decide how a tube is compensated, check the matrix, apply it as FlowKit does.

How a tube's compensation is established (``choose_matrix``), first that applies:

1. a matrix CSV given for the sample or in the settings ("override"), applied;
2. the sample (or the settings) declaring the data already compensated ("precompensated");
3. the file's own evidence that its events are already compensated ("precompensated",
   ``prior_compensation``): FCS 2.0 ``$DFCnTOm`` keywords (compensation the instrument applied
   at acquisition), every fluorescence channel named ``Comp-...`` (exported compensated, as
   FlowJo names them), or Cytek unmixed spectral data (an identity ``$SPILLOVER``);
4. the file's ``$SPILLOVER`` / ``$SPILL`` ("file"), applied;
5. nothing ("none"): refused unless ``compensation.allow_uncompensated`` (then REVIEW).

Precompensated events are used as they are, with no matrix: in Gating-ML terms their
fluorescence dimensions are "uncompensated". Compensated events are ``raw[:, idx] @ inv(M)``
on the matrix's channels (flowutils' ``compensate``, which FlowKit's ``Matrix.apply`` also
calls), so gates exported with this matrix re-apply in FlowKit to the same counts.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cd125gate.errors import InputError
from cd125gate.io.samplesheet import PRECOMPENSATED

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from cd125gate.io.fcs import FCSData

# Spillover matrices of real panels have condition numbers well under 1e3;
# far above that the matrix is a typo or a wrong file, and compensation would
# amplify noise rather than remove spillover.
MAX_CONDITION = 1e6
DIAGONAL_TOLERANCE = 1e-6
# A $SPILLOVER whose off-diagonal values are all this small is the identity: SpectroFlo writes
# six decimals, and its unmixed files' identity matrices carry stray 0.000001 entries.
IDENTITY_TOLERANCE = 1e-5

# Sources whose matrix is applied to the events ("precompensated" and "none" apply none).
APPLIED = ("file", "override")

# FCS 2.0: $DFCiTOj is the compensation (percent of channel i subtracted from channel j)
# the instrument applied at acquisition.
_DFC = re.compile(r"^\$DFC\d+TO\d+$")
_COMP_NAME = re.compile(r"^comp-", re.IGNORECASE)
# Cytek's spectral cytometers (its conventional ones, e.g. the DxP "Cytek xP5", are not).
_CYTEK = re.compile(r"aurora|northern ?lights", re.IGNORECASE)
# Raw (not unmixed) Cytek data are named after the detectors: UV1-A, V3-A, B2-H, YG5-A, R8-W ...
_CYTEK_DETECTOR = re.compile(r"^(UV|V|B|YG|R)\d+-[AHW]$")


@dataclass(frozen=True)
class Compensation:
    """The spillover matrix an analysis uses and where it came from."""

    channels: tuple[str, ...]  # $PnN of the matrix rows/columns, in matrix order
    matrix: np.ndarray      # spillover (not its inverse), square float64; (0, 0) when none
    source: str             # "file" | "override" | "precompensated" | "none"
    detail: str             # one line for the reviewer: where the matrix came from, or the evidence

    @property
    def is_identity(self) -> bool:
        """True when the matrix changes nothing (no matrix, or an identity matrix)."""
        return bool(np.array_equal(self.matrix, np.eye(len(self.channels))))

    @property
    def applied(self) -> bool:
        """True when a matrix is applied to the events ("file", "override")."""
        return self.source in APPLIED


def read_matrix_csv(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Read a spillover matrix CSV as FlowJo and FlowKit write it.

    A header row of channel names, then one row of numbers per channel.
    Tolerated: a byte-order mark, a leading '#' before the header, tab instead
    of comma, whitespace and quotes around cells, blank lines, trailing empty
    cells, and a leading column of row labels (which must repeat the header).

    Parameters
    ----------
    path : str or Path
        The CSV file.

    Returns
    -------
    channels : tuple of str
        Channel names from the header, in matrix order.
    matrix : numpy.ndarray
        Square float64 spillover matrix.

    Raises
    ------
    InputError
        If the file cannot be read or is not a square numeric matrix.
    """
    rows = _csv_rows(path)
    if not rows:
        raise InputError(path, "spillover matrix CSV is empty")
    header, body = rows[0], rows[1:]
    header[0] = header[0].lstrip("#").strip()
    if body and all(len(row) == len(header) + 1 and not _is_number(row[0]) for row in body):
        labels = [row[0] for row in body]
        body = [row[1:] for row in body]
    elif body and header[0] == "" and all(not _is_number(row[0]) for row in body):
        # pandas-style: an empty corner cell above a column of row labels
        header = header[1:]
        labels = [row[0] for row in body]
        body = [row[1:] for row in body]
    else:
        labels = None
    _check_header(header, path)
    if labels is not None and labels != header:
        raise InputError(path, f"row labels ({', '.join(labels)}) do not repeat the column names "
                               f"({', '.join(header)}) in the same order")
    if len(body) != len(header):
        raise InputError(path, f"{len(header)} channel names but {len(body)} matrix rows")
    matrix = np.array([_numbers(row, n, len(header), path) for n, row in enumerate(body, 2)])
    return tuple(header), matrix


def _csv_rows(path):
    """Non-blank CSV rows with cells stripped and trailing empty cells removed."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(path, f"cannot read spillover matrix: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(path, "spillover matrix CSV is not UTF-8 text") from None
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    rows = []
    for row in csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True):
        cells = [cell.strip() for cell in row]
        while cells and cells[-1] == "":
            cells.pop()
        if cells:
            rows.append(cells)
    return rows


def _check_header(header, path):
    if not header or any(name == "" for name in header):
        raise InputError(path, "spillover matrix CSV header has an empty channel name")
    try:
        float(header[0])
    except ValueError:
        return
    raise InputError(path, "spillover matrix CSV has no header row of channel names")


def _numbers(row, line, n, path):
    if len(row) != n:
        raise InputError(path, f"row {line} has {len(row)} values, expected {n}")
    try:
        return [float(cell) for cell in row]
    except ValueError:
        bad = next(cell for cell in row if not _is_number(cell))
        raise InputError(path, f"row {line}: {bad!r} is not a number") from None


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def validate_matrix(channels: Sequence[str], matrix: ArrayLike, file_channels: Sequence[str],
                    source: str | Path) -> None:
    """Refuse a spillover matrix that cannot be right for this file.

    Parameters
    ----------
    channels : sequence of str
        $PnN names of the matrix rows/columns.
    matrix : array_like
        The spillover matrix.
    file_channels : sequence of str
        $PnN names of the FCS file the matrix is applied to.
    source : str
        The file the matrix came from, for the error message.

    Raises
    ------
    InputError
        If the matrix is not square, not finite, has duplicate or unknown
        channel names, a diagonal other than 1, or is not invertible.
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = len(channels)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InputError(source, f"spillover matrix is not square (shape {m.shape})")
    if m.shape[0] != n or n == 0:
        raise InputError(source, f"spillover matrix has {m.shape[0]} rows but {n} channel names")
    if not np.isfinite(m).all():
        raise InputError(source, "spillover matrix holds non-finite values (NaN or infinity)")
    duplicates = sorted({name for name in channels if list(channels).count(name) > 1})
    if duplicates:
        raise InputError(source, f"spillover matrix names channel(s) twice: {', '.join(duplicates)}")
    off = [f"{name}={m[i, i]:g}" for i, name in enumerate(channels)
           if abs(m[i, i] - 1.0) > DIAGONAL_TOLERANCE]
    if off:
        raise InputError(source, "spillover matrix diagonal must be 1 (is it an inverse or a "
                                 f"percentage matrix?): {', '.join(off)}")
    missing = [name for name in channels if name not in file_channels]
    if missing:
        raise InputError(source, f"spillover matrix channel(s) not in the FCS file: {', '.join(missing)} "
                                 f"(file channels: {', '.join(file_channels)})")
    condition = np.linalg.cond(m)
    if not condition < MAX_CONDITION:  # also catches inf for a singular matrix
        raise InputError(source, f"spillover matrix is singular or nearly so "
                                 f"(condition number {condition:.3g}, limit {MAX_CONDITION:g})")


def choose_matrix(fcs: FCSData, override_path: str | Path | None = None, allow_uncompensated: bool = False,
                  declared: str | None = None) -> Compensation:
    """How ``fcs`` is compensated: the matrix to apply, or why none is (see the module's order).

    Parameters
    ----------
    fcs : cd125gate.io.fcs.FCSData
        The tube as read.
    override_path : str or Path, optional
        A matrix CSV that replaces the file's own matrix.
    allow_uncompensated : bool
        Without any matrix or sign of prior compensation, analyse uncompensated
        (source "none") instead of failing.
    declared : str, optional
        Where the data were declared already compensated (e.g. "declared for this sample"):
        the events are used as they are, whatever the file holds.

    Returns
    -------
    Compensation

    Raises
    ------
    InputError
        If the chosen matrix is invalid, or there is none, no sign of prior
        compensation, and ``allow_uncompensated`` is false.
    """
    names = fcs.channel_names()
    if override_path is not None:
        channels, matrix = read_matrix_csv(override_path)
        validate_matrix(channels, matrix, names, override_path)
        replaced = f" (replaces the file's {fcs.spillover.keyword})" if fcs.spillover else ""
        prior = prior_compensation(fcs)
        prior = f"; yet the file shows prior compensation ({prior})" if prior else ""
        return Compensation(channels, matrix, "override", f"matrix CSV {override_path}{replaced}{prior}")
    evidence = declared or prior_compensation(fcs)
    if evidence:
        return _precompensated(fcs, evidence)
    if fcs.spillover is not None:
        spill = fcs.spillover
        matrix = np.asarray(spill.matrix, dtype=np.float64)
        validate_matrix(spill.channels, matrix, names, f"{fcs.path} ({spill.keyword})")
        unmixed = (" (unmixed Cytek data: the compensation applied after unmixing)"
                   if _unmixed_cytek(fcs) and not is_near_identity(matrix) else "")
        return Compensation(tuple(spill.channels), matrix, "file",
                            f"{spill.keyword} keyword of {fcs.path}{unmixed}")
    if not allow_uncompensated:
        raise InputError(fcs.path, "no spillover matrix in the file ($SPILLOVER/$SPILL) and none given"
                                   f"{_zero_dfc_note(fcs)}; give a matrix CSV, declare the data "
                                   "precompensated, or set compensation.allow_uncompensated")
    return Compensation((), np.zeros((0, 0)), "none", "no spillover matrix: analysed uncompensated")


def prior_compensation(fcs: FCSData) -> str | None:
    """The file's own evidence that its events are already compensated, in one line; None if none.

    Evidence, in this order: ``$DFCnTOm`` keywords with a value other than 0 (FCS 2.0: the
    compensation the instrument applied at acquisition, e.g. a Beckman Cytomics FC 500);
    every fluorescence channel named ``Comp-...`` (exported compensated, e.g. by FlowJo);
    Cytek spectral data whose channels are fluorochromes, not detectors, with an identity
    ``$SPILLOVER`` or none (unmixed by SpectroFlo; a non-identity ``$SPILLOVER`` there is the
    compensation applied after unmixing, and is applied as any file matrix). An identity
    ``$SPILLOVER`` alone is no evidence: conventional instruments write one when no
    compensation was set up.
    """
    keywords = getattr(fcs, "keywords", None) or {}
    cytometer = _cytometer(fcs)
    if any(_number(keywords[key]) for key in keywords if _DFC.match(key.upper())):
        return f"compensated by the instrument: $DFCnTOm keywords{f' ({cytometer})' if cytometer else ''}"
    fluorescence = _fluorescence(fcs)
    if fluorescence and all(_COMP_NAME.match(name) for name in fluorescence):
        return "Comp- channels: exported compensated"
    cytek = _unmixed_cytek(fcs)
    spill = fcs.spillover
    if cytek:
        if spill is None:
            return f"unmixed spectral data ({cytek}, no spillover matrix)"
        if is_near_identity(spill.matrix):
            return f"unmixed spectral data ({cytek}, identity {spill.keyword})"
    return None


def is_near_identity(matrix: ArrayLike) -> bool:
    """True for a square matrix within IDENTITY_TOLERANCE of the identity."""
    m = np.asarray(matrix, dtype=np.float64)
    return (m.ndim == 2 and m.shape[0] == m.shape[1]
            and bool(np.all(np.abs(m - np.eye(len(m))) <= IDENTITY_TOLERANCE)))


def _precompensated(fcs, evidence):
    spill = fcs.spillover
    ignored = (f"; the file's {spill.keyword} is not applied"
               if spill is not None and not is_near_identity(spill.matrix) else "")
    return Compensation((), np.zeros((0, 0)), PRECOMPENSATED, evidence + ignored)


def _cytometer(fcs):
    keywords = getattr(fcs, "keywords", None) or {}
    return (getattr(fcs, "cytometer", None) or keywords.get("$CYT") or "").strip()


def _fluorescence(fcs):
    """$PnN of the channels that are neither scatter, Time nor counters."""
    from cd125gate.analysis.panel import is_fluorescence

    return [name for name in fcs.channel_names() if is_fluorescence(name)]


def _unmixed_cytek(fcs):
    """"Cytek <model>" for unmixed data of a Cytek spectral cytometer (or SpectroFlo), else "".

    Unmixed data are named after fluorochromes (BV421-A, AF-A); raw data after detectors (V1-A).
    """
    keywords = getattr(fcs, "keywords", None) or {}
    cytometer = _cytometer(fcs)
    if _CYTEK.search(cytometer):
        name = cytometer if "cytek" in cytometer.lower() else f"Cytek {cytometer}"
    elif "spectroflo" in keywords.get("CREATOR", "").lower():
        name = f"Cytek {cytometer}" if cytometer else "Cytek SpectroFlo"
    else:
        return ""
    fluorescence = _fluorescence(fcs)
    if not fluorescence or all(_CYTEK_DETECTOR.match(n) for n in fluorescence):
        return ""
    return name


def _zero_dfc_note(fcs):
    keywords = getattr(fcs, "keywords", None) or {}
    if any(_DFC.match(key.upper()) for key in keywords):
        return " (its $DFCnTOm keywords are all 0: the instrument applied no compensation)"
    return ""


def _number(text):
    """The value of a keyword as a finite number (0 when it is not one)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) else 0.0


# Rows per block when compensating: small enough for the temporaries to stay in cache.
BLOCK_EVENTS = 1 << 14


def compensate(events: np.ndarray, channel_names: Sequence[str], comp: Compensation,
               out: np.ndarray | None = None) -> np.ndarray:
    """Compensated float64 copy of ``events`` (column-major); only the matrix's channels change.

    Parameters
    ----------
    events : numpy.ndarray
        Raw events, (n_events, n_channels).
    channel_names : sequence of str
        $PnN of the columns of ``events``.
    comp : Compensation
    out : numpy.ndarray, optional
        The float64 array of ``events``' shape to write the copy into (default: a new
        column-major one).

    Returns
    -------
    numpy.ndarray
        ``events`` with ``events[:, idx] @ inv(M)`` on the matrix channels.
    """
    data = np.asarray(events, dtype=np.float64)
    out = np.empty(data.shape, order="F") if out is None else out
    if not comp.applied:  # precompensated or uncompensated: the events as they are
        out[...] = data
        return out
    names = list(channel_names)
    missing = [c for c in comp.channels if c not in names]
    if missing:
        raise ValueError(f"events lack the matrix channel(s) {', '.join(missing)}")
    idx = [names.index(c) for c in comp.channels]
    # flowutils' compensate (FlowKit's) solves M^T y = x rather than forming inv(M). On a
    # whole tube its full-size temporaries make it slow (~0.3-0.7 s per million events here,
    # mostly fresh memory); each event is solved on its own, so blocks of rows give the very
    # same numbers (a test checks them against flowutils' on a whole tube, to the bit). Its
    # solve is called here directly, with the same arguments, writing into ``out``: flowutils
    # would first copy each block and then put the solved columns back into that copy.
    # Column-major, as the transform step wants it: it can then work in place (no second copy).
    spill_t = comp.matrix.T
    for start in range(0, len(data), BLOCK_EVENTS):
        block = slice(start, start + BLOCK_EVENTS)
        out[block] = data[block]
        out[block, idx] = np.linalg.solve(spill_t, data[block][:, idx].T).T
    return out


def to_flowkit(comp: Compensation) -> Any:
    """The ``flowkit.Matrix`` of ``comp`` (None when no matrix is applied).

    Gating-ML names compensated dimensions after the matrix's fluorochromes.
    Using the detector ($PnN) names for those too keeps gates that refer to
    $PnN valid both in FlowKit (which looks $PnN up first) and in readers that
    resolve compensated dimensions through the fluorochrome list.
    """
    import flowkit as fk

    if not comp.applied:
        return None
    detectors = list(comp.channels)
    return fk.Matrix(comp.matrix.copy(), detectors=detectors, fluorochromes=list(detectors))
