"""Regenerate the simulated tubes of test_data/ and the simulator figure (deterministic).

Usage:
    python scripts/make_test_data.py [OUTDIR]        # default: test_data/ beside this script
    python scripts/make_test_data.py --figure PNG    # docs/img/simulated_tube.png

Writes every case of `cd125gate.simulation.simulate.default_cases()`, `truth.json` and the
sample sheet `samples.tsv`. tests/test_simulate.py regenerates into a temporary
folder and checks that the committed files are byte-identical.
"""

import sys
from pathlib import Path

import numpy as np

from cd125gate.simulation.simulate import CaseSpec, default_cases, simulate_case, write_set

SEED = 20250101
ROOT = Path(__file__).resolve().parents[1]
COLOURS = {
    "blast_cd125pos": "#d62728", "blast_cd125neg": "#1f77b4", "lymphocyte": "#2ca02c",
    "monocyte": "#9467bd", "neutrophil": "#8c564b", "eosinophil": "#ff7f0e", "basophil": "#e377c2",
    "dead": "#7f7f7f", "debris": "#bcbd22", "doublet": "#17becf", "ceiling": "#000000",
}


def make_test_data(outdir):
    truths = write_set(outdir, default_cases(), SEED)
    for name, truth in truths.items():
        print(f"{name}: {truth['blasts']} blasts, true fraction {truth['true_fraction']}, "
              f"{truth['expected_criterion']}")


def make_figure(path):
    """FSC-A/SSC-A, FSC-A/FSC-H, CD45/SSC-A and CD125 stained vs FMO on blasts, logicle display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from flowkit import transforms

    stained, control, truth = simulate_case(CaseSpec("figure", n_events=30000), SEED)
    logicle = transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0)
    fig, axes = plt.subplots(2, 2, figsize=(11, 9.5))
    scatter = [
        (axes[0, 0], stained.column("FSC-A"), stained.column("SSC-A"), "FSC-A", "SSC-A"),
        (axes[0, 1], stained.column("FSC-A"), stained.column("FSC-H"), "FSC-A", "FSC-H"),
        (axes[1, 0], logicle.apply(stained.compensated("BV510-A")), stained.column("SSC-A"),
         "CD45 BV510-A (logicle)", "SSC-A"),
    ]
    for ax, x, y, xlabel, ylabel in scatter:
        for label, colour in COLOURS.items():
            m = stained.labels == label
            ax.scatter(x[m], y[m], s=1, c=colour, alpha=0.5, label=label, rasterized=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[0, 0].legend(markerscale=8, fontsize=7, loc="upper left", ncol=2)
    _cd125_histogram(axes[1, 1], stained, control, logicle)
    fig.suptitle(f"Simulated marrow tube (30,000 events, {truth['true_fraction']:.0%} CD125+ blasts)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _cd125_histogram(ax, stained, control, logicle):
    bins = np.linspace(-0.05, 0.75, 120)
    cd125 = logicle.apply(stained.compensated("PE-A"))
    fmo = logicle.apply(control.compensated("PE-A"))
    blasts = stained.truth_blasts()
    for label, colour in (("blast_cd125pos", "#d62728"), ("blast_cd125neg", "#1f77b4")):
        ax.hist(cd125[blasts & (stained.labels == label)], bins, color=colour, alpha=0.6,
                label=f"stained, truly {label[-3:]}")
    ax.hist(fmo[control.truth_blasts()], bins, histtype="step", color="k", lw=1.5, label="FMO blasts")
    cut = np.percentile(control.compensated("PE-A")[control.truth_blasts()], 99.5)
    ax.axvline(logicle.apply(np.array([[cut]]))[0, 0], color="k", ls="--", label="FMO 99.5th pct")
    ax.set_xlabel("CD125 PE-A (logicle)")
    ax.set_ylabel("blasts")
    ax.legend(fontsize=8)


def main(argv):
    if argv[:1] == ["--figure"]:
        make_figure(Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "img" / "simulated_tube.png")
    else:
        make_test_data(Path(argv[0]) if argv else ROOT / "test_data")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
