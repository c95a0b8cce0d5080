"""CD125 density (ABC) against the simulated truth: one line per sample of a simulated batch with beads.

    python scripts/density_accuracy.py OUTDIR [--cohort N --events LO,HI] [--seed S]

Simulates the bundled cases (or a cohort) with a calibration bead tube, analyses
every sample with its beads and prints the median ABC of the CD125+ blasts against
the truth (the median true molecules of the truly CD125+ blasts).
"""

import argparse
from dataclasses import replace
from pathlib import Path

from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import default_cases, write_set


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cohort", type=int, help="N cohort cases instead of the bundled ones")
    parser.add_argument("--events", default="20000,60000", help="cohort events per tube: LO,HI")
    args = parser.parse_args()
    truths = _simulate(args)
    settings = load_settings()
    print("sample\tcriterion\tpositive_blasts\tabc_median\ttrue_median\terror\tdensity")
    for name, truth in truths.items():
        files = truth["files"]
        control = files["control"] and args.outdir / files["control"]
        result = analyze_sample(args.outdir / files["stained"], control, settings, sample_id=name,
                                beads=args.outdir / files["beads"], bead_lot=args.outdir / files["bead_lot"]).result
        density = result.density or {}
        measured = (density.get("cd125_pos_blasts") or {}).get("median")
        true = (truth.get("cd125_abc") or {}).get("cd125_pos_blasts_median")
        error = f"{measured / true - 1:+.3f}" if measured and true else "-"
        print(f"{name}\t{result.criterion}\t{result.cd125_pos_events}\t{measured}\t{true}\t{error}\t"
              f"{density.get('status')}{': ' + density['reason'] if density.get('reason') else ''}")


def _simulate(args):
    if args.cohort:
        from cd125gate.simulation.cohort import write_cohort

        lo, hi = (int(v) for v in args.events.split(","))
        return write_cohort(args.outdir, args.cohort, args.seed, (lo, hi), beads=True)
    return write_set(args.outdir, [replace(s, beads=True) for s in default_cases()], args.seed)


if __name__ == "__main__":
    main()
