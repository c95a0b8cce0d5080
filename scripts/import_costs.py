#!/usr/bin/env python
"""What a per-sample process pays for imports, and what the heavy packages it avoids would cost.

Usage: .venv/bin/python scripts/import_costs.py [--repeat 5] [STAINED CONTROL]

1. ``python -X importtime`` of the real ``cd125gate analyze`` on a pair (the
   bundled high_fmo pair by default): the import time of the run, summed per
   top-level package (each module's own time, so a package pulled in by
   another is shown under its own name: bokeh, not flowkit).
2. The extra cost of each heavy import in a fresh process that has already
   imported numpy (median of ``--repeat`` processes).

The per-sample path imports none of flowkit, scikit-learn, scipy.stats or
pandas (tests/test_analyze.py checks it); part 2 shows what each would cost.
"""

import argparse
import collections
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = {
    "flowkit": "import flowkit",
    "scipy.stats": "import scipy.stats",
    "sklearn.mixture": "import sklearn.mixture",
    "pandas": "import pandas",
    "matplotlib (figure + Agg)": "import matplotlib.figure, matplotlib.backends.backend_agg",
    "jsonschema": "import jsonschema",
    "yaml": "import yaml",
    "flowutils": "import flowutils.compensate, flowutils.transforms, flowutils.gating",
}

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stained", nargs="?", default=str(ROOT / "test_data" / "high_fmo_stained.fcs"))
    parser.add_argument("control", nargs="?", default=str(ROOT / "test_data" / "high_fmo_control.fcs"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    per_package, total = analyze_importtime(args.stained, args.control)
    print(f"1. imports of `cd125gate analyze` (one run, -X importtime): {total:.2f} s in all")
    for name, seconds in per_package.most_common(12):
        print(f"   {name:22s} {seconds:6.3f} s")

    print(f"2. extra seconds of each import after numpy (fresh process, median of {args.repeat}):")
    base = median_seconds("pass", args.repeat)
    print(f"   {'numpy itself':44s} {median_seconds('', args.repeat, after_numpy=False) - base:6.3f} s")
    for name, statement in HEAVY.items():
        print(f"   {name:44s} {median_seconds(statement, args.repeat):6.3f} s")


def analyze_importtime(stained, control):
    """Seconds of import per top-level package in one real run, and their sum."""
    with tempfile.TemporaryDirectory() as out:
        code = ("import sys; from cd125gate.cli import main; "
                f"sys.exit(main(['analyze', {stained!r}, '--control', {control!r}, '--out', {out!r}]))")
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"import_costs: the analyze run failed:\n{done.stderr[-2000:]}")
    per_package = collections.Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            per_package[match[2].split(".")[0]] += int(match[1]) / 1e6
    return per_package, sum(per_package.values())


def median_seconds(statement, repeat, after_numpy=True):
    """Median wall seconds of ``statement`` in fresh processes (numpy imported first, untimed)."""
    code = ("import time; " + ("import numpy; " if after_numpy else "") + "t = time.perf_counter(); "
            + (statement or "import numpy") + "; print(time.perf_counter() - t)")
    times = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"import_costs: {statement!r} failed:\n{done.stderr[-2000:]}")
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


if __name__ == "__main__":
    main()
