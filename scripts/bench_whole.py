#!/usr/bin/env python
"""Whole-process speed and memory: what a user pays per sample job, imports and figures included.

Usage:
  .venv/bin/python scripts/bench_whole.py [--events 100000 1000000] [--repeat 5]
  .venv/bin/python scripts/bench_whole.py --events 100000 --batch bundled --batch-pairs 100
  .venv/bin/python scripts/bench_whole.py --events --batch-pairs 100 --analyze-chunk 1 10

For each pair size, one stained + control pair (N events each) is simulated
(cached in ``--data``), then two commands are run on it in alternation,
``--repeat`` times each, as separate processes:

- the real command: ``cd125gate analyze STAINED --control CONTROL --out DIR``
  (result, Gating-ML, counts and both QC figures);
- ``scripts/flowkit_fixed_gates.py``: a plain FlowKit script that reads both
  tubes, applies five fixed gates with ``gate_sample``, draws one density PNG
  and writes a JSON.

It prints, per command, the median wall time and the median peak resident
memory (of that child alone, from ``os.wait4``), and the ratio FlowKit /
cd125gate (above 1: cd125gate is faster). Alternating runs share whatever
load the machine has, so the ratio is fairer than the absolute times.

``--batch bundled`` runs the bundled test_data batch through the Snakemake
workflow on ``--cores``; ``--batch-pairs N`` does the same for N simulated
pairs of ``--batch-events`` events. Each prints the wall time and the wall
time per sample. ``--analyze-chunk 1 10`` runs each batch once per value of the
workflow's ``analyze_chunk`` (samples per analyze job).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="*", default=[100_000, 1_000_000],
                        help="events per tube of each pair to time (none: skip)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "cd125gate-bench-data"),
                        help="folder caching the simulated pairs")
    parser.add_argument("--batch", choices=["bundled"], help="also time the bundled batch through the workflow")
    parser.add_argument("--batch-pairs", type=int, default=0, help="also time N simulated pairs through the workflow")
    parser.add_argument("--batch-events", type=int, default=100_000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--analyze-chunk", type=int, nargs="+", metavar="N",
                        help="samples per analyze job of the workflow runs (config analyze_chunk; default: "
                             "config/config.yaml's); several values: one run each, in turn")
    parser.add_argument("--baseline", metavar="SRC",
                        help="also run `cd125gate analyze` from another source tree's src/ folder (e.g. a "
                             "`git archive` of an older commit), alternating with the others")
    parser.add_argument("--figures", action="store_true",
                        help="instead: time each tube's QC figure (build + PNG) inside one process")
    args = parser.parse_args()
    data = Path(args.data)
    if args.figures:
        for n in args.events:
            figure_times(*simulated_pair(data, n, seed=1), n, args.repeat)
        return
    for n in args.events:
        stained, control = simulated_pair(data, n, seed=1)
        whole_process(stained, control, n, args.repeat, args.baseline)
    for chunk in args.analyze_chunk or [None]:
        if args.batch == "bundled":
            batch(ROOT / "config" / "samples.tsv", args.cores, "bundled batch", chunk)
        if args.batch_pairs:
            sheet = simulated_sheet(data, args.batch_pairs, args.batch_events)
            batch(sheet, args.cores, f"{args.batch_pairs} pairs x {args.batch_events:,} events", chunk)


def simulated_pair(folder, n, seed):
    """Paths of a simulated stained/control pair of ``n`` events each (written once, then reused)."""
    from cd125gate.simulation.simulate import CaseSpec, write_case

    name = f"pair{n}_s{seed}"
    stained, control = folder / f"{name}_stained.fcs", folder / f"{name}_control.fcs"
    if not (stained.exists() and control.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_case(folder, CaseSpec(name, n_events=n, control_events=n, clog=True), seed=seed)
        print(f"simulated 2 x {n:,} events in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return stained, control


def run(command):
    """(wall seconds, peak RSS in MB) of one child process; its output is discarded."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if child.returncode != 0:
        raise SystemExit(f"bench_whole: {' '.join(map(str, command))} exited {child.returncode}:\n{error}")
    return wall, usage.ru_maxrss / 1024


