"""Automated gating: find each gate of the hierarchy from the tube's own data.

Every gate is proposed from the data (density valleys, robust statistics and
the named populations) and expressed as a gate of ``cd125gate.analysis.gating.gates``, each
meaning exactly what FlowKit's class of the same name means, so the exported
Gating-ML reproduces every count in FlowKit, FlowJo or Cytobank (tests show
FlowKit's ``gate_sample`` on the exported gates gives the same counts).

Each proposer returns its steps and flags (``gatestep.Proposal``); this
module alone assembles them into the tube: its steps, flags, time QC and
populations.

Hierarchy (names in ``model.GATE_ORDER``)::

    time_qc > margins > cells > singlets > viable > leukocytes > blast_region > blast_markers
                                                    > myeloid > intact (no viability dye) > blasts > cd125_pos
                                                    leukocytes > lymphocytes (internal CD125 reference)
                                                    myeloid > basophils (excluded from blasts)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from cd125gate.analysis.gating import blastgate, exclusions, populations, scatter
from cd125gate.analysis.gating.gatestep import Proposal, gate_step, guarded
from cd125gate.analysis.gating.timeqc import time_qc

if TYPE_CHECKING:
    from cd125gate.analysis.gating.populations import Populations
    from cd125gate.analysis.model import GateStep, TubeAnalysis
    from cd125gate.settings import Settings

A = TypeVar("A")
B = TypeVar("B")


def in_turn(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """``(first(), second())``: the sequential ``side_by_side`` of `find_gates`."""
    return first(), second()


def find_gates(tube: TubeAnalysis, settings: Settings, control: TubeAnalysis | None = None,
               side_by_side: Callable = in_turn) -> None:
    """Propose every gate from the tube's own data, in hierarchy order (all but cd125_pos), into the tube.

    A ``control`` tube is gated with the very same gates, after its own time
    QC: it takes each gate as soon as the stained tube has it, beside the
    search for the next one (``side_by_side(stained_call, control_call)``,
    e.g. `SampleAnalysis.both`, which uses a second core).
    """
    finished = threading.Event()

    def stained():
        try:
            _propose(tube, settings)
        finally:
            finished.set()

    def control_tube():
        control.time_qc, steps = time_qc(control, settings)
        control.steps.extend(steps)
        follow(control, tube, finished)

    if control is None:
        stained()
    else:
        side_by_side(stained, control_tube)


def _propose(tube: TubeAnalysis, settings: Settings) -> None:
    tube.time_qc, steps = time_qc(tube, settings)
    tube.steps.extend(steps)
    tube.steps.append(scatter.margins(tube, settings))
    scatter.require_below_ceiling(tube, settings)
    tube.steps.append(scatter.cells(tube))
    _take(tube, scatter.singlets(tube, settings))
    parent = _take(tube, scatter.viable(tube))
    tube.populations = find_populations(tube, settings, parent)
    tube.steps.append(blastgate.leukocytes(tube, parent))
    tube.steps.append(blastgate.blast_region(tube, settings))
    tube.steps.append(blastgate.lymphocytes(tube, settings))
    parent = _take(tube, blastgate.blast_markers(tube, settings))
    parent = _take(tube, blastgate.myeloid(tube, settings, parent))
    parent = _take(tube, exclusions.intact(tube, settings, parent))
    _take(tube, exclusions.blasts(tube, parent))


def _take(tube: TubeAnalysis, proposal: Proposal) -> str | None:
    """Add a proposal's steps and flags to the tube; the gate the next proposer hangs under."""
    # One extend: `follow` reads the steps from another thread as they come.
    tube.steps.extend(proposal.steps)
    tube.flags.extend(proposal.flags)
    return proposal.parent


def find_populations(tube: TubeAnalysis, settings: Settings, parent: str) -> Populations:
    """Fit and name the backbone populations of the events of ``parent`` (see ``populations``)."""
    for marker in ("CD45", "SSC-A"):
        guarded(tube, "populations", tube.markers[marker], tube.step(parent).mask, parent)
    return populations.fit(tube, tube.step(parent).mask, settings.gating)


def follow(tube: TubeAnalysis, source: TubeAnalysis, finished: threading.Event) -> None:
    """Copy the gates of ``source``'s steps to ``tube`` as they are added, until ``finished`` and all copied.

    Steps are only ever appended while the gates are found, so the ones
    copied never change afterwards.
    """
    copied = 0
    while True:
        last = finished.is_set()  # read before the steps: a step added after it is seen next round
        new = source.steps[copied:]
        tube.steps.extend(copied_steps(tube, new))
        copied += len(new)
        if last and not new:
            return
        if not new:
            finished.wait(0.002)


def copied_steps(tube: TubeAnalysis, steps: Sequence[GateStep]) -> list[GateStep]:
    """The gates of another tube's ``steps`` applied to this one, but for that tube's own time QC."""
    among, out = list(tube.steps), []
    for step in steps:
        if step.name == "time_qc" or step.name.startswith("time_anomaly_"):
            continue
        new = gate_step(tube, step.name, step.parent, step.gate, step.x, step.y, step.note, step.exclusion,
                        among=among)
        among.append(new)
        out.append(new)
    return out
