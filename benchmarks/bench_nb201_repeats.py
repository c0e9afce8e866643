"""How often each NAS-Bench-201 strategy proposes a cell it has already seen.

A query of ``autoshrink bench nb201`` is one distinct cell; a repeated proposal is answered
from the run's history for free. Prints, per strategy, the mean (min, max) number of repeats
among its first Q proposals, and the proposals it needs for Q distinct cells, over R seeded
runs -- the baseline being random search, which never repeats (0).

    python benchmarks/bench_nb201_repeats.py [--tables DIR] [--runs 500] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

from autoshrink.strategies.base import Observation, Proposal, Strategy
from autoshrink.tabular import SearchEvaluator, load_flat_tables
from autoshrink.tabular.comparison import STRATEGIES, make_score, run_once
from machine import count, print_machine, run_main

DEFAULT_TABLES = Path(__file__).resolve().parents[1].parent / "shared/data/nats-bench"


class Counting:
    """Passes ask/tell through to ``inner`` and keeps the code of every proposed cell."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.proposed: list[int] = []

    @property
    def best(self) -> Observation | None:
        return self.inner.best

    def ask(self) -> list[Proposal]:
        proposals = self.inner.ask()
        self.proposed += [p.genotype.code for p in proposals]
        return proposals

    def tell(self, observations: Sequence[Observation]) -> None:
        self.inner.tell(observations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=DEFAULT_TABLES)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--runs", type=count, default=500)
    parser.add_argument("--queries", type=count, default=200)
    args = parser.parse_args()
    print_machine()  # imports no torch (this script does not load it)
    evaluate = SearchEvaluator(load_flat_tables(args.tables), dataset=args.dataset, epochs=12)
    score = make_score("accuracy", 0.1)
    q = args.queries
    print(f"{args.dataset}, {args.runs} runs (seeds 0..{args.runs - 1}), {q} distinct queries")
    for name in STRATEGIES:
        repeats, needed = [], []
        for seed in range(args.runs):
            strategy = Counting(STRATEGIES[name](random.Random(seed)))
            run_once(strategy, evaluate, score, q)
            repeats.append(min(q, len(strategy.proposed)) - len(set(strategy.proposed[:q])))
            needed.append(len(strategy.proposed))
        print(
            f"{name:18s} repeats in the first {q} proposals: {statistics.mean(repeats):5.1f} "
            f"(min {min(repeats)}, max {max(repeats)}); proposals for {q} distinct cells: "
            f"{statistics.mean(needed):.1f}"
        )


if __name__ == "__main__":
    run_main(main)
