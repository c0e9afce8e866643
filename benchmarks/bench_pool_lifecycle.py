"""The local pool's own time in a search: its start, its first two steps and its close.

A search on the pool trains one cell at step 0 (the complete cell), then K a step, and closes
the pool at its end. This runs that sequence -- step 0, step 1 of the preset's K removals, close
-- on a fresh pool, two ways, alternating, ``--repeat`` times:

- the baseline, as the pool was before 2026-12-08: step 0 starts one worker, step 1 starts the
  others while it waits (the first one idle), and each worker's interpreter tears torch down
  when the pool closes, which the driver waits for;
- the current pool: step 0 starts every worker side by side, and a closed worker ends at once
  (:func:`autoshrink.processes.exit_now`).

Training is the same in both (one torch thread a worker, each candidate from its own seed):
the figures differ by the pool's own time, and the metrics must be identical. Alternating the
two evens out a machine that other work shares; the medians decide, the spread is printed.

    python benchmarks/bench_pool_lifecycle.py [--preset demo] [--epochs 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import autoshrink.executors.pool as pool_module
from autoshrink.evaluators.base import Evaluator
from autoshrink.evaluators.factory import build_evaluator
from autoshrink.executors.base import Job
from autoshrink.executors.pool import LocalPoolExecutor, default_workers
from autoshrink.presets import preset
from autoshrink.search_loop import candidate_seed, make_strategy
from machine import count, print_machine, run_main


class BaselinePool(LocalPoolExecutor):
    """The pool before 2026-12-08: a round starts only the workers it needs."""

    def _missing(self, busy: int, queued: int) -> int:
        return min(self.workers - busy, queued) - len(self._idle)


@contextlib.contextmanager
def baseline_workers() -> Iterator[None]:
    """Workers started meanwhile run the plain loop: the interpreter's teardown at their end."""
    current = pool_module._worker_main
    pool_module._worker_main = pool_module._serve
    try:
        yield
    finally:
        pool_module._worker_main = current


def lifecycle(
    pool: LocalPoolExecutor, evaluator: Evaluator, steps: list[list[Job]]
) -> tuple[float, list[dict[int, dict[str, float]]]]:
    """Wall seconds of ``steps`` on ``pool`` and its close; the metrics of each step."""
    t0 = time.perf_counter()
    try:
        out = [{i: e.metrics for i, e in pool.run(evaluator, jobs)} for jobs in steps]
    finally:
        pool.close()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--epochs", type=count, default=1, help="proxy epochs (demo: 6)")
    parser.add_argument("--repeat", type=count, default=3)
    parser.add_argument("--workers", type=count, default=None, help="default: one per core")
    args = parser.parse_args()
    print_machine()

    config = preset(args.preset, training_epochs=args.epochs)
    evaluator = build_evaluator(config)
    strategy = make_strategy(config)
    cells = [[p.genotype for p in strategy.ask()]]
    cells.append([cell for _, cell in strategy.shrink_space()[: config.k]])  # step 1's size
    steps = [[Job(c, candidate_seed(config.seed, c.key)) for c in step] for step in cells]
    workers = args.workers or default_workers()
    print(
        f"preset {args.preset}, {args.epochs} epoch(s): step 0 of 1 cell, step 1 of "
        f"{len(steps[1])}, then close; {workers} workers"
    )
    base: list[float] = []
    new: list[float] = []
    outs = []
    for r in range(args.repeat):
        for name in ("baseline", "current") if r % 2 == 0 else ("current", "baseline"):
            if name == "baseline":
                with baseline_workers():
                    seconds, out = lifecycle(BaselinePool(workers), evaluator, steps)
                base.append(seconds)
            else:
                seconds, out = lifecycle(LocalPoolExecutor(workers), evaluator, steps)
                new.append(seconds)
            outs.append(out)
            print(f"round {r + 1}: {name:8s} {seconds:6.2f} s")
    m_base, m_new = statistics.median(base), statistics.median(new)
    print(
        f"baseline (one worker at step 0, teardown at close): median {m_base:6.2f} s "
        f"(range {min(base):.2f}-{max(base):.2f})"
    )
    print(
        f"current (whole pool at step 0, no teardown):        median {m_new:6.2f} s "
        f"(range {min(new):.2f}-{max(new):.2f})"
    )
    print(f"saved per search: {m_base - m_new:.2f} s (median); {m_base / m_new:.2f}x")
    print(f"metrics identical in every run: {all(o == outs[0] for o in outs)}")


if __name__ == "__main__":
    run_main(main)
