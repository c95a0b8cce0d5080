"""Micro-benchmark: flowutils' logicle against cd125gate's table-based `fast_logicle`.

Usage: .venv/bin/python scripts/bench_transforms.py [n_values]

`fast_logicle` interpolates from a table that is exact at its nodes and
polishes with one Newton step on the closed-form biexponential. It is several
times faster and within ~1e-11 of flowutils, but not bit-identical; the last
line shows what that alone would cost: a percentile boundary sits on tied
events' values, and a gate re-applied by FlowKit then counts some of them
differently. That is why `boundaries.settle_in_place` recomputes, with flowutils, every
event close to a boundary.
"""

import math
import sys
import time
from pathlib import Path

import numpy as np
from flowutils.transforms import logicle as flowutils_logicle

from cd125gate.analysis.transforms import fast_logicle, fit_logicle
from cd125gate.io.fcs import read_fcs

FCS = Path(__file__).parents[1] / "test_data" / "flowkit_comp" / "test_comp_example.fcs"


def best_of(runs, function):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(n=1_000_000):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 300, n * 3 // 10), np.exp(rng.uniform(0, math.log(262144), n - n * 3 // 10))])
    T, W, M, A = 262144.0, 0.5, 4.5, 0.0
    t_flowutils = best_of(5, lambda: flowutils_logicle(x, None, t=T, m=M, w=W, a=A))
    t_table = best_of(5, lambda: fast_logicle(x, T, W, M, A))
    diff = np.abs(fast_logicle(x, T, W, M, A) - flowutils_logicle(x, None, t=T, m=M, w=W, a=A)).max()
    print(f"{n} values: flowutils {t_flowutils * 1e3:.1f} ms, table {t_table * 1e3:.1f} ms "
          f"({t_flowutils / t_table:.1f}x), max |difference| {diff:.2e}")

    fcs = read_fcs(FCS)
    values = fcs.events[:, fcs.channel_names().index("PE-A")]
    p = fit_logicle(values, T=262144.0)
    exact = flowutils_logicle(values, None, t=p["T"], m=p["M"], w=p["W"], a=p["A"])
    table = fast_logicle(values, p["T"], p["W"], p["M"], p["A"])
    low, high = np.quantile(table, [0.3, 0.9])  # a gate found on the table's values
    in_table = ((table >= low) & (table < high)).sum()
    in_flowkit = ((exact >= low) & (exact < high)).sum()  # the same gate as FlowKit re-applies it
    print(f"{FCS.name} PE-A, gate from the 30th to the 90th percentile: {in_table} events on the table's "
          f"values, {in_flowkit} when FlowKit re-applies it")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
