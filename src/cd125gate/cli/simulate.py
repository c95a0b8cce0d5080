"""`cd125gate simulate OUTDIR`: write simulated stained/control tubes with known truth."""

from __future__ import annotations

import argparse
from dataclasses import replace

from cd125gate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cd125gate.simulation.instrument import FORMATS

    parser.add_argument("outdir", help="folder for the FCS files, truth.json and samples.tsv")
    parser.add_argument("--events", type=int, help="events per tube (default: each case's own)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--cases", help="comma-separated case names (default: all bundled cases)")
    parser.add_argument("--format", choices=sorted(FORMATS), help="override every case's file format")
    parser.add_argument("--beads", action="store_true",
                        help="also a calibration bead tube and its lot file, named in the sheet for every "
                             "case, and each case's true CD125 antibodies bound per cell in truth.json")
    parser.add_argument("--cohort", type=int, metavar="N",
                        help="instead of the bundled cases, N varied specimens drawn from --seed "
                             "(see cd125gate.simulation.cohort)")
    parser.add_argument("--confounders", action="store_true",
                        help="with --cohort: each specimen also carries what real marrows hold beside blasts "
                             "(nucleated red cells, hematogones, a second clone, 20-bit data...; "
                             "cd125gate.simulation.cohort.CONFOUNDERS)")


def run(args: argparse.Namespace) -> int:
    """Write the bundled cases (or a cohort) and print one line of truth per case."""
    if args.cohort is not None:
        return _run_cohort(args)
    if args.confounders:
        raise InputError("--confounders", "only with --cohort N")
    from cd125gate.simulation.simulate import default_cases, write_set

    specs = default_cases()
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        known = {s.name: s for s in specs}
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise InputError("--cases", f"unknown case(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(known)}")
        specs = [known[c] for c in wanted]
    if args.events is not None:
        if args.events < 10:
            raise InputError("--events", f"need at least 10 events per tube, not {args.events}")
        specs = [replace(s, n_events=args.events) for s in specs]
    if args.beads:
        specs = [replace(s, beads=True) for s in specs]
    for name, truth in write_set(args.outdir, specs, args.seed, fmt=args.format).items():
        print(_truth_line(name, truth))
    return 0


def _run_cohort(args):
    if args.cohort < 1:
        raise InputError("--cohort", f"need at least 1 case, not {args.cohort}")
    if args.cases or args.format:
        raise InputError("--cohort", "draws its own cases and formats; drop --cases/--format")
    from cd125gate.simulation.cohort import EVENTS, write_cohort

    events = EVENTS if args.events is None else (args.events, args.events)
    truths = write_cohort(args.outdir, args.cohort, args.seed, events, args.confounders, beads=args.beads)
    for name, truth in truths.items():
        print(f"{_truth_line(name, truth)}\t{'clear' if truth['clear'] else ''}\t{','.join(truth['confounders'])}")
    return 0


def _truth_line(name, truth):
    fraction = truth["true_fraction"]
    shown = f"{fraction:.3f}" if fraction is not None else "-"
    return f"{name}\tblasts={truth['blasts']}\tcd125+={shown}\t{truth['expected_criterion']}"
