"""Automated gating: find each gate of the hierarchy from the tube's own data.

Every gate is proposed from the data (density valleys, robust statistics and
the named populations) and expressed as a gate of ``cd125gate.gates``, each
meaning exactly what FlowKit's class of the same name means, so the exported
Gating-ML reproduces every count in FlowKit, FlowJo or Cytobank. Counting
applies those gate values (``gate.apply``) to events compensated and
transformed once, instead of FlowKit's ``gate_sample``, which recomputes the
transforms for every gate; tests show ``gate_sample`` on the exported gates
gives the same counts.

Hierarchy (names in ``model.GATE_ORDER``)::

    time_qc > margins > cells > singlets > viable > leukocytes > blast_region > blast_markers
                                                    > myeloid > intact (no viability dye) > blasts > cd125_pos
                                                    leukocytes > lymphocytes (internal CD125 reference)
                                                    myeloid > basophils (excluded from blasts)
"""

import math
import threading

import numpy as np

from . import density, gates, populations
from .compensation import APPLIED
from .errors import InputError
from .gates import Dimension
from .model import GateStep, TimeQC
from .transforms import transform_id

COMP_ID = "spill"


def dim(tube, channel, raw=False, lo=None, hi=None):
    """A gate Dimension for ``channel`` as this tube holds it in ``tube.data``.

    Fluorescence channels are compensated and transformed; scatter and Time are
    linear. ``raw=True`` asks for the uncompensated, untransformed values
    (the detector's own numbers, used for the ceiling gate). Precompensated
    data have no matrix: their fluorescence dimensions are "uncompensated" too.
    """
    fluor = tube.scales[channel].kind != "linear"
    comp = COMP_ID if fluor and tube.compensation in APPLIED and not raw else "uncompensated"
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
    return columns


def apply_gate(gate, tube, parent_mask, steps_by_name=None):
    """Membership of every event in ``gate`` and its parent (a boolean array)."""
    if isinstance(gate, gates.BooleanGate):
        return gate.apply({name: step.mask for name, step in steps_by_name.items()}) & parent_mask
    # A deep gate's parent holds part of the events: test only those (gathering them costs more
    # than testing every event when the parent holds more than half).
    rows = np.flatnonzero(parent_mask)
    if rows.size > len(parent_mask) // 2:
        return gate.apply(_frame(gate, tube)) & parent_mask
    mask = np.zeros(len(parent_mask), dtype=bool)
    mask[rows] = gate.apply(_frame(gate, tube, rows))
    return mask


def add_step(tube, name, parent, gate, x, y, note, exclusion=False):
    """Apply ``gate`` under ``parent`` (a step name or None) and append the step to the tube."""
    steps = {s.name: s for s in tube.steps}
    parent_mask = steps[parent].mask if parent else np.ones(len(tube.data), dtype=bool)
    mask = apply_gate(gate, tube, parent_mask, steps)
    step = GateStep(name, parent, gate, x, y, mask, int(np.count_nonzero(parent_mask)), note, exclusion)
    tube.steps.append(step)
    return step


# -- acquisition QC -----------------------------------------------------------------------------

