"""Speed of the simulated NAS-Bench-201 comparison, with its baselines, in one run.

Prints: the time to load the flat tables (target < 1 s) and the peak memory; for each
strategy, the time of R runs x Q queries through the full ask/tell loop (target: all
strategies together < 10 s for R=100, Q=200 on a 2-core box); and the baseline of the same
number of bare evaluator lookups without any strategy, which shows the strategies' overhead.

    python benchmarks/bench_nb201_speed.py [--tables DIR] [--runs 100] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from pathlib import Path

from autoshrink.spaces.nb201 import NUM_CELLS, NB201Cell
from autoshrink.tabular import SearchEvaluator, load_flat_tables
from autoshrink.tabular.comparison import STRATEGIES, run_bench
from machine import print_machine, run_main

DEFAULT_TABLES = Path(__file__).resolve().parents[1].parent / "shared/data/nats-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=DEFAULT_TABLES)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dataset", default="cifar10")
    args = parser.parse_args()
    print_machine()  # imports no torch: the peak RSS below stays the tables'

    t0 = time.perf_counter()
    tables = load_flat_tables(args.tables)
    t_load = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load flat tables: {t_load:.3f} s (target < 1 s); peak RSS so far {rss:.0f} MB")

    n = args.runs * args.queries
    evaluator = SearchEvaluator(tables, dataset=args.dataset)
    rng = random.Random(0)
    cells = [NB201Cell.from_code(rng.randrange(NUM_CELLS)) for _ in range(n)]
    t0 = time.perf_counter()
    for cell in cells:
        evaluator(cell)
    t_base = time.perf_counter() - t0
    print(f"baseline, {n} bare evaluator lookups: {t_base:.3f} s")

    total = 0.0
    for name in STRATEGIES:
        t0 = time.perf_counter()
        run_bench(
            tables, strategies=[name], runs=args.runs, queries=args.queries, dataset=args.dataset
        )
        dt = time.perf_counter() - t0
        total += dt
        print(f"{name:18s} {args.runs} runs x {args.queries} queries: {dt:.3f} s")
    verdict = "ok" if total < 10 else "SLOWER than the 10 s target"
    print(f"all {len(STRATEGIES)} strategies: {total:.3f} s (target < 10 s: {verdict})")


if __name__ == "__main__":
    run_main(main)
