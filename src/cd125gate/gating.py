"""Automated gating: find each gate of the hierarchy from the tube's own data.

Every gate is proposed from the data (density valleys, robust statistics and
a Gaussian mixture for the CD45/SSC blast cluster) and expressed as a FlowKit
gate, so the exported Gating-ML reproduces every count in FlowKit, FlowJo or
Cytobank. Counting applies those same FlowKit gate objects (``gate.apply``)
to events compensated and transformed once, instead of FlowKit's
``gate_sample``, which recomputes the transforms for every gate; a test shows
``gate_sample`` on the exported gates gives the same counts.

Hierarchy (names in ``model.GATE_ORDER``)::

    time_qc > margins > cells > singlets > viable > leukocytes > blast_region > blasts > cd125_pos
                                                    leukocytes > lymphocytes (internal CD125 reference)
                                                    blast_region > basophils (excluded from blasts)
"""

import numpy as np
import pandas as pd
from flowkit import Dimension, gates

from . import density
from .model import GateStep, TimeQC
from .transforms import transform_id

COMP_ID = "spill"


def dim(tube, channel, raw=False, lo=None, hi=None):
    """A FlowKit Dimension for ``channel`` as this tube holds it in ``tube.data``.

    Fluorescence channels are compensated and transformed; scatter and Time are
    linear. ``raw=True`` asks for the uncompensated, untransformed values
    (the detector's own numbers, used for the ceiling gate).
    """
    fluor = tube.scales[channel].kind != "linear"
    comp = COMP_ID if fluor and tube.compensation != "none" and not raw else "uncompensated"
    xform = transform_id(tube.scales[channel]) if fluor and not raw else None
    return Dimension(channel, compensation_ref=comp, transformation_ref=xform, range_min=lo, range_max=hi)


def _frame(gate, tube, rows=slice(None)):
    """The events (``rows`` of them) a geometric gate is evaluated on, as FlowKit's ``gate.apply`` expects."""
    columns = {}
    for d in gate.dimensions:
        raw = d.transformation_ref is None and tube.scales[d.id].kind != "linear"
        source = tube.fcs.events if raw else tube.data
        index = tube.fcs.channel_names().index(d.id) if raw else tube.channels.index(d.id)
        columns[d.id] = source[rows, index]
    # copy=False: pandas would otherwise stack the columns into one new block,
    # a full copy of every column per gate (a third of the gating time at 1M events).
    return pd.DataFrame(columns, copy=False)


def apply_gate(gate, tube, parent_mask, steps_by_name=None):
    """Membership of every event in ``gate`` and its parent (a boolean array)."""
    if isinstance(gate, gates.BooleanGate):
        members = [steps_by_name[r["ref"]].mask ^ r["complement"] for r in gate.gate_refs]
        if gate.type == "not":
            return ~members[0] & parent_mask
        combine = np.logical_and if gate.type == "and" else np.logical_or
        return combine.reduce(members) & parent_mask
    return gate.apply(_frame(gate, tube)) & parent_mask


def add_step(tube, name, parent, gate, x, y, note, exclusion=False):
    """Apply ``gate`` under ``parent`` (a step name or None) and append the step to the tube."""
    steps = {s.name: s for s in tube.steps}
    parent_mask = steps[parent].mask if parent else np.ones(len(tube.data), dtype=bool)
    mask = apply_gate(gate, tube, parent_mask, steps)
    step = GateStep(name, parent, gate, x, y, mask, int(parent_mask.sum()), note, exclusion)
    tube.steps.append(step)
    return step


# -- acquisition QC -----------------------------------------------------------------------------

