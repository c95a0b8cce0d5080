#!/usr/bin/env python
"""Accuracy against simulated truth over many new seeds (the test suite runs two).

Usage: .venv/bin/python scripts/accuracy.py [--seeds 8] [--first 1000]
(after `bash scripts/setup.sh --test`: it reuses the cases of the accuracy tests)

Runs every case of tests/test_analysis_accuracy.py (CASES) per seed and prints,
per case, the worst |CD125+ fraction - truth| over tubes with >= 1,000 blasts
and the criteria that differ from the truth's (for truths >= 5 points from
50 %). Then the dim-CD125 cases (positive blasts overlapping the FMO): what the
count alone says and what the criterion became.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_analysis_accuracy import CASES, DIM, run_case  # noqa: E402

from cd125gate.simulate import CaseSpec  # noqa: E402


def analyse(spec, seed):
    with tempfile.TemporaryDirectory() as folder:
        analysis, truth = run_case(Path(folder), spec, seed)
    return analysis.result, truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first", type=int, default=1000, help="first seed")
    args = parser.parse_args()
    seeds = range(args.first, args.first + args.seeds)

    print(f"{'case':16s} {'worst error':>11s}  criteria off truth")
    for spec in CASES:
        worst, wrong = 0.0, []
        for seed in seeds:
            result, truth = analyse(spec, seed)
            if truth["blasts"] >= 1000 and result.cd125_pos_fraction is not None:
                worst = max(worst, abs(result.cd125_pos_fraction - truth["true_fraction"]))
            if abs(truth["true_fraction"] - 0.5) >= 0.05 and result.criterion != truth["expected_criterion"]:
                wrong.append(f"seed {seed}: {result.criterion}")
        print(f"{spec.name:16s} {100 * worst:9.2f} pt  {', '.join(wrong) or '-'}")

    print("\ndim CD125 (positive blasts' median 200, the FMO cut-off ~200):")
    for fraction in (0.3, 0.6, 0.9):
        spec = CaseSpec("dim", cd125_pos_fraction=fraction, **DIM)
        outcomes = [analyse(spec, seed)[0] for seed in seeds]
        counts = ", ".join(f"{100 * r['cd125_pos_fraction']:.0f}% {r['criterion']}" for r in outcomes)
        print(f"  truth {fraction:.0%}: {counts}")


if __name__ == "__main__":
    main()
