"""A local process pool of single-thread workers (the default on the CPU).

Proxy networks are small, so one candidate cannot keep several cores busy: one single-thread
worker per core trains candidates side by side and beats one multi-thread worker (see
benchmarks/README.md). Workers are started with ``spawn`` (safe with torch's thread pools), get
the evaluator once, and live for the whole search.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import Job

_worker_evaluator: Evaluator | None = None  # set once per worker process by _init


def _init(evaluator: Evaluator) -> None:
    global _worker_evaluator
    import torch

    torch.set_num_threads(1)
    _worker_evaluator = evaluator


def _evaluate(job: Job) -> Evaluation:
    assert _worker_evaluator is not None
    return _worker_evaluator.evaluate(job.genotype, job.seed)


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LocalPoolExecutor:
    """Evaluate jobs in ``workers`` single-thread processes; results stream back as they finish."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None
        self._evaluator: Evaluator | None = None

    def _ensure_pool(self, evaluator: Evaluator) -> ProcessPoolExecutor:
        if self._pool is None or self._evaluator is not evaluator:
            self.close()
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init,
                initargs=(evaluator,),
            )
            self._evaluator = evaluator
        return self._pool

    def run(self, evaluator: Evaluator, jobs: Sequence[Job]) -> Iterator[tuple[int, Evaluation]]:
        pool = self._ensure_pool(evaluator)
        futures: dict[Future[Evaluation], int] = {
            pool.submit(_evaluate, j): i for i, j in enumerate(jobs)
        }
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in sorted(finished, key=futures.__getitem__):
                    yield futures[f], f.result()
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._evaluator = None
