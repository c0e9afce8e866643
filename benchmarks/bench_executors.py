"""Candidates per minute on the CPU: the local process pool against in-process, in one run.

Trains the same batch of real candidates (single-edge removals of the preset's starting cell,
each from its own seed, as in one search step) two ways, alternating, ``--repeat`` times:

- in-process, torch using every core (one multi-thread worker): the baseline;
- the local pool, one single-thread worker per core, warm (its workers live for the whole
  search, so a step pays no start-up); the one-off start-up (spawn + import torch + the first
  batch) is printed separately.

Alternating the two evens out a machine that other work shares; the medians decide. It also
checks the metrics: the pool's equal in-process training at one torch thread (a last batch), while
in-process at several threads may differ slightly, as torch's CPU reductions depend on the
thread count.
``autoshrink.executors.factory.CPU_DEFAULT`` comes from this figure.

    python benchmarks/bench_executors.py [--preset demo] [--candidates 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autoshrink.evaluators.factory import build_evaluator
from autoshrink.executors.base import InProcessExecutor, Job
from autoshrink.executors.pool import LocalPoolExecutor, default_workers
from autoshrink.presets import preset
from autoshrink.search_loop import candidate_seed, make_strategy
from machine import count, print_machine, run_main


def timed(executor, evaluator, jobs) -> tuple[float, dict[int, dict[str, float]]]:
    t0 = time.perf_counter()
    out = {i: ev.metrics for i, ev in executor.run(evaluator, jobs)}
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--candidates", type=count, default=4, help="per batch (demo K = 4)")
    parser.add_argument("--repeat", type=count, default=3)
    parser.add_argument("--workers", type=count, default=None, help="default: one per core")
    args = parser.parse_args()
    print_machine()

    config = preset(args.preset)
    evaluator = build_evaluator(config)
    space = make_strategy(config).shrink_space()[: args.candidates]
    jobs = [Job(cell, candidate_seed(config.seed, cell.key)) for _, cell in space]
    workers = args.workers or default_workers()
    threads = torch.get_num_threads()
    n = len(jobs)
    print(f"preset {args.preset}: batches of {n} candidates")
    evaluator.evaluate(jobs[0].genotype, jobs[0].seed)  # warm up this process's kernels

    pool = LocalPoolExecutor(workers)
    inproc, warm = [], []  # seconds per batch
    pool_out, inproc_out = [], []  # metrics per batch
    try:
        t_start, first = timed(pool, evaluator, jobs)
        pool_out.append(first)
        print(f"pool start-up + first batch: {t_start:.1f} s (once per search)")
        for r in range(args.repeat):
            t_in, base = timed(InProcessExecutor(), evaluator, jobs)
            t_pool, out = timed(pool, evaluator, jobs)
            inproc.append(t_in)
            warm.append(t_pool)
            inproc_out.append(base)
            pool_out.append(out)
            print(f"round {r + 1}: in-process {t_in:6.1f} s   pool {t_pool:6.1f} s")
    finally:
        pool.close()

    torch.set_num_threads(1)
    t_one, one = timed(InProcessExecutor(), evaluator, jobs)
    torch.set_num_threads(threads)
    print(f"in-process, 1 thread (identity check): {t_one:.1f} s")

    m_in, m_pool = statistics.median(inproc), statistics.median(warm)
    print(
        f"in-process, 1 process x {threads} threads (baseline): median {m_in:6.1f} s/batch "
        f"(best {min(inproc):.1f}), {60 * n / m_in:5.1f} candidates/min"
    )
    print(
        f"pool, {workers} processes x 1 thread (warm):        median {m_pool:6.1f} s/batch "
        f"(best {min(warm):.1f}), {60 * n / m_pool:5.1f} candidates/min"
    )
    print(f"pool batches identical to each other: {all(r == pool_out[0] for r in pool_out)}")
    print(f"pool identical to in-process at 1 thread: {one == pool_out[0]}")
    print(
        f"in-process at {threads} threads identical to the pool: {inproc_out[0] == pool_out[0]} "
        "(torch's CPU reductions depend on the thread count)"
    )
    winner = "pool" if m_pool < m_in else "inprocess"
    print(f"pool vs in-process: {m_in / m_pool:.2f}x -> faster on this CPU: {winner}")


if __name__ == "__main__":
    run_main(main)
