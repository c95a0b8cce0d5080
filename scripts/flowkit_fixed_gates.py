#!/usr/bin/env python
"""The yardstick of the whole-process benchmark: a plain FlowKit script with five fixed gates.

Usage: .venv/bin/python scripts/flowkit_fixed_gates.py STAINED CONTROL --out DIR

What a lab would write with FlowKit alone, for the same pair that
``cd125gate analyze`` reads: both tubes read with ``flowkit.Sample``,
compensated with the file's own spillover and logicle-transformed, five
*fixed* gates (cells, singlets, viable, leukocytes, blasts) applied with
``GatingStrategy.gate_sample``, one density PNG (CD45 vs SSC-A of the
leukocytes) and one JSON of the counts. No gate is found from the data: this
is the least work a FlowKit-based job does, which is what makes it a fair
floor to compare the real command against (``scripts/bench_whole.py``).

The channel names are those of ``cd125gate simulate``.
"""

import argparse
import json
import sys
from pathlib import Path

import flowkit as fk
import numpy as np

TOP = 262144.0
FLUOR = {"CD45": "BV510-A", "viability": "BV421-A"}


def strategy():
    """Five fixed gates: scatter on raw values, fluorescence compensated ('FCS') and logicle-transformed."""
    xform = fk.transforms.LogicleTransform(param_t=TOP, param_w=0.5, param_m=4.5, param_a=0.0)
    gs = fk.GatingStrategy()
    gs.add_transform("logicle", xform)

    def fluor(channel, lo=None, hi=None):
        return fk.Dimension(channel, compensation_ref="FCS", transformation_ref="logicle",
                            range_min=None if lo is None else float(xform.apply(np.array([lo]))[0]),
                            range_max=None if hi is None else float(xform.apply(np.array([hi]))[0]))

    def scatter(channel):
        return fk.Dimension(channel, compensation_ref="uncompensated")

    cells = fk.gates.PolygonGate("cells", [scatter("FSC-A"), scatter("SSC-A")],
                                 [(20e3, 0), (TOP, 0), (TOP, TOP), (20e3, TOP)])
    singlets = fk.gates.PolygonGate("singlets", [scatter("FSC-A"), scatter("FSC-H")],
                                    [(0, 0), (TOP, 0.6 * TOP), (TOP, TOP), (0, 20e3)])
    viable = fk.gates.RectangleGate("viable", [fluor(FLUOR["viability"], hi=3000.0)])
    leukocytes = fk.gates.RectangleGate("leukocytes", [fluor(FLUOR["CD45"], lo=300.0)])
    cd45 = xform.apply(np.array([300.0, 1000.0, 8000.0]))
    blasts = fk.gates.PolygonGate("blasts", [fluor(FLUOR["CD45"]), scatter("SSC-A")],
                                  [(cd45[0], 0), (cd45[2], 0), (cd45[2], 60e3), (cd45[0], 60e3)])
    path = ("root",)
    for gate in (cells, singlets, viable, leukocytes, blasts):
        gs.add_gate(gate, path)
        path = path + (gate.gate_name,)
    return gs, xform


def density_png(sample, results, xform, path):
    """CD45 (logicle) against SSC-A of the leukocytes, as a log-colour 2-D histogram."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    members = results.get_gate_membership("leukocytes")
    sample.apply_compensation(sample.metadata["spillover"])
    events = sample.get_events(source="comp")
    names = sample.pnn_labels
    x = xform.apply(events[members, names.index(FLUOR["CD45"])])
    y = events[members, names.index("SSC-A")]
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    ax.hist2d(x, y, bins=200, norm=LogNorm(), cmap="turbo")
    ax.set_xlabel("CD45 (logicle)")
    ax.set_ylabel("SSC-A")
    ax.set_title(f"leukocytes: {int(members.sum()):,} events")
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stained")
    parser.add_argument("control")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gs, xform = strategy()
    counts = {}
    for role, path in (("stained", args.stained), ("control", args.control)):
        sample = fk.Sample(path, ignore_offset_error=True)
        results = gs.gate_sample(sample)
        counts[role] = {row.gate_name: int(row["count"]) for _, row in results.report.iterrows()}
        if role == "stained":
            density_png(sample, results, xform, out / "density.png")
    (out / "counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    print(json.dumps(counts["stained"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
