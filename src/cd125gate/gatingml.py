"""The applied gates of a tube as one FlowKit GatingStrategy, exported as Gating-ML 2.0.

A reviewer re-opens these gates in FlowKit, FlowJo or Cytobank and gets the
same counts: the strategy carries the compensation matrix and every
channel's transform, and each gate refers to them by id.
"""

import io

from . import compensation, transforms
from .gating import COMP_ID


def gate_path(tube, step):
    """FlowKit's path of a step: ("root", ancestors...)."""
    by_name = {s.name: s for s in tube.steps}
    path = []
    parent = step.parent
    while parent is not None:
        path.append(parent)
        parent = by_name[parent].parent
    return tuple(["root"] + path[::-1])


def build_strategy(tube, comp):
    """A FlowKit GatingStrategy holding the matrix, transforms and gates applied to ``tube``."""
    import flowkit as fk

    strategy = fk.GatingStrategy()
    if comp is not None and comp.source != "none":
        strategy.add_comp_matrix(COMP_ID, compensation.to_flowkit(comp))
    for channel, scale in sorted(tube.scales.items()):
        xform = transforms.to_flowkit(scale)
        if xform is not None:
            strategy.add_transform(transforms.transform_id(scale), xform)
    for step in tube.steps:
        strategy.add_gate(step.gate, gate_path(tube, step))
    return strategy


def export(tube, comp):
    """Gating-ML 2.0 text of the tube's applied gates."""
    import flowkit as fk

    handle = io.BytesIO()
    fk.export_gatingml(build_strategy(tube, comp), handle)
    return handle.getvalue()


def reapply(gatingml_path, fcs_path):
    """Counts per gate when FlowKit itself applies exported gates to an FCS file.

    This is FlowKit's own path (``GatingStrategy.gate_sample``), used to check
    that the counts cd125gate reports are reproducible outside cd125gate.
    """
    import flowkit as fk

    strategy = fk.parse_gating_xml(str(gatingml_path))
    sample = fk.Sample(str(fcs_path), ignore_offset_error=True)
    results = strategy.gate_sample(sample)
    report = results.report
    return {row.gate_name: int(row["count"]) for _, row in report.iterrows()}


def export_empty(reason):
    """A Gating-ML 2.0 document with no gates, for a sample that could not be gated.

    FlowKit cannot export an empty GatingStrategy (it expects a gate tree), so
    the document is written here: the Gating-ML root and a comment with the
    reason. (The Gating-ML schema wants at least one gate, so FlowKit refuses
    to load it, which is right: there is nothing to re-apply.)
    """
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
        'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes" '
        'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations">\n'
        f"  <!-- no gates: {escape(reason).replace('--', '- -')} -->\n"
        "</gating:Gating-ML>\n"
    ).encode("utf-8")
