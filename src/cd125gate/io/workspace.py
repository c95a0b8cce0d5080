"""A FlowJo 10 workspace of a batch (``batch.wsp``): every tube's gates, transforms and matrix.

A reviewer opens the batch in FlowJo and sees each tube gated as cd125gate
gated it: the stained and the control tube of every analysed sample in the
group ``automatic``, and, for a sample a reviewer re-gated, both tubes again
under the edited gates in the group ``re-gated``. FlowKit writes the
workspace (``Session.export_wsp``), one tube at a time, because every tube
carries its own gates (found from its own data: the control has its own time
QC), its own logicle widths and its own spillover matrix, while a FlowKit
Session holds one set of transforms and matrices. The single-tube workspaces
are then joined into one document, each tube keeping its own matrix inside
its ``Sample`` element (where FlowJo keeps it, and where FlowKit's
``Workspace`` reads it back).

Adjustments that make our Gating-ML acceptable to FlowJo, none changing a
count:

- FlowJo allows one transform per channel, so the detector-ceiling gate
  (``margins``), drawn on raw values of fluorescence channels, is expressed
  on the channel's logicle scale (a monotone map of its bounds);
- FlowKit writes no Boolean gate to a workspace, so a Boolean gate (the time
  QC: NOT the removed time windows) is written as FlowJo writes one, a
  ``NotNode`` / ``AndNode`` / ``OrNode`` naming its operands by path; FlowJo
  has no complemented operand, so an operand used as a complement gets a
  ``NotNode`` of its own (``not <gate>``) beside it;
- each tube's ``DataSet uri`` is its FCS file relative to the workspace's
  folder, so FlowJo and ``fk.Workspace`` find the files from where the
  workspace lies (and the batch folder and its data can move together);
- matrices are renamed per tube so that two tubes never share a matrix name.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from cd125gate.errors import InputError
from cd125gate.io.gatesfile import load_gates, load_sample

if TYPE_CHECKING:
    from collections.abc import Iterable

    import flowkit as fk
    from lxml import etree

    from cd125gate.results import SampleResult

# The `.get` calls below read XML attributes of lxml elements, never a result.

AUTOMATIC, REGATED = "automatic", "re-gated"
GATING_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
BOOLEAN_NODES = {"and": "AndNode", "or": "OrNode", "not": "NotNode"}


@dataclass
class WorkspaceSample:
    name: str       # the tube's name in the workspace, e.g. "low_fmo stained"
    gates: Path     # its Gating-ML (gates.xml, control_gates.xml or a reviewer's edited file)
    fcs: Path       # its FCS file
    group: str = AUTOMATIC


def flowjo_strategy(gates_path: Path | str) -> tuple[fk.GatingStrategy, dict]:
    """The tube's GatingStrategy as FlowKit can write it, and its Boolean gates to write by hand.

    Returns
    -------
    (GatingStrategy, dict)
        The strategy with raw-value dimensions moved onto their channel's
        transform and each Boolean gate replaced by a stand-in; and
        (name, path) -> FlowKit BooleanGate of every gate replaced.
    """
    import flowkit as fk

    strategy = load_gates(gates_path)
    booleans = _boolean_gates(strategy)
    if booleans:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            strategy = fk.parse_gating_xml(io.BytesIO(_with_stand_ins(gates_path, booleans)))
    _move_raw_dimensions(strategy)
    return strategy, booleans


def _boolean_gates(strategy):
    from flowkit import gates as fk_gates

    found = {}
    for gate_id, gate_path in strategy.get_gate_ids():
        gate = strategy.get_gate(gate_id, gate_path)
        if isinstance(gate, fk_gates.BooleanGate):
            found[(gate_id, tuple(gate_path))] = gate
    return found


def _with_stand_ins(gates_path, booleans):
    """The Gating-ML document with each Boolean gate replaced by a copy of a geometric gate.

    The stand-in only carries the Boolean gate's name and place in the tree
    through FlowKit's writer; its Population is rewritten as a Boolean node.
    """
    from lxml import etree

    tree = etree.parse(str(gates_path))
    names = {name for name, _ in booleans}
    elements = [el for el in tree.getroot() if el.get(f"{{{GATING_NS}}}id") is not None]
    model = next(el for el in elements if el.get(f"{{{GATING_NS}}}id") not in names)
    for el in elements:
        if el.get(f"{{{GATING_NS}}}id") in names:
            stand_in = copy.deepcopy(model)
            for attribute in ("id", "parent_id"):
                stand_in.attrib.pop(f"{{{GATING_NS}}}{attribute}", None)
                if el.get(f"{{{GATING_NS}}}{attribute}") is not None:
                    stand_in.set(f"{{{GATING_NS}}}{attribute}", el.get(f"{{{GATING_NS}}}{attribute}"))
            el.getparent().replace(el, stand_in)
    return etree.tostring(tree)


def _move_raw_dimensions(strategy):
    """Put raw-value dimensions on their channel's transform (FlowJo: one transform per channel)."""
    import numpy as np

    for gate_id, gate_path in strategy.get_gate_ids():
        gate = strategy.get_gate(gate_id, gate_path)
        for dim in getattr(gate, "dimensions", []):
            xform_id = _channel_transform(strategy, dim.id)
            if getattr(dim, "transformation_ref", "n/a") is not None or xform_id is None:
                continue
            xform = strategy.get_transform(xform_id)
            dim.transformation_ref = xform_id
            for bound in ("min", "max"):
                value = getattr(dim, bound)
                if value is not None:
                    setattr(dim, bound, float(np.asarray(xform.apply(np.array([[value]], dtype=float)))[0, 0]))


