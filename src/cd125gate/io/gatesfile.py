"""Gating-ML 2.0 files and FCS files as FlowKit reads them: the edited gates a reviewer hands back.

Re-gating (`regate`), its figures (`regate_figure`) and the FlowJo workspace
(`workspace`) all read edited gates and tubes through FlowKit; this is the one
place that turns FlowKit's many exceptions into one-line ``InputError`` s.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from cd125gate.errors import InputError

if TYPE_CHECKING:
    import flowkit as fk

BLASTS, CD125_POS = "blasts", "cd125_pos"


def load_gates(path: Path | str) -> fk.GatingStrategy:
    """The FlowKit GatingStrategy of a Gating-ML 2.0 file; bad files are one-line InputErrors."""
    import flowkit as fk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fk.parse_gating_xml(str(path))
    except FileNotFoundError:
        raise InputError(path, "gates file does not exist") from None
    except Exception as exc:  # noqa: BLE001  FlowKit raises ValueError, lxml errors, KeyError... for bad documents
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a usable Gating-ML 2.0 document: {problem}") from None


def load_sample(path: Path | str) -> fk.Sample:
    """A FlowKit Sample of an FCS file (the events FlowKit gates)."""
    import flowkit as fk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fk.Sample(str(path), ignore_offset_error=True)
    except FileNotFoundError:
        raise InputError(path, "FCS file does not exist") from None
    except Exception as exc:  # noqa: BLE001  any FlowKit failure on a file is a problem of that file
        raise InputError(path, f"FlowKit cannot read this FCS file: {str(exc).splitlines()[0]}") from None


def cd125_cutoff(strategy: fk.GatingStrategy) -> tuple[float, float] | None:
    """The (transformed, raw) lower edge of an edited 1-D ``cd125_pos`` gate, or None.

    None when the gate is not a single lower cut-off (a reviewer may draw any shape).
    """
    import numpy as np
    from flowkit import gates as fk_gates

    gate = strategy.get_gate(CD125_POS)
    if not isinstance(gate, fk_gates.RectangleGate) or len(gate.dimensions) != 1 or gate.dimensions[0].min is None:
        return None
    dim = gate.dimensions[0]
    value = float(dim.min)
    if dim.transformation_ref is None:
        return value, value
    xform = strategy.get_transform(dim.transformation_ref)
    raw = float(np.asarray(xform.inverse(np.array([[value]], dtype=float))).ravel()[0])
    return value, raw
