"""Plausibility of a tube that decodes but may make no physical sense.

The reader checks that a file is well formed; these checks ask whether the
numbers it holds can be a measurement at all. A damaged or mis-declared file
can decode cleanly and still give a confident wrong answer (issue 13: a CD125
`$PnR` of 1e308 turned a 20 % tube into "MET 100 %"; float data declared as
integers gave "MET 88.9 %"). On every channel (compensation spreads them into
the markers):

- non-finite values (NaN or infinity) in float data;
- values far beyond `$PnR` (no detector reads a million times its range);

both fatal (FAILED) wherever they are (on Time only non-finite values count);
and on each channel the analysis uses (the scatter and marker channels the
panel resolved), also the following, fatal on a required marker and a doubt
(REVIEW) on any other:

- a constant channel: (nearly) every event has the same value;
- a channel that clips below its range: most events sit at one maximum
  under the detector ceiling (``qc.margin_fraction`` of ``$PnR``), where no
  gate removes them;
- integer values with bits above `$PnR` for most events, or 32-bit integers
  that are IEEE floats in disguise: `$DATATYPE`/`$PnB`/`$PnR` do not
  describe the data;
- a `$PnR` far above every value, or far below many values (the range,
  which sets the display scale and the logicle top, does not describe the data).

Many events *at* the detector ceiling are not judged here: the file is then
a true measurement with a gain set high, and whether it matters depends on
which events sit there (issue 17: 61 % of a granulocyte-rich marrow at the
SSC ceiling, blasts far below it, had FAILED the tube). The ``margins`` gate
removes them, and ``cd125gate.analysis.gating.ceiling`` asks after gating whether blasts are
among them (a flag with the share, REVIEW when blasts are, FAILED when too
few events are left to gate).

The thresholds sit far outside what real files show: over the 19 readable
corpus files and the bundled tubes the smallest data maximum is 1.4e-4 of
`$PnR` (a CyFlow channel), the largest is 350 x `$PnR` on a Miltenyi width
channel (no analysis uses widths) and 3.3 x on a scatter channel, and the
largest share of events at a marker's maximum is 2 %.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.io.fcs import FCSData

CONSTANT_SHARE = 0.99      # share of events at one value above which a channel is "constant"
SATURATED_SHARE = 0.5      # share of events at a maximum under the ceiling: "clips below its range"
OVER_RANGE_SHARE = 0.5     # share of events with integer bits above $PnR
# |value| above this many times the channel's top is not a measurement. Even one such
# event matters: the transforms stretch their top to the data maximum.
ABSURD_FACTOR = 1e6
EMPTY_RANGE_FACTOR = 1e5   # a top this many times the largest |value| does not describe the data
# Events this many times above the top, in this share, on a marker or scatter channel: the
# range does not describe the data (real marker channels reach at most ~3 x, width channels 350 x).
FAR_ABOVE_FACTOR = 100
FAR_ABOVE_SHARE = 0.01
FLOAT_LOOKALIKE_SHARE = 0.9
MIN_EVENTS_FOR_SHARES = 20  # below this, "constant" and "saturated" are not judged


@dataclass(frozen=True)
class Problem:
    """One implausible finding on one channel."""

    channel: str      # $PnN
    marker: str       # the marker or scatter parameter it carries (e.g. "CD125", "SSC-A")
    text: str
    fatal: bool       # True: the analysis cannot give a trustworthy number (FAILED)

    def __str__(self) -> str:
        label = self.channel if self.channel == self.marker else f"{self.marker} ({self.channel})"
        return f"{label}: {self.text}"


def problems(fcs: FCSData, markers: dict[str, str], required: Sequence[str] = (),
             margin_fraction: float = 0.999) -> list[Problem]:
    """Implausible findings on the channels the analysis uses.

    Parameters
    ----------
    fcs : FCSData
        A tube read with its events.
    markers : dict
        Marker -> $PnN, as ``panel.resolve_markers`` returns.
    required : iterable of str
        Markers the analysis cannot do without (config ``panel.required``). A
        problem on one of them is fatal; on another marker it only puts the
        answer in doubt, since gating may still work without it. Non-finite
        and absurd values are fatal on any channel.
    margin_fraction : float
        Config ``qc.margin_fraction``: values at or above this fraction of
        ``$PnR`` are at the detector ceiling, which the ``margins`` gate
        removes; many events there are judged after gating (``ceiling``),
        not here.

    Returns
    -------
    list of Problem
    """
    if fcs.events is None or len(fcs.events) == 0:
        return []
    required = set(required)
    mapped = {name: marker for marker, name in markers.items()}
    n = len(fcs.events)
    found = []
    for i, channel in enumerate(fcs.channels):
        column = fcs.events[:, i]  # contiguous: the reader keeps events column-major
        marker = mapped.get(channel.name)
        is_time = marker == "Time" or channel.name.lower() == "time"
        bad = n - int(np.count_nonzero(np.isfinite(column)))
        if bad:
            # Fatal on any channel, used or not: compensation spreads a NaN or an infinity
            # into every channel of the matrix, and histograms of it fail.
            found.append(Problem(channel.name, marker or channel.name,
                                 f"{bad:,} of {n:,} events hold NaN or infinite values", True))
            continue
        if is_time:
            found += [Problem(channel.name, marker or channel.name, text, False) for text in _time_problems(column)]
            continue
        # Fatal on any channel too: compensation carries them into the markers, and the
        # transforms stretch their top to the data maximum.
        found += [Problem(channel.name, marker or channel.name, text, True)
                  for text in _absurd_values(column, _top(fcs, channel))]
        if marker is not None:
            found += [Problem(channel.name, marker, text, marker in required)
                      for text in _channel_problems(fcs, channel, column, margin_fraction * channel.range)]
    return found


def check(stained: FCSData, control: FCSData | None, markers: dict[str, str], required: Sequence[str] = (),
          margin_fraction: float = 0.999, side_by_side: Callable | None = None) -> list[str]:
    """Refuse a stained tube with a fatal problem; return the rest as REVIEW doubts.

    Raises
    ------
    InputError
        For the first fatal problem of the stained tube (the sample ends FAILED).

    Returns
    -------
    list of str
        Doubts that send the result to REVIEW: non-fatal problems of the stained
        tube, every problem of the control tube (its CD125 sets the threshold,
        but analyze's own rules decide whether it is usable). A control that
        is the stained tube itself is refused before this, by ``controltube``.

    ``side_by_side(stained_call, control_call)`` (e.g. `SampleAnalysis.both`)
    checks the two tubes at once; by default one after the other.
    """
    def tube_problems(tube):
        return (lambda: problems(tube, markers, required, margin_fraction)) if tube is not None else list

    calls = (tube_problems(stained), tube_problems(control))
    stained_problems, control_problems = side_by_side(*calls) if side_by_side else (calls[0](), calls[1]())
    fatal = [p for p in stained_problems if p.fatal]
    if fatal:
        more = f" (and {len(fatal) - 1} more implausible channel(s))" if len(fatal) > 1 else ""
        raise InputError(stained.path, f"implausible data: {fatal[0]}{more}")
    doubts = [f"stained tube implausible: {p}" for p in stained_problems]
    return doubts + [f"control tube implausible: {p}" for p in control_problems]


def _time_problems(column):
    if column.size > 1 and column.min() == column.max():
        return [f"all {column.size:,} events have the same time ({column[0]:g}): time QC cannot judge the flow"]
    return []


def _absurd_values(column, top):
    absurd = int(np.count_nonzero(np.abs(column) > ABSURD_FACTOR * top))
    if not absurd:
        return []
    return [f"{absurd:,} of {column.size:,} events have values beyond {ABSURD_FACTOR:g} x the range "
            f"{top:g} (largest {float(np.abs(column).max()):g})"]


def _channel_problems(fcs, channel, column, ceiling=np.inf):
    """The checks for channels the analysis uses (non-finite and absurd values are checked for all).

    ``ceiling``: where the ``margins`` gate starts removing events (see ``_share_problems``).
    """
    n = column.size
    top = _top(fcs, channel)
    # A handful of events says nothing about shares (and analyze refuses so few anyway).
    found = _share_problems(column, ceiling) if n >= MIN_EVENTS_FOR_SHARES else []
    over = fcs.over_range.get(channel.name, 0.0)
    if over >= OVER_RANGE_SHARE:
        found.append(f"{over:.0%} of events have bits above $P{channel.index}R={channel.range:g}: "
                     "$DATATYPE, $PnB and $PnR do not describe the data (float data declared as integers?)")
    if _floats_in_disguise(fcs, channel, column):
        found.append("the 32-bit integers read as IEEE floats: float data declared as integers "
                     f"($DATATYPE {fcs.datatype})")
    largest = float(np.abs(column).max())
    far_above = np.count_nonzero(np.abs(column) > FAR_ABOVE_FACTOR * top) / n
    if far_above >= FAR_ABOVE_SHARE:
        found.append(f"{far_above:.0%} of events exceed {FAR_ABOVE_FACTOR:g} x $P{channel.index}R="
                     f"{channel.range:g} (largest {largest:g}): the range does not describe the data")
    if 0 < largest and top > EMPTY_RANGE_FACTOR * largest:
        found.append(f"$P{channel.index}R={channel.range:g} but the largest value is {largest:g}: "
                     "the range does not describe the data")
    return found


def _share_problems(column, ceiling=np.inf):
    """A constant channel, or most events piled at a maximum below the detector ceiling.

    Most events at the ceiling (at or above ``ceiling``, the values the margins
    gate removes) are not judged here: a high gain puts a marrow's granulocytes
    at the SSC ceiling while the blasts lie far below it, so only the events
    the analysis needs can tell whether it matters (``cd125gate.analysis.gating.ceiling``). A
    pile-up at a maximum *below* the ceiling is: the detector clips where
    ``$PnR`` does not say, no gate removes those events, and the mixture fit
    would take them for a population.
    """
    n = column.size
    # A value held by >= CONSTANT_SHARE of the events holds more than half of every k-th
    # event when k * (1 - CONSTANT_SHARE) < 1/2, so it is that subsample's median: an exact
    # test at a fortieth of the cost of the whole column's median.
    middle = float(np.median(column[::max(1, int(0.4 / (1.0 - CONSTANT_SHARE)))]))
    at_middle = np.count_nonzero(column == middle) / n
    if at_middle >= CONSTANT_SHARE:
        return [f"constant: {at_middle:.1%} of {n:,} events have the value {middle:g}"]
    highest = float(column.max())
    if highest >= ceiling:
        return []
    at_max = np.count_nonzero(column == highest) / n
    if at_max >= SATURATED_SHARE:
        return [f"saturated below the range: {at_max:.0%} of {n:,} events sit at the maximum {highest:g}, "
                f"under the ceiling {ceiling:g} the margins gate removes: the detector clips where $PnR "
                "does not say"]
    return []


def _top(fcs, channel):
    """The largest value the channel can hold, in the units of ``fcs.events``."""
    decades, offset = channel.amplification
    top = 10 ** decades * offset if decades > 0 and fcs.datatype == "I" else channel.range
    if channel.gain not in (None, 0.0, 1.0):
        top = top / abs(channel.gain)
    return top


def _floats_in_disguise(fcs, channel, column):
    """True when a linear 32-bit integer channel's values are mostly IEEE float32 bit patterns.

    Real integer data stay far below 2**24; positive float32 numbers between
    1e-3 and 1e9 are integers between about 0.98e9 and 1.3e9.
    """
    kind = fcs.keywords.get(f"$P{channel.index}DATATYPE", fcs.datatype).strip().upper()
    if kind != "I" or channel.bits != 32 or channel.amplification[0] > 0 or channel.gain not in (None, 0.0, 1.0):
        return False
    big = column >= 2 ** 24
    if np.count_nonzero(big) < OVER_RANGE_SHARE * column.size:
        return False
    as_float = column[big].astype(np.uint32).view(np.float32)
    magnitude = np.abs(as_float)
    plausible = np.isfinite(as_float) & (magnitude >= 1e-3) & (magnitude <= 1e9)
    return np.count_nonzero(plausible) >= FLOAT_LOOKALIKE_SHARE * as_float.size