def _channel_transform(strategy, channel):
    """The transform the strategy's other gates use for ``channel`` (None: a linear channel)."""
    refs = set()
    for gate_id, gate_path in strategy.get_gate_ids():
        for dim in getattr(strategy.get_gate(gate_id, gate_path), "dimensions", []):
            if dim.id == channel and getattr(dim, "transformation_ref", None):
                refs.add(dim.transformation_ref)
    return refs.pop() if len(refs) == 1 else None


def sample_wsp(sample: WorkspaceSample, folder: Path | str) -> etree._Element:
    """The FlowJo workspace (lxml root) of one tube, as FlowKit's Session writes it.

    ``folder`` is where the workspace will lie: the tube's FCS file is named relative to it.
    """
    import flowkit as fk
    from lxml import etree

    strategy, booleans = flowjo_strategy(sample.gates)
    fcs = load_sample(sample.fcs)
    fcs.id = sample.name  # FlowJo's and FlowKit's name of the tube in the workspace
    handle = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fk.Session(gating_strategy=strategy, fcs_samples=[fcs]).export_wsp(handle, sample.group)
    except (ValueError, KeyError, NotImplementedError) as exc:
        # FlowKit 1.3 writes rectangles and polygons only (an edited file may hold an ellipse).
        raise InputError(sample.gates, f"FlowKit cannot write these gates as a FlowJo workspace: {exc}") from None
    root = etree.fromstring(handle.getvalue())
    _write_booleans(root.find("SampleList/Sample/SampleNode"), booleans)
    root.find("SampleList/Sample/DataSet").set("uri", fcs_uri(sample.fcs, folder))
    return root


def fcs_uri(fcs: Path | str, folder: Path | str) -> str:
    """The DataSet uri of ``fcs``: its path relative to the workspace's ``folder``, percent-encoded."""
    relative = os.path.relpath(Path(fcs).resolve(), Path(folder).resolve())
    return quote(Path(relative).as_posix())


def _write_booleans(sample_node, booleans):
    """Rewrite each stand-in Population as the Boolean node FlowJo writes."""
    for (name, path), gate in booleans.items():
        population = _population(sample_node, path[1:] + (name,))
        operands = []
        for ref in gate.gate_refs:
            operand = _ref_path(ref)
            if ref["complement"]:
                operand = _not_node(population, operand, path)
            operands.append(operand)
        population.tag = BOOLEAN_NODES[gate.type]
        stand_in = population.find("Gate")
        population.remove(stand_in)
        _dependents(population, operands)
        # A Boolean node has no gate of its own for its children's gates to name as parent.
        for child in population.iterfind("Subpopulations/*/Gate"):
            if child.get(f"{{{GATING_NS}}}parent_id") == stand_in.get(f"{{{GATING_NS}}}id"):
                del child.attrib[f"{{{GATING_NS}}}parent_id"]


def _ref_path(ref):
    """The FlowJo name of a Boolean gate's operand: its path below the tube, '/'-joined."""
    return tuple(ref["path"][1:]) + (ref["ref"],)


def _not_node(population, operand, path):
    """A NotNode ``not <operand>`` beside ``population``: FlowJo's form of a complemented operand."""
    from lxml import etree

    name = f"not {operand[-1]}"
    node = etree.Element("NotNode", name=name, annotation="", owningGroup="")
    _dependents(node, [operand])
    population.addprevious(node)
    return path[1:] + (name,)


