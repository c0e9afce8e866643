"""Bounded retry of a candidate whose worker died, shared by the pool and Ray executors.

A worker can die under a candidate (killed by the OOM killer, a segfault in a kernel, a lost
node). The executor then runs the candidate again from the same seed, at most
``max_retries`` times, and tells the search through a :data:`RetryListener` so the journal
records every retry. A candidate that still has no result after that becomes a ``"failed"``
evaluation (it scores ``-inf``): the search goes on, and a resume does not train it again.

An exception raised *by* the evaluator is not a dead worker: it is re-raised in the driver,
exactly as the in-process executor would.
"""

from __future__ import annotations

import logging

from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import Job, RetryListener

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2

"""Called as ``listener(position in jobs, retry number (1, 2, ...), reason)`` before a retry."""


def check_retries(max_retries: int) -> int:
    """``max_retries`` when it is an int >= 0, else a :class:`ConfigError`."""
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    return max_retries


class RetryBudget:
    """Counts the lost attempts of each job of one batch and decides: retry, or give up."""

    def __init__(self, jobs: int, max_retries: int, listener: RetryListener | None) -> None:
        self.max_retries = max_retries
        self.lost = [0] * jobs
        self._listener = listener

    def retry(self, index: int, reason: str) -> bool:
        """Record a lost attempt of job ``index``; ``True`` if it should run again."""
        self.lost[index] += 1
        n = self.lost[index]
        if n > self.max_retries:
            log.error("candidate %d: %s; giving up after %d retries", index, reason, n - 1)
            return False
        log.warning("candidate %d: %s; retry %d of %d", index, reason, n, self.max_retries)
        if self._listener is not None:
            self._listener(index, n, reason)
        return True

    def failed(self, evaluator: Evaluator, job: Job, index: int, reason: str) -> Evaluation:
        """The ``"failed"`` evaluation of a job that lost every attempt (cost metrics kept)."""
        try:
            metrics = dict(evaluator.profile(job.genotype))
        except Exception as err:  # a profile that fails too must not end the search
            log.warning("candidate %d: profile failed too: %s", index, err)
            metrics = {}
        detail = {"error": f"{reason} ({self.lost[index]} attempts)", "attempts": self.lost[index]}
        return Evaluation(metrics, "failed", 0.0, detail)
