#!/usr/bin/env python
"""Speed and memory of one sample: a stained + control pair of N events each, in one process.

Usage: .venv/bin/python scripts/bench.py [--events 1000000] [--repeat 3] [--outputs]

Imports are done before timing (the workflow pays them once per job; see
docs/workflow.md). Prints the time per stage of the best run, the total, and
the process's peak resident memory. Targets: about a second for read to
result and gates at 1,000,000 events per tube; a figure panel well under a
second.

What a user pays per job (process start, imports, figures) is measured by
``scripts/bench_whole.py``, against a plain FlowKit fixed-gate script
(``scripts/flowkit_fixed_gates.py``); ``scripts/import_costs.py`` breaks the
imports down.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, choices=(1, 2),
                        help="threads of analyze_sample (2: the tubes side by side)")
    parser.add_argument("--outputs", action="store_true", help="also time writing gates and figures")
    args = parser.parse_args()

    import matplotlib  # noqa: F401  (imports outside the timing)

    from cd125gate import cli
    from cd125gate.analysis.pipeline import analyze_sample
    from cd125gate.io import gatingml
    from cd125gate.results.outputs import write_outputs
    from cd125gate.settings import load_settings
    from cd125gate.simulation.simulate import CaseSpec, write_case

    # As every analysing command does (an older tree, run for comparison, may not have it).
    getattr(cli, "keep_freed_memory", lambda: None)()
    folder = Path(tempfile.mkdtemp(prefix="cd125gate-bench-"))
    start = time.perf_counter()
    truth = write_case(folder, CaseSpec("bench", n_events=args.events, clog=True), seed=1)
    print(f"simulated 2 x {args.events:,} events in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    stained, control = folder / truth["files"]["stained"], folder / truth["files"]["control"]
    rss_before = _peak_rss_mb()

    settings = load_settings()
    best = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        analysis = analyze_sample(stained, control, settings, sample_id="bench",
                                  threads=args.threads)
        gates = gatingml.export(analysis.stained, analysis.compensation)
        total = time.perf_counter() - start
        if best is None or total < best[0]:
            best = (total, dict(analysis.timings), len(gates))
    total, timings, _ = best
    print(f"events per tube: {args.events:,}; criterion {analysis.result.criterion}, "
          f"CD125+ {analysis.result.cd125_pos_fraction:.4f} (truth {truth['true_fraction']:.4f})")
    for stage, seconds in timings.items():
        print(f"  {stage:22s} {seconds:7.3f} s")
    print(f"  {'gating-ml export':22s} {total - sum(timings.values()):7.3f} s")
    print(f"read to result and gates: {total:.3f} s (best of {args.repeat})")
    if args.outputs:
        for name, seconds in panel_timings(analysis).items():
            print(f"  figure panel {name:14s} {seconds:7.3f} s")
        start = time.perf_counter()
        write_outputs(analysis, folder / "out")
        print(f"write_outputs (gates, counts, figures, result): {time.perf_counter() - start:.3f} s")
    print(f"peak RSS: {_peak_rss_mb():.0f} MB (after imports and simulation: {rss_before:.0f} MB)")


def panel_timings(analysis):
    """Seconds to build and render (Agg) each panel of the stained tube's figure alone."""
    from matplotlib.figure import Figure

    from cd125gate.figures import plots, qc_panels, raster, tube_view

    stained, control, result = analysis.stained, analysis.control, analysis.result
    contexts = [tube_view.TubeView(t) for t in (stained, control) if t is not None]
    drawers = [draw for _, draw in plots._panels(stained)]
    drawers.append(lambda fig, spec, ctx: qc_panels.cd125_panel(
        fig, spec, ctx, contexts, analysis.threshold, result))
    timings = {}
    for i, draw in enumerate(drawers, 1):
        fig = Figure(figsize=plots.PANEL_INCHES, dpi=raster.DPI)
        start = time.perf_counter()
        draw(fig, fig.add_gridspec(1, 1)[0, 0], contexts[0])
        fig.canvas.draw()
        timings[str(i)] = time.perf_counter() - start
    return timings


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
