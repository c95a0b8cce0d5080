"""The applied gates of a tube as Gating-ML 2.0.

A reviewer re-opens these gates in FlowKit, FlowJo or Cytobank and gets the
same counts: the document carries the compensation matrix and every
channel's transform, and each gate refers to them by id.

Two writers give the same bytes: ``export`` writes the document itself from
the light gate values of ``cd125gate.analysis.gating.gates`` without importing FlowKit (about
two seconds per process), in FlowKit's own layout (element and attribute
order, number formatting, indentation); ``export_flowkit`` builds a FlowKit
GatingStrategy and lets FlowKit write it, the reference the tests hold the
first one to, byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cd125gate.analysis import compensation, transforms
from cd125gate.analysis.gating.gatestep import COMP_ID

if TYPE_CHECKING:
    from cd125gate.analysis.compensation import Compensation
    from cd125gate.analysis.model import GateStep, TubeAnalysis
    from cd125gate.analysis.transforms import Scale

def gate_path(tube: TubeAnalysis, step: GateStep) -> tuple[str, ...]:
    """FlowKit's path of a step: ("root", ancestors...)."""
    by_name = {s.name: s for s in tube.steps}
    path = []
    parent = step.parent
    while parent is not None:
        path.append(parent)
        parent = by_name[parent].parent
    return tuple(["root"] + path[::-1])


def build_strategy(tube: TubeAnalysis, comp: Compensation | None) -> Any:
    """A FlowKit GatingStrategy holding the matrix, transforms and gates applied to ``tube``."""
    import flowkit as fk

    strategy = fk.GatingStrategy()
    if comp is not None and comp.applied:
        strategy.add_comp_matrix(COMP_ID, compensation.to_flowkit(comp))
    for _channel, scale in sorted(tube.scales.items()):
        xform = transforms.to_flowkit(scale)
        if xform is not None:
            strategy.add_transform(transforms.transform_id(scale), xform)
    for step in tube.steps:
        strategy.add_gate(step.gate.to_flowkit(), gate_path(tube, step))
    return strategy


def export_flowkit(tube: TubeAnalysis, comp: Compensation | None) -> bytes:
    """Gating-ML 2.0 text of the tube's applied gates, written by FlowKit (the reference of ``export``)."""
    import flowkit as fk

    handle = io.BytesIO()
    fk.export_gatingml(build_strategy(tube, comp), handle)
    return handle.getvalue()


def reapply(gatingml_path: str | Path, fcs_path: str | Path) -> dict[str, int]:
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


def export_empty(reason: str) -> bytes:
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


# --- Gating-ML written without FlowKit -------------------------------------------------------

NAMESPACES = (("gating", "http://www.isac-net.org/std/Gating-ML/v2.0/gating"),
              ("data-type", "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"),
              ("transforms", "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"))


def export(tube: TubeAnalysis, comp: Compensation | None) -> bytes:
    """Gating-ML 2.0 text of the tube's applied gates (``cd125gate.analysis.gating.gates`` values), without FlowKit."""
    matrix = comp if comp is not None and comp.applied else None
    steps = [(s.name, s.parent, s.gate) for s in tube.steps]
    return document(steps, [tube.scales[c] for c in sorted(tube.scales)], matrix)


def document(steps: Sequence[tuple[str, str | None, Any]], scales: Sequence[Scale],
             comp: Compensation | None = None) -> bytes:
    """Gating-ML 2.0 bytes of gates, transforms and a spillover matrix.

    Parameters
    ----------
    steps : sequence of (name, parent name or None, gate)
        Light gates (``cd125gate.analysis.gating.gates``) in hierarchy order (a parent before its children).
    scales : sequence of Scale
        Every channel's scale; linear ones have no transform and are skipped.
    comp : Compensation or None
        The matrix referred to as ``COMP_ID``; None writes none.
    """
    root = _Element("gating:Gating-ML", [(f"xmlns:{prefix}", uri) for prefix, uri in NAMESPACES])
    for scale in scales:
        if scale.kind != "linear":
            root.children.append(_transform(scale))
    if comp is not None:
        root.children.append(_matrix(comp))
    for name, parent, gate in _depth_first(steps):
        root.children.append(_gate(name, parent, gate))
    lines = ["<?xml version='1.0' encoding='UTF-8'?>"]
    root.write(lines, 0)
    return ("\n".join(lines) + "\n").encode("utf-8")


class _Element:
    """The little of an XML element that Gating-ML needs: a tag, attributes in order, children."""

    def __init__(self, tag, attributes=(), children=None):
        self.tag, self.attributes, self.children = tag, list(attributes), children or []

    def write(self, lines, depth):
        """Append the element as lxml's pretty_print lays it out: two spaces per level."""
        indent = "  " * depth
        attrs = "".join(f' {k}="{_attribute(v)}"' for k, v in self.attributes)
        if not self.children:
            lines.append(f"{indent}<{self.tag}{attrs}/>")
            return
        lines.append(f"{indent}<{self.tag}{attrs}>")
        for child in self.children:
            child.write(lines, depth + 1)
        lines.append(f"{indent}</{self.tag}>")