def time_qc(tube, settings):
    """Remove time bins whose event rate or mean signal departs from the rest of the acquisition.

    In the spirit of flowAI / PeacoQC: the acquisition is cut into equal time
    bins of about ``bin_events`` events; a bin is removed when its event rate
    or the mean of a channel in it lies more than the configured number of
    robust standard deviations from the median bin. Removed bins become
    rectangle gates on Time (``time_anomaly_N``), and ``time_qc`` keeps the
    events outside all of them.
    """
    time_ch = tube.markers.get("Time")
    if time_ch is None or not settings.qc.time_qc:
        return _no_time_qc(tube, "no Time channel" if time_ch is None else "time QC disabled")
    t = tube.column(time_ch)
    if not t.max() > t.min():  # one instant (or no finite time): no flow rate to judge
        return _no_time_qc(tube, "Time does not advance")
    n_bins = int(np.clip(len(t) // settings.qc.bin_events, 10, 500))
    edges = np.linspace(t.min(), t.max(), n_bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)  # the last event belongs to the last bin
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    bad = _outliers(counts.astype(float), np.sqrt(max(np.median(counts), 1.0)),
                    settings.qc.max_rate_deviation)
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
        bad |= _outliers(means, np.std(x) / np.sqrt(per_bin), settings.qc.max_signal_deviation)
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

def margins(tube, settings):
    """Events below the detector ceiling on scatter and every fluorescence channel.

    Every gate below, and the mixture fit of the populations, sees only these
    events: a clipped value (61 % of a marrow piled on the SSC-A ceiling by a
    high gain) never becomes a population or a density peak. Whether the events
    removed here matter is asked after gating (``cd125gate.ceiling``); only too
    few events left to gate (``gating.min_events``) fail the tube here.
    """
    fraction = settings.qc.margin_fraction
    used = [tube.markers[m] for m in ("FSC-A", "FSC-H", "SSC-A") if m in tube.markers]
    used += [c for c in tube.channels if tube.scales[c].kind != "linear"]
    ranges = {c.name: c.range for c in tube.fcs.channels}
    dims = [dim(tube, c, raw=True, hi=fraction * ranges[c]) for c in used]
    gate = gates.RectangleGate("margins", dims)
    step = add_step(tube, "margins", "time_qc", gate, tube.markers["FSC-A"], tube.markers["SSC-A"],
                    f"below {fraction:.1%} of each detector's range")
    rows = np.flatnonzero(tube.step("time_qc").mask)
    if step.count < settings.gating.min_events <= rows.size:  # the ceiling, not time QC, left too few
        from .ceiling import shares

        raise InputError(tube.fcs.path, f"margins: only {step.count:,} of {rows.size:,} events lie below the "
                                        f"detector ceiling ({shares(tube, rows)} at the ceiling), fewer than "
                                        f"the {settings.gating.min_events:,} needed to gate")


def guarded(tube, step, channel, mask, parent):
    """The ``channel`` values of the events of ``mask``, or an InputError naming ``step``.

    Every proposer below assumes events to place its gate on, with finite
    values that are not all the same; a tube that breaks that (an empty parent
    gate, a constant or non-finite channel) fails with the step and the problem
    instead of an IndexError deep inside numpy.
    """
    x = tube.column(channel)[mask]
    if x.size == 0:
        raise InputError(tube.fcs.path, f"{step}: no events left in '{parent}' to place the gate on")
    if not np.isfinite(x).all():
        raise InputError(tube.fcs.path, f"{step}: {channel} has non-finite values")
    if x.size > 1 and np.ptp(x) == 0:
        raise InputError(tube.fcs.path, f"{step}: {channel} is constant ({x[0]:g}) in '{parent}'")
    return x


# From this many events on, a cut-off is placed on a sample of them (see `thinned`).
STATISTICS_EVENTS = 200_000


def thinned(values, limit=STATISTICS_EVENTS):
    """Every k-th of ``values`` (events in acquisition order), k = size // ``limit``: ``limit`` to twice as many.

    The statistics that place a gate (medians, spreads, density valleys) are
    taken from these: on a 1,000,000-event tube they cost what a
    200,000-event tube's do, with a sampling error far below what moves a
    cut-off. Never fewer than ``limit`` (a 215,000-event tube halved moved a
    debris valley); the gates are still applied to every event.
    """
    step = values.size // limit
    return values[::step] if step > 1 else values


def debris_cut(log_fsc, min_gap=0.45, below=(0.7, 0.35), min_share=0.03):
    """log10 FSC-A of the cut between debris and the smallest cells, or None without debris.

    Density peaks (at least ``min_share`` of the highest) lying ``min_gap``
    decades or more under the highest peak are debris; the others are cells
    (lymphocytes, blasts and granulocytes lie within ~0.3 decades of each
    other, so the valley between agranular cells and granulocytes is never
    taken for the debris valley). The cut is the emptiest place between the
    highest debris peak and the lowest cell peak; without a debris peak, the
    emptiest place ``below`` decades under the lowest cell peak, so a few per
    cent of debris spread thin over a decade is still cut away.
    """
    lo, hi = np.percentile(log_fsc, [0.5, 99.5])
    if hi - lo < min_gap:
        return None
    centres, dens = density.smoothed_histogram(log_fsc, lo, hi)
    tops = density.peaks(dens, min_height=min_share * dens.max())
    if tops.size == 0:
        return None
    highest = centres[tops[np.argmax(dens[tops])]]
    debris = tops[centres[tops] <= highest - min_gap]
    cells = tops[centres[tops] > highest - min_gap]
    if debris.size:
        a, b = debris[-1], cells[0]
        return float(centres[a + int(np.argmin(dens[a:b + 1]))])
    first = centres[cells[0]]
    window = np.flatnonzero((centres >= first - below[0]) & (centres <= first - below[1]))
    if window.size == 0 or dens[window].max() == 0:
        return None  # nothing below the cells
    return float(centres[window[int(np.argmin(dens[window]))]])


def cells(tube, settings):
    """Debris out: FSC-A above the valley under the smallest cells (``debris_cut``)."""
    fsc, ssc = tube.markers["FSC-A"], tube.markers["SSC-A"]
    x = thinned(guarded(tube, "cells", fsc, tube.step("margins").mask, "margins"))
    cut = debris_cut(np.log10(np.clip(x, 10.0, None)))
    if cut is None:
        cut, note = 0.0, "no debris population below the cells: FSC-A >= 0"
    else:
        cut, note = 10.0 ** cut, "FSC-A: least dense place between debris and the smallest cells"
    gate = gates.RectangleGate("cells", [dim(tube, fsc, lo=cut)])
    add_step(tube, "cells", "margins", gate, fsc, ssc, note)


def singlets(tube, settings):
    """FSC-A/FSC-H ratio within a few robust SDs of the median: doublets sit above the diagonal."""
    fsc_a, fsc_h = tube.markers["FSC-A"], tube.markers.get("FSC-H")
    if fsc_h is None:
        gate = gates.RectangleGate("singlets", [dim(tube, fsc_a, lo=float(tube.column(fsc_a).min()))])
        add_step(tube, "singlets", "cells", gate, fsc_a, None, "not applied: no FSC-H channel")
        tube.flags.append("no FSC-H channel: doublets not removed")
        return
    parent = tube.step("cells").mask
    a = guarded(tube, "singlets", fsc_a, parent, "cells")
    h = guarded(tube, "singlets", fsc_h, parent, "cells")
    if not (h > 0).any():
        raise InputError(tube.fcs.path, "singlets: FSC-H is not positive on any cell")
    a, h = thinned(a), thinned(h)
    ratio = a[h > 0] / h[h > 0]
    k = settings.gating.singlet_ratio_mad
    centre, spread = np.median(ratio), density.robust_sd(ratio)
    lo, hi = max(centre - k * spread, 1e-3), centre + k * spread
    top = 2.0 * float(tube.fcs.channels[tube.fcs.channel_names().index(fsc_a)].range)
    vertices = [(0.0, 0.0), (top, top / hi), (top, top / lo)]
    gate = gates.PolygonGate("singlets", [dim(tube, fsc_a), dim(tube, fsc_h)], vertices)
    add_step(tube, "singlets", "cells", gate, fsc_a, fsc_h,
             f"FSC-A/FSC-H between {lo:.2f} and {hi:.2f}")


def viable(tube, settings):
    """Viability dye negative: below the valley between live and dead cells."""
    ch = tube.markers.get("viability")
    if ch is None:
        tube.flags.append("no viability dye in the panel: dead cells not removed")
        return "singlets"
    x = thinned(guarded(tube, "viable", ch, tube.step("singlets").mask, "singlets"))
    lo, hi = np.percentile(x, [0.1, 99.9])
    peak = density.mode(x, lo, hi)
    # A small dead population beside a large live one (eosinophilia) still makes its own peak.
    cut = density.deepest_valley(x, lo, hi, above=peak, min_height=0.0005)
    note = "valley between live and dead cells"
    if cut is None:
        # No separate dead population: stay well above the live cells' spread.
        left = x[x <= peak]
        cut = peak + 6.0 * max(np.sqrt(np.mean((left - peak) ** 2)), 1e-3)
        note = "no dead population found: live peak + 6 SD"
    gate = gates.RectangleGate("viable", [dim(tube, ch, hi=cut)])
    add_step(tube, "viable", "singlets", gate, ch, tube.markers["SSC-A"], note)
    return "viable"


def find_populations(tube, settings, parent):
    """Fit and name the backbone populations of the events of ``parent`` (see ``populations``)."""
    for marker in ("CD45", "SSC-A"):
        guarded(tube, "populations", tube.markers[marker], tube.step(parent).mask, parent)
    pops = populations.fit(tube, tube.step(parent).mask, settings.gating)
    tube.populations = pops
    return pops


def moments(pops, comps, j):
    """(mean, sd, weight) of the mixture of components ``comps`` along feature ``j`` (decades)."""
    w = pops.weights[comps]
    means = pops.means[comps, j]
    var = pops.covariances[comps, j, j]
    total = float(w.sum())
    mean = float((w * means).sum() / total)
    second = float((w * (var + means ** 2)).sum() / total)
    return mean, math.sqrt(max(second - mean ** 2, 1e-12)), total


def boundary(lower, upper, points=400):
    """Where the weighted normal densities of two populations cross, between their means.

    ``lower`` and ``upper`` are (mean, sd, weight) with lower's mean below
    upper's; a small population's boundary moves towards it, which keeps the
    larger one's tail out of its gate. Without a crossing between the means
    (one population dominates everywhere), the midpoint in SD units.
    """
    (m1, s1, w1), (m2, s2, w2) = lower, upper
    x = np.linspace(m1, m2, points)
    diff = (np.log(w1) - np.log(s1) - 0.5 * ((x - m1) / s1) ** 2
            - np.log(w2) + np.log(s2) + 0.5 * ((x - m2) / s2) ** 2)
    crossing = np.flatnonzero(np.diff(np.sign(diff)) != 0)
    if crossing.size:
        return float(x[crossing[0]])
    return float(m1 + (m2 - m1) * s1 / (s1 + s2))


def leukocytes(tube, settings, parent):
    """CD45+: above the dimmest named leukocyte population's CD45 (its mean - 4 SD)."""
    ch = tube.markers["CD45"]
    pops = tube.populations
    j = pops.feature("CD45")
    named = [i for i, label in enumerate(pops.labels) if label in populations.LEUKOCYTES]
    if named:
        edges = [(pops.means[i, j] - 4.0 * math.sqrt(pops.covariances[i, j, j]), pops.labels[i])
                 for i in named]
        low, which = min(edges)
        cut = low / pops.scale[j]
        note = f"CD45 above the dimmest leukocyte population ({which}) - 4 SD"
    else:
        x = guarded(tube, "leukocytes", ch, tube.step(parent).mask, parent)
        cut = float(np.percentile(x, 0.1))
        note = "no leukocyte population named: every event above the 0.1th CD45 percentile"
    gate = gates.RectangleGate("leukocytes", [dim(tube, ch, lo=cut)])
    add_step(tube, "leukocytes", parent, gate, ch, tube.markers["SSC-A"], note)


def ellipse_points(mean, cov, radius, n=12):
    """``n`` points of the ellipse at Mahalanobis ``radius`` around a 2-D Gaussian."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    circle = np.stack([np.cos(angles), np.sin(angles)])
    chol = np.linalg.cholesky(np.asarray(cov) + 1e-9 * np.eye(2))
    return (np.asarray(mean)[:, None] + radius * chol @ circle).T


def hull(points):
    """Vertices of the convex hull of 2-D ``points``, counter-clockwise (monotone chain)."""
    pts = sorted(map(tuple, np.asarray(points, dtype=float)))
    if len(pts) < 3:
        return np.array(pts)

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def clip(polygon, normal, offset):
    """The part of a convex polygon where ``normal . p <= offset`` (Sutherland-Hodgman)."""
    normal = np.asarray(normal, dtype=float)
    polygon = np.asarray(polygon, dtype=float)
    side = polygon @ normal - offset
    out = []
    for i, p in enumerate(polygon):
        j = (i + 1) % len(polygon)
        if side[i] <= 0:
            out.append(p)
        if (side[i] <= 0) != (side[j] <= 0):
            t = side[i] / (side[i] - side[j])
            out.append(p + t * (polygon[j] - p))
    return np.array(out).reshape(-1, 2)


def separating_line(own, other, odds):
    """(normal, offset): the half-plane where ``own`` is ``odds`` times as likely as ``other``.

    ``own`` and ``other`` are (mean, covariance, weight) of two populations in
    a plane; with their pooled covariance the log-likelihood ratio is linear
    (Fisher's discriminant), so the boundary is a straight line that a polygon
    can be clipped by. The weights move the line towards the smaller
    population, and ``odds`` > 1 moves it further into ``own``: what is left
    in the gate is at least ``odds`` times more likely ``own`` than ``other``.
    """
    (m1, s1, w1), (m2, s2, w2) = own, other
    inv = np.linalg.inv((np.asarray(s1) + np.asarray(s2)) / 2.0)
    m1, m2 = np.asarray(m1, dtype=float), np.asarray(m2, dtype=float)
    normal = inv @ (m2 - m1)
    offset = 0.5 * (m2 @ inv @ m2 - m1 @ inv @ m1) + math.log(w1 / w2) - math.log(odds)
    return normal, offset


def plane(pops, comps, axes=("CD45", "SSC")):
    """(mean, covariance, weight) of the mixture of ``comps`` in two features."""
    idx = [pops.feature(a) for a in axes]
    w = pops.weights[comps]
    means = pops.means[np.ix_(comps, idx)]
    mean = (w[:, None] * means).sum(0) / w.sum()
    cov = sum(wi * (pops.covariances[i][np.ix_(idx, idx)] + np.outer(mi - mean, mi - mean))
              for i, wi, mi in zip(comps, w, means)) / w.sum()
    return mean, cov, float(w.sum())


def robust_plane(pops, i, idx, seed=0, limit=2000, least=30):
    """(mean, covariance) of component ``i`` in features ``idx``: robust (MCD) from its own events.

    A mixture component can take in part of a small neighbouring population
    (a few monocytes among the blasts) and stretch its covariance towards it;
    the minimum covariance determinant estimate of the events assigned to it
    follows the component's core instead. With fewer than ``least`` events,
    the mixture's own estimate.
    """
    from .mixture import min_cov_det

    mean, cov = pops.means[i, idx], pops.covariances[i][np.ix_(idx, idx)]
    if pops.x is None:
        return mean, cov
    points = pops.x[pops.assigned == i][:limit][:, idx]
    if len(points) < least or np.ptp(points, axis=0).min() == 0:
        return mean, cov
    return min_cov_det(points, seed=seed)


def population_polygon(pops, comps, radius, axes=("CD45", "SSC")):
    """Convex hull of the components' robust ellipses at ``radius`` in two features (decades)."""
    idx = [pops.feature(a) for a in axes]
    points = [ellipse_points(*robust_plane(pops, i, idx), radius) for i in comps]
    return hull(np.concatenate(points))


def _to_display(pops, polygon):
    """CD45 decades -> display units, log10 SSC -> linear SSC-A."""
    j = pops.feature("CD45")
    return [(float(x / pops.scale[j]), float(10.0 ** y)) for x, y in polygon]


def blast_region_polygon(pops, settings):
    """The blast region in (CD45 decades, log10 SSC-A) and how it was found.

    Around the named blast components (their ellipses at ``region_radius``),
    cut where the lymphocytes' CD45 and the monocytes' and granulocytes' SSC-A
    take over (``boundary``). Without a named blast population: the expected
    CD45-dim / SSC-low zone relative to the lymphocytes, so that the few
    events there are counted (and the checks say no blast population was found).
    """
    blasts = pops.components("blasts")
    if not blasts:
        ref45, refssc = pops.reference_mean("CD45"), pops.reference_mean("SSC")
        levels = settings.levels
        left, right = ref45 + levels["CD45"][0], ref45 - settings.checks.cd45_margin
        top = refssc + levels["SSC"][0]
        polygon = np.array([(left, refssc - 1.5), (right, refssc - 1.5), (right, top), (left, top)])
        return polygon, "no blast population named: the expected CD45-dim/SSC-low zone"
    polygon = population_polygon(pops, blasts, settings.region_radius)
    notes = [f"blast population ({len(blasts)} component(s), {100 * pops.share('blasts'):.1f}% of fitted "
             f"events) at Mahalanobis {settings.region_radius:g}"]
    own = plane(pops, blasts)
    cut_off, spared = [], []
    by_markers = any(m in pops.features for m in settings.checks.blast_markers[:2])
    for name in NEIGHBOURS:
        lines = [separating_line(own, plane(pops, [i]), settings.region_odds) for i in pops.components(name)]
        # One population, judged as one: the mixture splits lymphocytes into T and B cells (HLA-DR),
        # and each line alone may take few blasts while together they take a CD45-brighter clone.
        if name in MARKER_SEPARATED and by_markers and _share_beyond(pops, blasts, lines) > MAX_BLASTS_CUT:
            spared.append(name)  # the blast-marker gate tells them apart; CD45 would cut blasts
            continue
        for line in lines:
            clipped = clip(polygon, *line)
            if len(clipped) < 3:
                continue  # the neighbour would leave nothing: the checks judge what is there
            if clipped.shape != polygon.shape or not np.allclose(clipped, polygon):
                cut_off.append(name)
            polygon = clipped
    if cut_off:
        notes.append(f"cut where blasts are < {settings.region_odds:g}x as likely as "
                     + ", ".join(sorted(set(cut_off))))
    if spared:
        notes.append(f"not cut against {', '.join(sorted(set(spared)))} (it would take over "
                     f"{MAX_BLASTS_CUT:.0%} of the blasts): the blast-marker gate separates them")
    return polygon, "; ".join(notes)


# Neighbours that carry no blast marker (CD34, CD117): where the region's cut against them would
# take many blasts (CD45-bright blasts beside lymphocytes), the blast-marker gate excludes them instead.
MARKER_SEPARATED = ("lymphocytes",)
MAX_BLASTS_CUT = 0.05


def _share_beyond(pops, comps, lines, axes=("CD45", "SSC")):
    """Share of the fitted events of ``comps`` on the far side of any of ``lines`` (normal . p > offset)."""
    if pops.x is None or not lines:
        return 0.0
    points = pops.x[np.isin(pops.assigned, comps)][:, [pops.feature(a) for a in axes]]
    if not len(points):
        return 0.0
    beyond = np.zeros(len(points), dtype=bool)
    for normal, offset in lines:
        beyond |= points @ normal > offset
    return float(np.mean(beyond))


# Populations whose CD45/SSC neighbourhood the blast region must not take.
NEIGHBOURS = ("lymphocytes", "monocytes", "neutrophils", "eosinophils", "debris", "immature_granulocytes",
              "nrbc")


def blast_region(tube, settings):
    """CD45-dim / SSC-low polygon around the named blast population (``blast_region_polygon``)."""
    cd45, ssc = tube.markers["CD45"], tube.markers["SSC-A"]
    pops = tube.populations
    if pops.reference is None:
        raise InputError(tube.fcs.path, "blast_region: no lymphocyte population to place CD45 against")
    polygon, note = blast_region_polygon(pops, settings.gating)
    gate = gates.PolygonGate("blast_region", [dim(tube, cd45), dim(tube, ssc)], _to_display(pops, polygon))
    add_step(tube, "blast_region", "leukocytes", gate, cd45, ssc, note)


# Display-scale bounds wide enough to hold every transformed event.
FAR = 10.0


def lymphocytes(tube, settings):
    """The named lymphocytes (CD45-bright, SSC-low): the internal CD125-negative reference."""
    cd45, ssc = tube.markers["CD45"], tube.markers["SSC-A"]
    pops = tube.populations
    comps = pops.components("lymphocytes")
    polygon = population_polygon(pops, comps, settings.gating.region_radius)
    blasts = pops.components("blasts")
    note = f"lymphocyte population at Mahalanobis {settings.gating.region_radius:g}"
    if blasts:
        odds = settings.gating.region_odds
        clipped = clip(polygon, *separating_line(plane(pops, comps), plane(pops, blasts), odds))
        if len(clipped) >= 3:  # else the blasts sit on the lymphocytes: the CD45 check says so
            polygon = clipped
            note += f"; cut where lymphocytes are < {odds:g}x as likely as blasts"
    gate = gates.PolygonGate("lymphocytes", [dim(tube, cd45), dim(tube, ssc)], _to_display(pops, polygon))
    add_step(tube, "lymphocytes", "leukocytes", gate, cd45, ssc, note)


# Markers basophils lack and blasts often carry: the basophil exclusion is drawn against the
# one of them that best tells this tube's blasts from its basophils.
BASOPHIL_NEGATIVE = ("HLA-DR", "CD34", "CD117")


def separating_marker(pops):
    """The marker of BASOPHIL_NEGATIVE on which the named blasts lie furthest above the basophils.

    Separation in SD units (blast mean - basophil mean over their pooled SD);
    without named basophils, the blasts' height over the lymphocyte reference.
    HLA-DR on ties and when no marker is present on the blasts.
    """
    blasts, basos = pops.components("blasts"), pops.components("basophils")
    best, best_score = "HLA-DR", -np.inf
    for marker in BASOPHIL_NEGATIVE:
        if marker not in pops.features or not blasts:
            continue
        b = moments(pops, blasts, pops.feature(marker))
        if basos:
            s = moments(pops, basos, pops.feature(marker))
            score = (b[0] - s[0]) / math.hypot(b[1], s[1])
        else:
            score = (b[0] - pops.reference_mean(marker)) / b[1]
        if score > best_score + 1e-9:
            best, best_score = marker, score
    return best


def basophil_cuts(pops, marker="HLA-DR"):
    """(CD123 cut, ``marker`` cut, note) in decades: basophils are CD123 >= the first and ``marker`` < the second.

    With a named basophil population: when ``marker`` separates blasts from
    basophils (3 SD apart), the ``marker`` cut lies between them and the CD123
    cut low under the basophils (3 SD), so CD123-high blasts stay in by their
    ``marker``; otherwise the CD123 cut lies where the basophils take over
    from the blasts, at any ``marker``. Without named basophils: above the
    blasts' CD123 (their mean + 4 SD), excluding only ``marker``-negative
    events when the blasts carry ``marker``.
    """
    j123, jm = pops.feature("CD123"), pops.feature(marker)
    blasts, basos = pops.components("blasts"), pops.components("basophils")
    if not blasts:
        # Nothing to tell apart: the population check sends the sample to REVIEW; excluding only
        # named basophils keeps whatever lies in the expected zone countable (not a FAILED).
        if not basos:
            return np.inf, np.inf, "no blast or basophil population named: nothing excluded"
        s123 = moments(pops, basos, j123)
        bright = pops.reference_mean("CD123") + 1.5  # the 'bright' edge: a broad component stays above it
        return (max(s123[0] - 3 * s123[1], bright), np.inf,
                f"no blast population: named basophils' CD123 at any {marker}")
    b123, bm = moments(pops, blasts, j123), moments(pops, blasts, jm)
    if basos:
        s123, sm = moments(pops, basos, j123), moments(pops, basos, jm)
        if bm[0] - 3 * bm[1] > sm[0] + 3 * sm[1]:
            return (min(s123[0] - 3 * s123[1], boundary(b123, s123) if s123[0] > b123[0] else s123[0]),
                    boundary(sm, bm), f"named basophils: CD123 under them, {marker} between them and blasts")
        if s123[0] > b123[0] + 2 * b123[1]:
            return boundary(b123, s123), np.inf, "named basophils: CD123 where they take over from blasts"
        # Blasts as CD123-bright as the basophils and negative like them: no cut on this plane
        # separates them. Keep the blasts; the basophil check judges what is left.
        return (b123[0] + 4 * b123[1], np.inf,
                f"named basophils not separable from blasts on CD123/{marker}: above the blasts' CD123")
    cut = b123[0] + 4 * b123[1]
    if bm[0] - 4 * bm[1] > pops.reference_mean(marker):
        return cut, bm[0] - 4 * bm[1], f"no basophils named: CD123 above the blasts', {marker} below them"
    return cut, np.inf, f"no basophils named: CD123 above the blasts', at any {marker}"


def positive_cut(pops, marker, above):
    """Display units at which ``marker`` counts as positive: ``above`` decades over the lymphocytes' centre."""
    return (pops.reference_mean(marker) + above) / pops.scale[pops.feature(marker)]


def either_positive(tube, name, parent, markers, settings, note):
    """An L-shaped gate on two markers: events positive for either (the double-negative corner out).

    With one of the markers in the panel, a rectangle on it; with neither, no gate (returns False).
    """
    present = [m for m in markers if m in tube.markers][:2]
    if not present:
        return False
    pops, above = tube.populations, settings.gating.checks.positive_above
    cuts = [min(positive_cut(pops, m, above), FAR) for m in present]
    channels = [tube.markers[m] for m in present]
    shown = " or ".join(f"{m} >= {c:.3f}" for m, c in zip(present, cuts))
    if len(present) == 1:
        gate = gates.RectangleGate(name, [dim(tube, channels[0], lo=cuts[0])])
        add_step(tube, name, parent, gate, channels[0], tube.markers["SSC-A"], f"{note}: {shown} (display units)")
        return True
    (cx, cy) = cuts
    vertices = [(-FAR, cy), (cx, cy), (cx, -FAR), (FAR, -FAR), (FAR, FAR), (-FAR, FAR)]
    gate = gates.PolygonGate(name, [dim(tube, channels[0]), dim(tube, channels[1])], vertices)
    add_step(tube, name, parent, gate, channels[0], channels[1], f"{note}: {shown} (display units)")
    return True


def blast_markers(tube, settings):
    """Blast-marker positive: the region's events positive for CD34 or CD117 (a cytometrist's blast gate).

    The first two of ``checks.blast_markers`` the panel has (CD34 and CD117 by default; HLA-DR when
    one of them is missing), each positive ``checks.positive_above`` decades over the lymphocytes.
    Nucleated red cells, monocytes, plasmacytoid dendritic cells, immature granulocytes and
    lymphocytes lack both and stay out; blasts negative for both are left to the checks (REVIEW).
    """
    if not either_positive(tube, "blast_markers", "blast_region", settings.gating.checks.blast_markers, settings,
                           "positive for a blast marker"):
        tube.flags.append("no blast marker in the panel: blasts gated on CD45/SSC only")
        return "blast_region"
    return "blast_markers"


def myeloid(tube, settings, parent):
    """Myeloid blasts: CD117 or CD33 positive, so that CD34+ hematogones (B-cell precursors, CD117- and
    CD33-) and CD117-dim nucleated red cells (CD33-) leave the blast gate."""
    if "CD33" not in tube.markers:  # CD117 alone would drop CD34+ CD117-low blasts
        return parent
    either_positive(tube, "myeloid", parent, ("CD117", "CD33"), settings,
                    "myeloid (hematogones and nucleated red cells out)")
    return "myeloid"


def intact(tube, settings, parent, min_separation=2.5, min_share=0.02):
    """Without a viability dye: the marker-positive blasts minus a lower-FSC population (dead blasts).

    Dead cells shrink (lower FSC-A) and bind every antibody, so without a viability dye the dead
    blasts pass every marker gate. A two-component mixture on log10 FSC-A of the ``parent`` events
    finds them when a lower-FSC population is separated from the rest (``min_separation`` pooled
    SDs, at least ``min_share`` of the events); the cut is where the two become equally likely.
    With a viability dye, or without such a population, no gate.
    """
    if "viability" in tube.markers:
        return parent
    fsc, ssc = tube.markers["FSC-A"], tube.markers["SSC-A"]
    rows = tube.step(parent).mask
    x = np.log10(np.clip(tube.column(fsc)[rows], 10.0, None))
    if x.size < 200:
        return parent
    low = density.lower_peak(x, settings.gating.seed, min_separation=min_separation, min_weight=min_share)
    if low is None:
        return parent
    high = x[x > low[0] + 3 * low[1]]
    cut = boundary(low, (float(np.median(high)), density.robust_sd(high), 1.0 - low[2]))
    gate = gates.RectangleGate("intact", [dim(tube, fsc, lo=10.0 ** cut)])
    add_step(tube, "intact", parent, gate, fsc, ssc,
             f"no viability dye: a lower-FSC population ({100 * low[2]:.1f}%, dead blasts) cut at "
             f"FSC-A {10.0 ** cut:,.0f}")
    return "intact"


def blasts(tube, settings, parent="blast_region"):
    """The ``parent`` gate's events minus basophils (CD123-bright, and negative for HLA-DR, CD34 or CD117).

    Basophils share the blasts' CD45-dim / SSC-low place and carry CD125, so
    leaving them in would raise the CD125+ fraction. The exclusion is drawn on
    CD123 against the marker that best tells this tube's blasts from its
    basophils (``separating_marker``): HLA-DR usually, CD34 or CD117 for
    HLA-DR-negative blasts. CD34 is not required: some blasts lack it.
    """
    cd123, hladr = tube.markers.get("CD123"), tube.markers.get("HLA-DR")
    region = tube.step("blast_region")
    if cd123 is None or hladr is None:
        by_markers = parent != "blast_region"  # basophils lack CD34 and CD117: the marker gate left them out
        if not by_markers:
            tube.flags.append("CD123 or HLA-DR missing: basophils not excluded from blasts")
        note = ("no basophil exclusion (CD123 or HLA-DR missing); basophils lack CD34 and CD117"
                if by_markers else "no backbone refinement")
        gate = gates.RectangleGate("blasts", [dim(tube, tube.markers["CD45"], lo=-FAR)])
        add_step(tube, "blasts", parent, gate, region.x, region.y, note)
        return
    pops = tube.populations
    marker = separating_marker(pops)
    other = tube.markers[marker]
    c123, cm, how = basophil_cuts(pops, marker)
    c123 = FAR if not np.isfinite(c123) else min(c123 / pops.scale[pops.feature("CD123")], FAR)
    cm = FAR if not np.isfinite(cm) else min(cm / pops.scale[pops.feature(marker)], FAR)
    box = gates.RectangleGate("basophils", [dim(tube, other, hi=cm), dim(tube, cd123, lo=c123)])
    add_step(tube, "basophils", parent, box, other, cd123,
             f"CD123-bright, {marker}-negative ({how})", exclusion=True)
    vertices = [(-FAR, -FAR), (FAR, -FAR), (FAR, FAR), (cm, FAR), (cm, c123), (-FAR, c123)]
    gate = gates.PolygonGate("blasts", [dim(tube, other), dim(tube, cd123)], vertices)
    marker_note = f" with {marker} < {cm:.3f}" if cm < FAR else f" at any {marker}"
    add_step(tube, "blasts", parent, gate, other, cd123,
             f"basophils excluded: CD123 >= {c123:.3f}{marker_note} (display units)")


def cd125_positive(tube, threshold):
    """Blasts at or above the CD125 threshold (transformed units)."""
    ch = tube.markers["CD125"]
    gate = gates.RectangleGate("cd125_pos", [dim(tube, ch, lo=threshold.value)])
    add_step(tube, "cd125_pos", "blasts", gate, ch, None, threshold.description)


def in_turn(first, second):
    """``(first(), second())``: the sequential ``side_by_side`` of `find_gates`."""
    return first(), second()


def find_gates(tube, settings, control=None, side_by_side=in_turn):
    """Propose every gate from the tube's own data, in hierarchy order (all but cd125_pos).

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
        control.time_qc = time_qc(control, settings)
        follow(control, tube, finished)

    if control is None:
        stained()
    else:
        side_by_side(stained, control_tube)


def _propose(tube, settings):
    tube.time_qc = time_qc(tube, settings)
    margins(tube, settings)
    cells(tube, settings)
    singlets(tube, settings)
    parent = viable(tube, settings)
    find_populations(tube, settings, parent)
    leukocytes(tube, settings, parent)
    blast_region(tube, settings)
    lymphocytes(tube, settings)
    parent = intact(tube, settings, myeloid(tube, settings, blast_markers(tube, settings)))
    blasts(tube, settings, parent)


def follow(tube, source, finished):
    """Copy the gates of ``source``'s steps to ``tube`` as they are added, until ``finished`` and all copied.

    Steps are only ever appended while the gates are found, so the ones
    copied never change afterwards.
    """
    copied = 0
    while True:
        last = finished.is_set()  # read before the steps: a step added after it is seen next round
        new = source.steps[copied:]
        copy_gates(tube, new)
        copied += len(new)
        if last and not new:
            return
        if not new:
            finished.wait(0.002)


# Display-scale distance within which `transforms.fast_logicle`'s error (< 1e-11)
# could carry an event across a gate boundary; a wide margin over that error.
SETTLE_DELTA = 1e-9


def settle(tube, comp):
    """Make every count FlowKit's: recompute exactly the events close to a gate boundary.

    The tube was transformed with `transforms.fast_logicle`, within 1e-11 of
    FlowKit's logicle. An event can be counted differently from FlowKit only
    if its transformed values lie that close to a gate boundary, so every
    event whose membership changes when its logicle coordinates move by
    SETTLE_DELTA is transformed again with FlowKit's own logicle, and every
    gate is applied again.

    The compensated values of those events are computed again from the raw
    events (compensation solves each event on its own, so a subset gets the
    very numbers of the whole tube) rather than kept for every event.

    :param comp: the Compensation the tube was compensated with
    :return: how many events were recomputed
    """
    from .compensation import compensate
    from .transforms import forward

    near = np.zeros(len(tube.data), dtype=bool)
    for step in tube.steps:
        near |= _near_boundary(step, tube)
    rows = np.flatnonzero(near)
    if rows.size:
        names = tube.fcs.channel_names()
        compensated = compensate(tube.fcs.events[rows], names, comp)
        for j, channel in enumerate(tube.channels):
            if tube.scales[channel].kind == "logicle":
                tube.data[rows, j] = forward(tube.scales[channel], compensated[:, names.index(channel)])
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
    values = [frame[d.id] for d in gate.dimensions]
    if isinstance(gate, gates.PolygonGate):
        # Events within SETTLE_DELTA (far below a grid cell) of an edge lie in the cells along it.
        close = np.flatnonzero(gate.near(*values))
        hit = np.zeros(rows.size, dtype=bool)
        hit[close] = _box_meets_polygon([v[close] for v in values], reach, np.asarray(gate.vertices, dtype=float))
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
        step.parent_count = int(np.count_nonzero(parent))
        done[step.name] = step


def copy_gates(tube, steps):
    """Apply the gates of another tube's ``steps`` to this one, but for that tube's own time QC."""
    for step in steps:
        if step.name == "time_qc" or step.name.startswith("time_anomaly_"):
            continue
        add_step(tube, step.name, step.parent, step.gate, step.x, step.y, step.note, step.exclusion)