def time_qc(tube, cfg):
    """Remove time bins whose event rate or mean signal departs from the rest of the acquisition.

    In the spirit of flowAI / PeacoQC: the acquisition is cut into equal time
    bins of about ``bin_events`` events; a bin is removed when its event rate
    or the mean of a channel in it lies more than the configured number of
    robust standard deviations from the median bin. Removed bins become
    rectangle gates on Time (``time_anomaly_N``), and ``time_qc`` keeps the
    events outside all of them.
    """
    time_ch = tube.markers.get("Time")
    if time_ch is None or not cfg["qc"]["time_qc"]:
        return _no_time_qc(tube, "no Time channel" if time_ch is None else "time QC disabled")
    t = tube.column(time_ch)
    n_bins = int(np.clip(len(t) // cfg["qc"]["bin_events"], 10, 500))
    edges = np.linspace(t.min(), t.max(), n_bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)  # the last event belongs to the last bin
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    bad = _outliers(counts.astype(float), np.sqrt(max(np.median(counts), 1.0)),
                    cfg["qc"]["max_rate_deviation"])
    signal = {}
    per_bin = max(np.median(counts), 1.0)
    for marker in ("FSC-A", "SSC-A", "CD45", "CD125"):
        ch = tube.markers.get(marker)
        if ch is None:
            continue
        # Bin means, not medians: a median falling between two populations jumps
        # with small changes of composition, while a mean's noise is sd/sqrt(n).
        x = tube.column(ch)
        means = np.bincount(which, weights=x, minlength=n_bins) / np.maximum(counts, 1)
        bad |= _outliers(means, np.std(x) / np.sqrt(per_bin), cfg["qc"]["max_signal_deviation"])
        signal[ch] = means
    seconds = edges[1] - edges[0]  # the reader already scaled Time by $TIMESTEP
    qc = TimeQC(edges, counts / seconds, signal, ~bad, float(counts[bad].sum() / len(t)))
    _time_gates(tube, time_ch, edges, bad)
    return qc


def _no_time_qc(tube, why):
    first = tube.markers["FSC-A"]
    gate = gates.RectangleGate("time_qc", [dim(tube, first, lo=float(tube.column(first).min()))])
    add_step(tube, "time_qc", None, gate, first, None, f"not applied: {why}")
    return None


def _outliers(values, floor, limit):
    """Bins more than ``limit`` robust SDs from the median (SD never below ``floor``)."""
    spread = max(density.robust_sd(values), floor, 1e-12)
    return np.abs(values - np.median(values)) > limit * spread


def _time_gates(tube, time_ch, edges, bad):
    """One rectangle gate per run of removed bins, and time_qc = NOT any of them."""
    runs, start = [], None
    for i, is_bad in enumerate(list(bad) + [False]):
        if is_bad and start is None:
            start = i
        if not is_bad and start is not None:
            runs.append((edges[start], edges[i]))
            start = None
    refs = []
    for k, (lo, hi) in enumerate(runs, 1):
        name = f"time_anomaly_{k}"
        gate = gates.RectangleGate(name, [dim(tube, time_ch, lo=lo, hi=hi)])
        add_step(tube, name, None, gate, time_ch, None, "removed: rate or signal anomaly",
                 exclusion=True)
        refs.append({"ref": name, "path": ("root",), "complement": True})
    if refs:
        # Gating-ML's "and" takes two or more references, "not" exactly one.
        if len(refs) == 1:
            gate = gates.BooleanGate("time_qc", "not", [dict(refs[0], complement=False)])
        else:
            gate = gates.BooleanGate("time_qc", "and", refs)
        note = f"{len(runs)} time window(s) removed"
    else:
        gate = gates.RectangleGate("time_qc", [dim(tube, time_ch, lo=edges[0])])
        note = "no anomaly found"
    add_step(tube, "time_qc", None, gate, time_ch, None, note)


# -- scatter, viability, CD45 -----------------------------------------------------------------

def margins(tube, cfg):
    """Events below the detector ceiling on scatter and every fluorescence channel."""
    fraction = cfg["qc"]["margin_fraction"]
    used = [tube.markers[m] for m in ("FSC-A", "FSC-H", "SSC-A") if m in tube.markers]
    used += [c for c in tube.channels if tube.scales[c].kind != "linear"]
    ranges = {c.name: c.range for c in tube.fcs.channels}
    dims = [dim(tube, c, raw=True, hi=fraction * ranges[c]) for c in used]
    gate = gates.RectangleGate("margins", dims)
    add_step(tube, "margins", "time_qc", gate, tube.markers["FSC-A"], tube.markers["SSC-A"],
             f"below {fraction:.1%} of each detector's range")


def cells(tube, cfg):
    """Debris out: FSC-A above the valley between debris and cells."""
    fsc, ssc = tube.markers["FSC-A"], tube.markers["SSC-A"]
    x = tube.column(fsc)[tube.step("margins").mask]
    cut = density.deepest_valley(x, 0.0, float(np.median(x)))
    note = "FSC-A valley between debris and cells"
    if cut is None:
        cut, note = 0.0, "no debris population found: FSC-A >= 0"
    gate = gates.RectangleGate("cells", [dim(tube, fsc, lo=cut)])
    add_step(tube, "cells", "margins", gate, fsc, ssc, note)


def singlets(tube, cfg):
    """FSC-A/FSC-H ratio within a few robust SDs of the median: doublets sit above the diagonal."""
    fsc_a, fsc_h = tube.markers["FSC-A"], tube.markers.get("FSC-H")
    if fsc_h is None:
        gate = gates.RectangleGate("singlets", [dim(tube, fsc_a, lo=float(tube.column(fsc_a).min()))])
        add_step(tube, "singlets", "cells", gate, fsc_a, None, "not applied: no FSC-H channel")
        tube.flags.append("no FSC-H channel: doublets not removed")
        return
    parent = tube.step("cells").mask
    a, h = tube.column(fsc_a)[parent], tube.column(fsc_h)[parent]
    ratio = a[h > 0] / h[h > 0]
    k = cfg["gating"]["singlet_ratio_mad"]
    centre, spread = np.median(ratio), density.robust_sd(ratio)
    lo, hi = max(centre - k * spread, 1e-3), centre + k * spread
    top = 2.0 * float(tube.fcs.channels[tube.fcs.channel_names().index(fsc_a)].range)
    vertices = [(0.0, 0.0), (top, top / hi), (top, top / lo)]
    gate = gates.PolygonGate("singlets", [dim(tube, fsc_a), dim(tube, fsc_h)], vertices)
    add_step(tube, "singlets", "cells", gate, fsc_a, fsc_h,
             f"FSC-A/FSC-H between {lo:.2f} and {hi:.2f}")


def viable(tube, cfg):
    """Viability dye negative: below the valley between live and dead cells."""
    ch = tube.markers.get("viability")
    if ch is None:
        tube.flags.append("no viability dye in the panel: dead cells not removed")
        return "singlets"
    x = tube.column(ch)[tube.step("singlets").mask]
    lo, hi = np.percentile(x, [0.1, 99.9])
    peak = density.mode(x, lo, hi)
    cut = density.deepest_valley(x, peak, hi)
    note = "valley between live and dead cells"
    if cut is None:
        # No separate dead population: stay well above the live cells' spread.
        left = x[x <= peak]
        cut = peak + 6.0 * max(np.sqrt(np.mean((left - peak) ** 2)), 1e-3)
        note = "no dead population found: live peak + 6 SD"
    gate = gates.RectangleGate("viable", [dim(tube, ch, hi=cut)])
    add_step(tube, "viable", "singlets", gate, ch, tube.markers["SSC-A"], note)
    return "viable"


def leukocytes(tube, cfg, parent):
    """CD45+: above the valley under the dimmest CD45 population."""
    ch = tube.markers["CD45"]
    x = tube.column(ch)[tube.step(parent).mask]
    lo, upper = np.percentile(x, [0.1, 30])
    cut = density.deepest_valley(x, lo, float(upper))
    note = "valley below the CD45-dim cells"
    if cut is None:
        cut = float(np.median(x) - 6 * density.robust_sd(x))
        note = "no CD45-negative population found: median - 6 SD"
    gate = gates.RectangleGate("leukocytes", [dim(tube, ch, lo=cut)])
    add_step(tube, "leukocytes", parent, gate, ch, tube.markers["SSC-A"], note)


# -- blasts ----------------------------------------------------------------------------------

def blast_region(tube, cfg):
    """CD45-dim / SSC-low, between two density valleys.

    SSC-A: the valley between agranular cells (lymphocytes, blasts, basophils,
    monocytes) and granulocytes, on a log scale where the two are separate
    peaks. CD45: among the agranular cells, the valley between the CD45-dim
    blasts and the CD45-bright lymphocytes and monocytes. Where a population is
    too small to make a valley, a robust spread of the blasts sets the edge
    (see ``_upper_cut``), and the note says so. The lower CD45 edge and the
    SSC-A top then close in on the blast cluster (its mode + 4 robust SD).
    """
    cd45, ssc = tube.markers["CD45"], tube.markers["SSC-A"]
    leuko = tube.step("leukocytes")
    x, y = tube.column(cd45)[leuko.mask], tube.column(ssc)[leuko.mask]
    log_ssc = np.log10(np.clip(y, 10.0, None))
    ssc_cut, ssc_note = _upper_cut(log_ssc, "SSC-A", "granulocyte")
    agranular = x[log_ssc < ssc_cut]
    cd45_cut, cd45_note = _upper_cut(agranular, "CD45", "CD45-bright")
    notes = [n for n in (ssc_note, cd45_note) if n]
    left = leuko.gate.dimensions[0].min
    core = (log_ssc < ssc_cut) & (x < cd45_cut)
    if core.sum() >= 50:
        # Hug the blast cluster: debris tails below it and granulocyte tails above it
        # can pass the valleys; 4 robust SD of its own spread keeps the blasts.
        left = max(left, _cluster_edge(x[core], -1))
        ssc_cut = min(ssc_cut, _cluster_edge(log_ssc[core], +1))
    bottom, top = float(y.min()) - 1.0, 10.0 ** ssc_cut
    vertices = [(left, bottom), (cd45_cut, bottom), (cd45_cut, top), (left, top)]
    gate = gates.PolygonGate("blast_region", [dim(tube, cd45), dim(tube, ssc)], vertices)
    note = f"CD45 below {cd45_cut:.3f} (display), SSC-A below {top:.0f}"
    add_step(tube, "blast_region", "leukocytes", gate, cd45, ssc, "; ".join([note] + notes))
    return cd45_cut, top


def _upper_cut(x, channel, population, spread=4.0):
    """Upper edge of the lower population: the valley to the next one, or median + 4 robust SD.

    The fallback covers samples where the upper population is too small to
    make a valley (a marrow replaced by blasts): it still keeps eosinophils,
    granulocytes and lymphocytes, which sit far above, out of the region.
    """
    lo, hi = np.percentile(x, [0.5, 99.5])
    cut = density.deepest_valley(x, lo, hi)
    if cut is not None:
        return cut, ""
    cut = float(np.median(x) + spread * density.robust_sd(x))
    return cut, f"no {population} valley on {channel}: median + {spread:g} SD"


def _cluster_edge(x, side, spread=4.0):
    """Mode of ``x`` plus (side +1) or minus (side -1) ``spread`` robust SD of that side of it."""
    peak = density.mode(x, *np.percentile(x, [0.5, 99.5]))
    half = x[x > peak] if side > 0 else x[x < peak]
    sd = 1.4826 * float(np.median(np.abs(half - peak))) if half.size else 0.0
    return peak + side * spread * sd


# Display-scale bounds wide enough to hold every transformed event.
FAR = 10.0


def lymphocytes(tube, cd45_cut, ssc_top):
    """CD45-bright, SSC-low: the internal CD125-negative reference when there is no control."""
    cd45, ssc = tube.markers["CD45"], tube.markers["SSC-A"]
    leuko = tube.step("leukocytes").mask
    bright = leuko & (tube.column(cd45) >= cd45_cut) & (tube.column(ssc) < ssc_top)
    log_ssc = np.log10(np.clip(tube.column(ssc)[bright], 10.0, None))
    top = ssc_top
    if log_ssc.size >= 50:
        cut = density.deepest_valley(log_ssc, *np.percentile(log_ssc, [0.5, 99.5]))
        top = 10.0 ** cut if cut is not None else ssc_top  # lymphocytes below monocytes
    bottom = float(tube.column(ssc).min()) - 1.0
    vertices = [(cd45_cut, bottom), (FAR, bottom), (FAR, top), (cd45_cut, top)]
    gate = gates.PolygonGate("lymphocytes", [dim(tube, cd45), dim(tube, ssc)], vertices)
    add_step(tube, "lymphocytes", "leukocytes", gate, cd45, ssc,
             f"CD45-bright, SSC-A below {top:.0f}")


def blasts(tube, cfg):
    """Blast region minus basophils (CD123-bright, HLA-DR-negative).

    Basophils share the blasts' CD45-dim / SSC-low place and carry CD125, so
    leaving them in would raise the CD125+ fraction. The CD123 cut is the
    valley between blasts and the CD123-bright cells (or, without one, the
    blasts' mode + 4 robust SD of their upper side); the HLA-DR cut is the valley between
    HLA-DR-negative and -positive cells (without one, every CD123-bright event
    is excluded). CD34 is not required: some blasts lack it.
    """
    cd123, hladr = tube.markers.get("CD123"), tube.markers.get("HLA-DR")
    region = tube.step("blast_region")
    if cd123 is None or hladr is None:
        tube.flags.append("CD123 or HLA-DR missing: basophils not excluded from blasts")
        gate = gates.RectangleGate("blasts", [dim(tube, tube.markers["CD45"], lo=-FAR)])
        add_step(tube, "blasts", "blast_region", gate, region.x, region.y, "no backbone refinement")
        return
    y, x = tube.column(cd123)[region.mask], tube.column(hladr)[region.mask]
    lo, hi = np.percentile(y, [0.5, 99.9])
    c123 = density.deepest_valley(y, density.mode(y, lo, hi), hi)
    if c123 is None:
        c123 = _cluster_edge(y, +1)
    cdr = density.deepest_valley(x, *np.percentile(x, [0.5, 99.5]))
    cdr = FAR if cdr is None else cdr
    box = gates.RectangleGate("basophils", [dim(tube, hladr, hi=cdr), dim(tube, cd123, lo=c123)])
    add_step(tube, "basophils", "blast_region", box, hladr, cd123,
             "CD123-bright, HLA-DR-negative", exclusion=True)
    vertices = [(-FAR, -FAR), (FAR, -FAR), (FAR, FAR), (cdr, FAR), (cdr, c123), (-FAR, c123)]
    gate = gates.PolygonGate("blasts", [dim(tube, hladr), dim(tube, cd123)], vertices)
    hladr_note = f" with HLA-DR < {cdr:.3f}" if cdr < FAR else " at any HLA-DR (no HLA-DR valley)"
    add_step(tube, "blasts", "blast_region", gate, hladr, cd123,
             f"basophils excluded: CD123 >= {c123:.3f}{hladr_note} (display units)")


def cd125_positive(tube, threshold):
    """Blasts at or above the CD125 threshold (transformed units)."""
    ch = tube.markers["CD125"]
    gate = gates.RectangleGate("cd125_pos", [dim(tube, ch, lo=threshold.value)])
    add_step(tube, "cd125_pos", "blasts", gate, ch, None, threshold.description)


def find_gates(tube, cfg):
    """Propose every gate from the tube's own data, in hierarchy order (all but cd125_pos)."""
    tube.time_qc = time_qc(tube, cfg)
    margins(tube, cfg)
    cells(tube, cfg)
    singlets(tube, cfg)
    parent = viable(tube, cfg)
    leukocytes(tube, cfg, parent)
    cd45_cut, ssc_top = blast_region(tube, cfg)
    lymphocytes(tube, cd45_cut, ssc_top)
    blasts(tube, cfg)


# Display-scale distance within which `transforms.fast_logicle`'s error (< 1e-11)
# could carry an event across a gate boundary; a wide margin over that error.
SETTLE_DELTA = 1e-9


def settle(tube, compensated):
    """Make every count FlowKit's: recompute exactly the events close to a gate boundary.

    The tube was transformed with `transforms.fast_logicle`, within 1e-11 of
    FlowKit's logicle. An event can be counted differently from FlowKit only
    if its transformed values lie that close to a gate boundary, so every
    event whose membership changes when its logicle coordinates move by
    SETTLE_DELTA is transformed again with FlowKit's own logicle, and every
    gate is applied again.

    :param compensated: the tube's compensated events, columns as ``tube.channels``
    :return: how many events were recomputed
    """
    from .transforms import forward

    near = np.zeros(len(tube.data), dtype=bool)
    for step in tube.steps:
        near |= _near_boundary(step, tube)
    rows = np.flatnonzero(near)
    if rows.size:
        for j, channel in enumerate(tube.channels):
            if tube.scales[channel].kind == "logicle":
                tube.data[rows, j] = forward(tube.scales[channel], compensated[rows, j])
        reapply(tube)
    return int(rows.size)


def _near_boundary(step, tube):
    """Events of the step's parent within SETTLE_DELTA of the gate's boundary along a logicle axis.

    Only logicle coordinates carry the fast transform's error, so each event
    may sit anywhere in a box of half-width SETTLE_DELTA along those axes
    (zero along the others); its membership can differ from FlowKit's only if
    that box meets the boundary. For a rectangle that is a bound within reach;
    for a polygon, an edge crossing the box (separating-axis test).
    """
    near = np.zeros(len(tube.data), dtype=bool)
    gate = step.gate
    if isinstance(gate, gates.BooleanGate):
        return near
    reach = [SETTLE_DELTA if d.transformation_ref is not None and tube.scales[d.id].kind == "logicle"
             else 0.0 for d in gate.dimensions]
    if not any(reach):
        return near
    rows = np.flatnonzero(tube.parent_mask(step))
    frame = _frame(gate, tube, rows)
    values = [frame[d.id].to_numpy() for d in gate.dimensions]
    if isinstance(gate, gates.PolygonGate):
        hit = _box_meets_polygon(values, reach, np.asarray(gate.vertices, dtype=float))
    else:
        hit = np.zeros(rows.size, dtype=bool)
        for d, x, r in zip(gate.dimensions, values, reach):
            for bound in (d.min, d.max):
                if r and bound is not None:
                    hit |= np.abs(x - bound) <= r
    near[rows] = hit
    return near


def _box_meets_polygon(values, reach, vertices):
    """For each point, whether the box point +- reach meets an edge of the polygon."""
    (x, y), (rx, ry) = values, reach
    hit = np.zeros(x.size, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        dx, dy = x2 - x1, y2 - y1
        side = dx * (y - y1) - dy * (x - x1)  # signed distance to the edge's line, times its length
        hit |= ((np.minimum(x1, x2) <= x + rx) & (np.maximum(x1, x2) >= x - rx)
                & (np.minimum(y1, y2) <= y + ry) & (np.maximum(y1, y2) >= y - ry)
                & (np.abs(side) <= abs(dy) * rx + abs(dx) * ry))
    return hit


def reapply(tube):
    """Apply every gate of the tube again, in hierarchy order (after its events changed)."""
    done = {}
    for step in tube.steps:
        parent = done[step.parent].mask if step.parent else np.ones(len(tube.data), dtype=bool)
        step.mask = apply_gate(step.gate, tube, parent, done)
        step.parent_count = int(parent.sum())
        done[step.name] = step


def apply_template(tube, template, cfg):
    """Gate a control tube the same way: its own time QC, then the stained tube's gates."""
    tube.time_qc = time_qc(tube, cfg)
    for step in template.steps:
        if step.name == "time_qc" or step.name.startswith("time_anomaly_"):
            continue
        add_step(tube, step.name, step.parent, step.gate, step.x, step.y, step.note, step.exclusion)
