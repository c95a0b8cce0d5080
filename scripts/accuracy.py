#!/usr/bin/env python
"""Accuracy against simulated truth: the bundled-style cases over many seeds, or a varied cohort.

Usage: .venv/bin/python scripts/accuracy.py [--seeds 8] [--first 1000]
       .venv/bin/python scripts/accuracy.py --cohort 250 --seed 1 [--events 20000 300000] [--list]
                                            [--confounders]
(after `bash scripts/setup.sh --test`: the first form reuses the cases of the accuracy tests)

Without --cohort: runs every case of tests/test_analysis_accuracy.py (CASES) per seed and prints,
per case, the worst |CD125+ fraction - truth| over tubes with >= 1,000 blasts and the criteria that
differ from the truth's (for truths >= 5 points from 50 %). Then the dim-CD125 cases (positive
blasts overlapping the FMO): what the count alone says and what the criterion became.

With --cohort N: the robustness benchmark over N specimens of `cd125gate.simulation.cohort` drawn from --seed
(whose make-up varies as screening marrows and bloods do). Prints one summary line: cases,
confident-wrong calls (MET/NOT_MET on the wrong side of 50 %, or on a case with < 200 true blasts),
REVIEW rate on clear cases (>= 10 points from 50 %, >= 500 blasts, CD125 not dim), FAILED on valid
cases, and the mean and worst |fraction - truth| on called clear cases. --list prints every case.
With --confounders the cohort carries what real marrows hold beside blasts (`cohort.CONFOUNDERS`),
and a table per confounder follows the summary (a case counts under each confounder it carries).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path


def analyse(spec, seed):
    from test_analysis_accuracy import run_case

    with tempfile.TemporaryDirectory() as folder:
        analysis, truth = run_case(Path(folder), spec, seed)
    return analysis.result, truth


def run_cohort_case(spec, seed, settings):
    """(result, truth) of one cohort case, through files in a temporary folder."""
    from cd125gate.analysis.pipeline import analyze_sample
    from cd125gate.simulation.cohort import annotate
    from cd125gate.simulation.simulate import write_case

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        truth = annotate(write_case(folder, spec, seed), spec)
        control = truth["files"]["control"]
        analysis = analyze_sample(folder / truth["files"]["stained"],
                                  folder / control if control else None, settings, sample_id=spec.name)
    return analysis.result, truth


def verdict(result, truth):
    """'wrong' (a confident wrong call), 'failed', 'review' or 'called' for one case."""
    call = result.criterion
    if call == "FAILED":
        return "failed"
    if call == "REVIEW":
        return "review"
    return "called" if call in truth["acceptable"] else "wrong"


def summarise(rows):
    """The benchmark's figures from (result, truth) pairs."""
    verdicts = [verdict(r, t) for r, t in rows]
    clear = [(r, t, v) for (r, t), v in zip(rows, verdicts) if t["clear"]]
    errors = [abs(r.cd125_pos_fraction - t["true_fraction"]) for r, t, v in clear if v in ("called", "wrong")]
    return {
        "cases": len(rows),
        "confident_wrong": verdicts.count("wrong"),
        "clear": len(clear),
        "clear_review": sum(v == "review" for _, _, v in clear),
        "failed_valid": verdicts.count("failed"),
        "mean_error": 100 * sum(errors) / len(errors) if errors else float("nan"),
        "worst_error": 100 * max(errors) if errors else float("nan"),
        "called_clear": len(errors),
    }


def summary_line(seed, s):
    rate = 100 * s["clear_review"] / s["clear"] if s["clear"] else 0.0
    return (f"seed {seed}: cases {s['cases']}, confident-wrong {s['confident_wrong']}, "
            f"REVIEW on clear {s['clear_review']}/{s['clear']} ({rate:.1f}%), "
            f"FAILED on valid {s['failed_valid']}, error on called clear cases ({s['called_clear']}) "
            f"mean {s['mean_error']:.2f} pt, worst {s['worst_error']:.2f} pt")


def case_line(result, truth):
    fraction = result.cd125_pos_fraction
    shown = f"{100 * fraction:5.1f}%" if fraction is not None else "    -"
    tf = truth["true_fraction"]
    reasons = "; ".join(result.reasons)[:160]
    return (f"{truth['name']} {verdict(result, truth):6s} truth {truth['expected_criterion']:7s} "
            f"{100 * tf if tf is not None else float('nan'):5.1f}% of {truth['blasts']:6d} "
            f"{'clear' if truth['clear'] else '     '} got {result.criterion:7s} {shown} "
            f"of {result.blast_events} [{','.join(truth['confounders'])}] | {reasons}")


def confounder_table(rows):
    """Markdown table: per confounder, cases, confident-wrong, REVIEW on clear, FAILED, errors."""
    from cd125gate.simulation.cohort import CONFOUNDERS

    lines = ["| confounder | cases | confident-wrong | REVIEW on clear | FAILED | mean / worst error (pt) |",
             "|---|---|---|---|---|---|"]
    for name in ("none", *CONFOUNDERS):
        own = [(r, t) for r, t in rows if (name in t["confounders"] if name != "none" else not t["confounders"])]
        if not own:
            continue
        s = summarise(own)
        lines.append(f"| {name} | {s['cases']} | {s['confident_wrong']} | {s['clear_review']}/{s['clear']} | "
                     f"{s['failed_valid']} | {s['mean_error']:.2f} / {s['worst_error']:.2f} |")
    return "\n".join(lines)


def cohort(args):
    from cd125gate.settings import load_settings
    from cd125gate.simulation.cohort import cohort_specs

    settings = load_settings()
    start = time.perf_counter()
    rows = []
    for spec in cohort_specs(args.cohort, args.seed, tuple(args.events), args.confounders):
        result, truth = run_cohort_case(spec, args.seed, settings)
        rows.append((result, truth))
        if args.list:
            print(case_line(result, truth), flush=True)
    print(summary_line(args.seed, summarise(rows)) + f" [{time.perf_counter() - start:.0f} s]")
    if args.confounders:
        print(confounder_table(rows))


def bundled(args):
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from cd125gate.simulation.simulate import CaseSpec
    from test_analysis_accuracy import CASES, DIM

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first", type=int, default=1000, help="first seed")
    parser.add_argument("--cohort", type=int, metavar="N", help="robustness benchmark over N cohort cases")
    parser.add_argument("--seed", type=int, default=1, help="the cohort's seed")
    parser.add_argument("--events", type=int, nargs=2, default=(20_000, 300_000), metavar=("MIN", "MAX"),
                        help="the cohort's event-count range")
    parser.add_argument("--list", action="store_true", help="print every cohort case")
    parser.add_argument("--confounders", action="store_true", help="the cohort with real-marrow confounders")
    args = parser.parse_args()
    cohort(args) if args.cohort else bundled(args)


if __name__ == "__main__":
    main()
