"""A FlowJo 10 workspace of a batch (``batch.wsp``): every sample's gates, transforms and matrix.

A reviewer opens the batch in FlowJo and sees each sample gated as cd125gate
gated it. FlowKit writes the workspace (``Session.export_wsp``), one sample
at a time, because every sample carries its own gates (found from its own
data), its own logicle widths and its own spillover matrix, while a FlowKit
Session holds one set of transforms and matrices. The single-sample
workspaces are then joined into one document, each sample keeping its own
matrix inside its ``Sample`` element (where FlowJo keeps it, and where
FlowKit's ``Workspace`` reads it back).

Two adjustments make our Gating-ML acceptable to FlowJo, neither changing a
count: FlowJo allows one transform per channel, so the detector-ceiling gate
(``margins``), drawn on raw values of fluorescence channels, is expressed on
the channel's logicle scale (a monotone map of its bounds); and matrices are
renamed per sample so that two samples never share a matrix name.
"""

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .regate import load_gates, load_sample


@dataclass
class WorkspaceSample:
    sample_id: str
    gates: Path     # the sample's gates.xml
    fcs: Path       # its stained tube


def flowjo_strategy(gates_path):
    """The sample's GatingStrategy with raw-value dimensions moved onto their channel's transform."""
    import numpy as np

    strategy = load_gates(gates_path)
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
    return strategy


def _channel_transform(strategy, channel):
    """The transform the strategy's other gates use for ``channel`` (None: a linear channel)."""
    refs = set()
    for gate_id, gate_path in strategy.get_gate_ids():
        for dim in getattr(strategy.get_gate(gate_id, gate_path), "dimensions", []):
            if dim.id == channel and getattr(dim, "transformation_ref", None):
                refs.add(dim.transformation_ref)
    return refs.pop() if len(refs) == 1 else None


def sample_wsp(sample):
    """The FlowJo workspace (lxml root) of one sample, as FlowKit's Session writes it."""
    import flowkit as fk
    from lxml import etree

    strategy = flowjo_strategy(sample.gates)
    fcs = load_sample(sample.fcs)
    handle = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fk.Session(gating_strategy=strategy, fcs_samples=[fcs]).export_wsp(handle, "cd125gate batch")
    except (ValueError, KeyError, NotImplementedError) as exc:
        # FlowKit 1.3 writes no Boolean gate to a workspace (e.g. time QC that keeps the events
        # outside several removed time windows).
        raise InputError(sample.gates, f"FlowKit cannot write these gates as a FlowJo workspace: {exc}") from None
    return etree.fromstring(handle.getvalue())


def batch_wsp(samples, skipped=None):
    """One FlowJo 10 workspace (bytes) holding every sample of ``samples`` that FlowKit can write.

    A sample FlowKit cannot write is left out, never failing the batch: its
    (sample_id, reason) is appended to ``skipped`` and written as a comment
    in the workspace. Its gates.xml still opens in FlowJo and FlowKit.
    """
    from lxml import etree

    skipped = [] if skipped is None else skipped
    root = None
    number = 0
    for sample in samples:
        try:
            doc = sample_wsp(sample)
        except InputError as exc:
            skipped.append((sample.sample_id, exc.problem))
            continue
        number += 1
        sample_el = doc.find("SampleList/Sample")
        _renumber(sample_el, str(number))
        for matrix in doc.find("Matrices"):
            matrix.set("name", f"{sample.sample_id} spill")
            sample_el.insert(0, copy.deepcopy(matrix))  # the sample's own matrix, read with the sample
        if root is None:
            root = doc
            root.find("Groups/GroupNode/Group/SampleRefs").clear()
        else:
            root.find("SampleList").append(sample_el)
            root.find("Matrices").extend(list(doc.find("Matrices")))
        etree.SubElement(root.find("Groups/GroupNode/Group/SampleRefs"), "SampleRef", sampleID=str(number))
    if root is None:
        # Not one sample FlowKit can write (e.g. every tube has a Boolean time gate): an empty
        # workspace, as FlowKit writes one, that says why each sample is left out.
        root = _empty_wsp()
    for sample_id, reason in skipped:
        root.append(etree.Comment(f" left out: {sample_id}: {reason} ".replace("--", "- -")))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _empty_wsp():
    """The (lxml) root of a workspace with no sample, as FlowKit's Session writes it."""
    import flowkit as fk
    from lxml import etree

    handle = io.BytesIO()
    fk.Session().export_wsp(handle, "cd125gate batch")
    return etree.fromstring(handle.getvalue())


def _renumber(sample_el, number):
    sample_el.find("DataSet").set("sampleID", number)
    sample_el.find("SampleNode").set("sampleID", number)


def gated_samples(results):
    """WorkspaceSample of each (sample_id, result folder, result) that has gates (FAILED ones have none)."""
    chosen = []
    for sample_id, folder, result in results:
        if result.get("criterion") == "FAILED" or not result.get("gates"):
            continue
        chosen.append(WorkspaceSample(sample_id, Path(folder) / "gates.xml", Path(result["inputs"]["fcs"]["path"])))
    return chosen


def add_arguments(parser):
    parser.add_argument("results", nargs="+", metavar="RESULT_JSON", help="per-sample result.json files")
    parser.add_argument("--out", required=True, help="batch.wsp to write")


def run(args):
    from . import results
    from .fileio import atomic_write_bytes

    loaded = []
    for path in map(Path, args.results):
        result = results.load(path).to_json()
        loaded.append((result["sample_id"], path.parent, result))
    samples = gated_samples(loaded)
    skipped = []
    atomic_write_bytes(args.out, batch_wsp(samples, skipped))
    print(f"{args.out}: {len(samples) - len(skipped)} gated samples of {len(loaded)}")
    for sample_id, reason in skipped:
        print(f"left out {sample_id}: {reason} (its gates.xml holds the gates)")
    return 0
