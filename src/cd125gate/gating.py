"""The old home of the automated gating, now split by concern (see ``hierarchy``).

Kept only for callers the split has not reached yet; new code imports the new modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .boundaries import settle_in_place as settle  # noqa: F401  (moved: boundaries.settle_in_place)
from .gatestep import gate_step

if TYPE_CHECKING:
    from . import gates
    from .model import GateStep, TubeAnalysis


def add_step(tube: TubeAnalysis, name: str, parent: str | None, gate: gates.Gate, x: str, y: str | None,
             note: str, exclusion: bool = False) -> GateStep:
    """Append ``gate``'s step to the tube (moved: ``gatestep.gate_step`` returns it; the caller appends)."""
    step = gate_step(tube, name, parent, gate, x, y, note, exclusion)
    tube.steps.append(step)
    return step