def whole_process(stained, control, n, repeat, baseline=None):
    out = Path(tempfile.mkdtemp(prefix="cd125gate-whole-"))
    commands = {
        "cd125gate analyze": [BIN / "cd125gate", "analyze", stained, "--control", control, "--out", out / "cg"],
        "FlowKit fixed-gate script": [sys.executable, ROOT / "scripts" / "flowkit_fixed_gates.py",
                                      stained, control, "--out", out / "fk"],
    }
    if baseline:
        src = Path(baseline).resolve()
        code = (f"import sys; sys.path.insert(0, {str(src)!r}); from cd125gate.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        commands["baseline analyze"] = [sys.executable, "-c", code, "analyze", stained, "--control", control,
                                        "--out", out / "base"]
    runs = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():  # alternating: both see the same load
            runs[name].append(run(command))
    shutil.rmtree(out, ignore_errors=True)
    medians = {name: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r))
               for name, r in runs.items()}
    print(f"pair {n:,} + {n:,} events, median of {repeat}:")
    for name, (wall, rss) in medians.items():
        print(f"  {name:26s} {wall:6.2f} s  {rss:6.0f} MB   (runs: "
              + ", ".join(f"{w:.2f}" for w, _ in runs[name]) + ")")
    for name in [c for c in commands if c != "FlowKit fixed-gate script"]:
        ratio = medians["FlowKit fixed-gate script"][0] / medians[name][0]
        print(f"  ratio FlowKit / {name}: {ratio:.2f}x ({'faster' if ratio > 1 else 'slower'} than FlowKit)")
    sys.stdout.flush()


def figure_times(stained, control, n, repeat):
    """Median seconds to build and write (PNG) the stained and the control tube's figure."""
    import io

    from cd125gate.analysis.pipeline import analyze_sample
    from cd125gate.figures import plots, raster

    analysis = analyze_sample(stained, control, sample_id=f"pair{n}")
    args = (analysis.stained, analysis.control, analysis.threshold, analysis.result)
    plots._tube_figure(analysis.stained, *args)  # warm up: font cache, colormaps
    print(f"QC figure per tube, {n:,} events, median of {repeat}:")
    for tube in (analysis.stained, analysis.control):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            plots._tube_figure(tube, *args).savefig(io.BytesIO(), format="png", dpi=raster.DPI)
            times.append(time.perf_counter() - start)
        print(f"  {tube.role:8s} {statistics.median(times):6.3f} s   (runs: "
              + ", ".join(f"{t:.3f}" for t in times) + ")")
    sys.stdout.flush()


def simulated_sheet(folder, pairs, n):
    """A sample sheet of ``pairs`` simulated pairs (distinct seeds), written once and reused."""
    rows = ["sample_id\tfcs\tcontrol\tpatient_id\tspecimen\tnotes"]
    for seed in range(1, pairs + 1):
        stained, control = simulated_pair(folder, n, seed)
        rows.append(f"S{seed:04d}\t{stained}\t{control}\t\tbone marrow\t")
    sheet = folder / f"sheet_{pairs}x{n}.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def batch(sheet, cores, label, chunk=None):
    """Wall time of the whole workflow over ``sheet`` on ``cores`` cores, into a fresh folder.

    ``chunk``: samples per analyze job (config ``analyze_chunk``); None: the config file's.
    """
    samples = sum(1 for line in Path(sheet).read_text().splitlines()[1:] if line.strip())
    out = Path(tempfile.mkdtemp(prefix="cd125gate-batch-"))
    command = [BIN / "snakemake", "--cores", str(cores), "--quiet",
               "--config", f"samples={sheet}", f"outdir={out}",
               *([] if chunk is None else [f"analyze_chunk={chunk}"])]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench_whole: workflow on {sheet} exited {done.returncode}:\n{done.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    chunked = "" if chunk is None else f", analyze_chunk={chunk}"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{label} through the workflow on {cores} cores{chunked}: {wall:.1f} s for {samples} samples, "
          f"{wall / samples:.2f} s per sample (load average after: {load})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
