"""Bounded retry of a candidate whose worker died, shared by the pool and Ray executors.

A worker can die under a candidate (killed by the OOM killer, a segfault in a kernel, a lost
node). The executor then runs the candidate again from the same seed, at most
``max_retries`` times, and tells the search through a :data:`RetryListener` so the journal
records every retry. A candidate that still has no result after that becomes a ``"failed"``
evaluation (it scores ``-inf``): the search goes on, and a resume does not train it again.

An exception raised *by* the evaluator is not a dead worker: it is re-raised in the driver,
exactly as the in-process executor would. Nor is a candidate that ran past the executor's time
limit (``candidate_timeout`` of the pool and Ray), whose worker the executor killed: it is
``"failed"`` at once (:meth:`RetryBudget.timed_out`), as a hang would hang again.

Out of memory is the one evaluator failure worth another try: the memory may be held by a
group trained just before (or by another worker's candidate), or fragmented.
:func:`retry_out_of_memory` (used by the in-process and batched executors, after the batched
evaluator's own retries in halves) empties the CUDA cache and trains such a candidate again,
alone, from the same seed, under the same :class:`RetryBudget` and listener; the pool and Ray
hand it to a worker again, under the budget of their dead workers. All three ask
:meth:`RetryBudget.settled` whether an evaluation runs again.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import DEFAULT_RETRIES, Job, RetryListener, check_retries

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RETRIES", "RetryBudget", "check_retries", "retry_out_of_memory"]


class RetryBudget:
    """Counts the lost attempts of each job of one batch and decides: retry, or give up."""

    def __init__(
        self, jobs: Sequence[Job], max_retries: int, listener: RetryListener | None
    ) -> None:
        self.max_retries = max_retries
        self.lost = [0] * len(jobs)
        self._names = [job.named(i) for i, job in enumerate(jobs)]
        self._listener = listener

    def retry(self, index: int, reason: str) -> bool:
        """Record a lost attempt of job ``index``; ``True`` if it should run again."""
        self.lost[index] += 1
        n, name = self.lost[index], self._names[index]
        if n > self.max_retries:
            log.error("%s: %s; giving up after %d retries", name, reason, n - 1)
            return False
        log.warning("%s: %s; retry %d of %d", name, reason, n, self.max_retries)
        if self._listener is not None:
            self._listener(index, n, reason)
        return True

    def settled(self, index: int, evaluation: Evaluation) -> Evaluation | None:
        """``evaluation`` of job ``index`` as it stands, or ``None`` when it ran out of memory
        and the budget allows another attempt (:meth:`retry`); one out of memory on every
        attempt the budget allowed says those attempts in ``detail.attempts``, as
        :meth:`failed` does."""
        if not out_of_memory(evaluation):
            return evaluation
        if self.retry(index, evaluation.detail["error"]):
            return None
        return replace(evaluation, detail={**evaluation.detail, "attempts": self.lost[index]})

    def failed(self, evaluator: Evaluator, job: Job, index: int, reason: str) -> Evaluation:
        """The ``"failed"`` evaluation of a job that lost every attempt (cost metrics kept)."""
        try:
            metrics = dict(evaluator.profile(job.genotype))
        except Exception as err:  # a profile that fails too must not end the search
            log.warning("%s: profile failed too: %s", self._names[index], err)
            metrics = {}
        n = self.lost[index]
        detail = {"error": f"{reason} ({n} attempt{'s' if n != 1 else ''})", "attempts": n}
        return Evaluation(metrics, "failed", 0.0, detail)

    def timed_out(self, evaluator: Evaluator, job: Job, index: int, seconds: float) -> Evaluation:
        """The ``"failed"`` evaluation of job ``index``, stopped after ``seconds`` (its worker
        killed), which it took: a lost attempt, not run again -- a candidate that hung would
        hang again."""
        self.lost[index] += 1
        log.error("%s: timed out after %g s; not run again", self._names[index], seconds)
        failed = self.failed(evaluator, job, index, f"timed out after {seconds:g} s")
        return replace(failed, seconds=seconds)


#: What the evaluators' ``"failed"`` evaluations say when memory ran out (CUDA or the CPU).
OUT_OF_MEMORY = re.compile(r"out of memory|OutOfMemoryError|can't allocate memory|MemoryError")


def out_of_memory(evaluation: Evaluation) -> bool:
    """Whether ``evaluation`` failed because memory ran out."""
    error = str(evaluation.detail.get("error", ""))
    return evaluation.status == "failed" and OUT_OF_MEMORY.search(error) is not None


def free_cuda_cache() -> None:
    """Return PyTorch's cached CUDA blocks to the device (when torch uses CUDA already)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def retry_out_of_memory(
    evaluator: Evaluator,
    jobs: Sequence[Job],
    results: Iterable[tuple[int, Evaluation]],
    max_retries: int,
    listener: RetryListener | None,
) -> Iterator[tuple[int, Evaluation]]:
    """Pass ``results`` on; a candidate that ran out of memory trains again alone (after the
    CUDA cache is emptied), at most ``max_retries`` times, each retry told to ``listener``."""
    budget = RetryBudget(jobs, max_retries, listener)
    for i, evaluation in results:
        while (settled := budget.settled(i, evaluation)) is None:
            free_cuda_cache()
            evaluation = jobs[i].evaluate_with(evaluator)
        yield i, settled
