"""The control tube: read it, refuse it when it is the stained tube, and say when it cannot be used.

A control that cannot be read or gated like the stained tube does not stop
the analysis: it is left out and its problem becomes a REVIEW reason (the
threshold then falls back to an internal negative). A control that *is* the
stained tube is refused outright: it would put the cut-off above every
positive blast and give a confident NOT_MET.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from cd125gate.io.fcs import FCSData
    from cd125gate.settings import Panel


@dataclass(frozen=True)
class ControlRead:
    """What reading the control tube gave: its events, or why they could not be read.

    Both None when no control tube was given.
    """

    fcs: FCSData | None = None
    problem: str | None = None   # the reader's InputError, as one line naming the file


def read(path: Path | str | None) -> ControlRead:
    """The control tube at ``path`` read; a file the reader refuses is a ``problem``, not an exception."""
    from cd125gate.io.fcs import read_fcs

    if path is None:
        return ControlRead()
    try:
        return ControlRead(fcs=read_fcs(path))
    except InputError as exc:
        return ControlRead(problem=str(exc))


def refuse_same_tube(stained: FCSData, control: FCSData | None, control_path: Path | str | None) -> None:
    """Raise InputError when the control is the stained tube (same file, or the same events)."""
    if control is None:
        return
    same_file = control.sha256 == stained.sha256
    if same_file or _same_events(stained, control):
        what = "the same file" if same_file else "the same events"
        raise InputError(control_path, f"the control tube is {what} as the stained tube {stained.path}: "
                                       "a control must be its own FMO or isotype tube")


def usable(control: ControlRead, control_path: Path | str | None, markers: dict[str, str],
           panel_settings: Panel) -> tuple[FCSData | None, str | None]:
    """(the control as read, None) or (None, why it cannot be used); (None, None) without a control.

    ``control`` is what ``read`` returned; the reason names the file.
    """
    if control.problem is not None:
        return None, control.problem
    if control.fcs is None:
        return None, None
    try:
        problem = mismatch(control.fcs, markers, panel_settings)
    except InputError as exc:
        return None, str(exc)
    if problem:
        return None, f"{control_path}: {problem}"
    return control.fcs, None


def mismatch(control: FCSData, markers: dict[str, str], panel_settings: Panel) -> str | None:
    """Why the control cannot be gated like the stained tube, or None.

    The control must hold the stained tube's channels. Its CD125 channel
    carries no anti-CD125 (FMO) or an isotype, so its $PnS differs by design;
    every other marker must not sit on another channel.
    """
    from cd125gate.analysis import panel

    names = control.channel_names()
    missing = sorted({ch for ch in markers.values() if ch not in names})
    if missing:
        return f"channel(s) {', '.join(missing)} of the stained tube missing"
    own = panel.resolve_markers(control.channels, replace(panel_settings, required=[]), control.path)
    moved = sorted(m for m in markers if m != "CD125" and m in own and own[m] != markers[m])
    if moved:
        return f"marker(s) {', '.join(moved)} on other channels than in the stained tube"
    return None


def _same_events(stained: FCSData, control: FCSData) -> bool:
    """The same measurements (a re-exported copy): every column equal but Time, whose unit may differ."""
    names = stained.channel_names()
    if control.events.shape != stained.events.shape or control.channel_names() != names:
        return False
    columns = [i for i, name in enumerate(names) if not name.lower().startswith("time")]
    # Two different tubes differ in their first events already: compare those before the whole (copies).
    head = slice(0, 1000)
    if not np.array_equal(control.events[head][:, columns], stained.events[head][:, columns]):
        return False
    return bool(np.array_equal(control.events[:, columns], stained.events[:, columns]))