def _dependents(node, operands):
    from lxml import etree

    dependents = etree.SubElement(node, "Dependents")
    for operand in operands:
        etree.SubElement(dependents, "Dependent", name="/".join(operand))


def _population(sample_node, names):
    """The Population element at ``names`` (gate names below the tube) under ``sample_node``."""
    node = sample_node
    for name in names:
        node = next(child for child in node.find("Subpopulations") if child.get("name") == name)
    return node


def batch_wsp(samples: Iterable[WorkspaceSample], folder: Path | str,
              skipped: list[tuple[str, str]] | None = None) -> bytes:
    """One FlowJo 10 workspace (bytes) holding every tube of ``samples`` that FlowKit can write.

    A tube FlowKit cannot write is left out, never failing the batch: its
    (name, reason) is appended to ``skipped`` and written as a comment in the
    workspace. Its Gating-ML still opens in FlowJo and FlowKit.
    """
    from lxml import etree

    skipped = [] if skipped is None else skipped
    root = None
    groups = {}
    for number, sample in enumerate(samples, 1):
        try:
            doc = sample_wsp(sample, folder)
        except InputError as exc:
            skipped.append((sample.name, exc.problem))
            continue
        sample_el = doc.find("SampleList/Sample")
        _renumber(sample_el, str(number))
        for matrix in doc.find("Matrices"):
            matrix.set("name", f"{sample.name} spill")
            sample_el.insert(0, copy.deepcopy(matrix))  # the tube's own matrix, read with the tube
        if root is None:
            root = doc
            root.find("Groups").clear()
        else:
            root.find("SampleList").append(sample_el)
            root.find("Matrices").extend(list(doc.find("Matrices")))
        groups.setdefault(sample.group, []).append(str(number))
    if root is None:
        # Not one tube FlowKit can write: an empty workspace, as FlowKit writes one, that says why.
        root = _empty_wsp()
    for group, numbers in groups.items():
        _group_node(root.find("Groups"), group, numbers)
    for name, reason in skipped:
        root.append(etree.Comment(f" left out: {name}: {reason} ".replace("--", "- -")))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _group_node(groups_el, name, numbers):
    """A FlowJo group holding the tubes ``numbers``, as FlowKit writes one."""
    from lxml import etree

    node = etree.SubElement(groups_el, "GroupNode", name=name, annotation="", owningGroup=name)
    refs = etree.SubElement(etree.SubElement(node, "Group", name=name), "SampleRefs")
    for number in numbers:
        etree.SubElement(refs, "SampleRef", sampleID=number)


def _empty_wsp():
    """The (lxml) root of a workspace with no sample, as FlowKit's Session writes it."""
    import flowkit as fk
    from lxml import etree

    handle = io.BytesIO()
    fk.Session().export_wsp(handle, AUTOMATIC)
    return etree.fromstring(handle.getvalue())


def _renumber(sample_el, number):
    sample_el.find("DataSet").set("sampleID", number)
    sample_el.find("SampleNode").set("sampleID", number)


def gated_samples(results: Iterable[tuple[Path, SampleResult]]) -> list[WorkspaceSample]:
    """WorkspaceSample of each tube of each (result folder, result) that has gates.

    FAILED results have no gates; a control tube is included when the result
    wrote its gates (``control_gates.xml``: its own time QC).
    """
    chosen = []
    for folder, result in results:
        if result.criterion == "FAILED" or not result.gates:
            continue
        sample_id = result.sample_id
        stained, control = result.input_file("fcs"), result.input_file("control")
        chosen.append(WorkspaceSample(f"{sample_id} stained", Path(folder) / (result.output("gates") or "gates.xml"),
                                      Path(stained.path)))
        if result.output("control_gates") and control is not None:
            chosen.append(WorkspaceSample(f"{sample_id} control", Path(folder) / result.output("control_gates"),
                                          Path(control.path)))
    return chosen


def regated_samples(reviewed: Iterable[SampleResult]) -> list[WorkspaceSample]:
    """WorkspaceSample of both tubes of each reviewed result, under the reviewer's gates.

    The edited gates count the control too (as `cd125gate regate` counted them).
    """
    chosen = []
    for result in reviewed:
        sample_id = result.sample_id
        gates, control = Path(result.regate.gates), result.input_file("control")
        chosen.append(WorkspaceSample(f"{sample_id} stained re-gated", gates, Path(result.input_file("fcs").path),
                                      REGATED))
        if result.control_gates and control is not None:
            chosen.append(WorkspaceSample(f"{sample_id} control re-gated", gates, Path(control.path), REGATED))
    return chosen