# Characters XML 1.0 cannot hold at all (lxml refuses them too).
_FORBIDDEN = {c for c in range(0x20) if c not in (0x9, 0xA, 0xD)} | {0xFFFE, 0xFFFF}


def _attribute(value):
    """An attribute value escaped as lxml escapes it."""
    text = str(value)
    if any(ord(ch) in _FORBIDDEN or 0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise ValueError(f"{text!r} holds a character XML cannot represent")
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"),
                         ("\n", "&#10;"), ("\r", "&#13;"), ("\t", "&#9;")):
        text = text.replace(raw, escaped)
    return text


def _number(value):
    """A number as FlowKit writes it: str() of a float (shortest round-trip repr)."""
    return repr(float(value))


def _transform(scale):
    ns = "transforms"
    if scale.kind == "logicle":
        body = _Element(f"{ns}:logicle", [(f"{ns}:{k}", _number(scale.params[k])) for k in ("T", "W", "M", "A")])
    elif scale.kind == "arcsinh":
        T, M, A = transforms.asinh_parameters(scale.params)
        body = _Element(f"{ns}:fasinh", [(f"{ns}:T", _number(T)), (f"{ns}:M", _number(M)), (f"{ns}:A", _number(A))])
    else:
        raise ValueError(f"unknown scale kind {scale.kind!r} for {scale.channel}")
    return _Element(f"{ns}:transformation", [(f"{ns}:id", transforms.transform_id(scale))], [body])


def _matrix(comp):
    """The spillover matrix, its detectors ($PnN) also named as its fluorochromes (see compensation.to_flowkit)."""
    def names(tag):
        return _Element(f"transforms:{tag}", children=[
            _Element("data-type:fcs-dimension", [("data-type:name", c)]) for c in comp.channels])

    rows = [_Element("transforms:spectrum", children=[
        _Element("transforms:coefficient", [("transforms:value", _number(v))]) for v in row])
        for row in comp.matrix]
    return _Element("transforms:spectrumMatrix", [("transforms:id", COMP_ID)],
                    [names("fluorochromes"), names("detectors")] + rows)


def _depth_first(steps):
    """Steps in FlowKit's export order: depth first from the root, siblings in the given order."""
    children = {}
    for step in steps:
        children.setdefault(step[1], []).append(step)
    ordered, stack = [], list(reversed(children.get(None, [])))
    while stack:
        step = stack.pop()
        ordered.append(step)
        stack.extend(reversed(children.get(step[0], [])))
    if len(ordered) != len(steps):
        lost = sorted({s[0] for s in steps} - {s[0] for s in ordered})
        raise ValueError(f"gates {', '.join(lost)} have no path to the root")
    return ordered


def _gate(name, parent, gate):
    from cd125gate.analysis.gating import gates

    kind = type(gate).__name__
    if getattr(gate, "use_complement", False):
        # Gating-ML 2.0 has no complement flag on a geometric gate (FlowKit drops it silently).
        raise ValueError(f"gate {name!r}: use_complement cannot be written as Gating-ML; use a BooleanGate")
    if name != gate.gate_name:
        raise ValueError(f"step {name!r} holds gate {gate.gate_name!r}")
    attributes = [("gating:id", name)] + ([("gating:parent_id", parent)] if parent is not None else [])
    element = _Element(f"gating:{kind}", attributes, [_dimension(d) for d in gate.dimensions])
    if isinstance(gate, gates.PolygonGate):
        element.children += [_Element("gating:vertex", children=[
            _Element("gating:coordinate", [("data-type:value", _number(c))]) for c in vertex])
            for vertex in gate.vertices]
    elif isinstance(gate, gates.EllipsoidGate):
        element.children += [
            _Element("gating:mean", children=[
                _Element("gating:coordinate", [("data-type:value", _number(c))]) for c in gate.coordinates]),
            _Element("gating:covarianceMatrix", children=[
                _Element("gating:row", children=[_Element("gating:entry", [("data-type:value", _number(v))])
                                                 for v in row]) for row in gate.covariance_matrix]),
            _Element("gating:distanceSquare", [("data-type:value", _number(gate.distance_square))])]
    elif isinstance(gate, gates.BooleanGate):
        element.children.append(_Element(f"gating:{gate.type}", children=[
            _Element("gating:gateReference", [("gating:ref", r.ref)]
                     + ([("gating:use-as-complement", "true")] if r.complement else []))
            for r in gate.gate_refs]))
    elif not isinstance(gate, gates.RectangleGate):
        raise ValueError(f"gate {name!r}: {kind} is not supported")
    return element


def _dimension(d):
    attributes = [("gating:compensation-ref", d.compensation_ref)] if d.compensation_ref is not None else []
    if d.transformation_ref is not None:
        attributes.append(("gating:transformation-ref", d.transformation_ref))
    if d.min is not None:
        attributes.append(("gating:min", _number(d.min)))
    if d.max is not None:
        attributes.append(("gating:max", _number(d.max)))
    return _Element("gating:dimension", attributes, [_Element("data-type:fcs-dimension", [("data-type:name", d.id)])])
