"""The executor protocol, and the in-process executor.

An executor takes an evaluator and a batch of jobs and yields ``(index, Evaluation)`` pairs as
candidates finish, in any order, so that the search can journal each result the moment it
exists. Results must not depend on the executor: every job carries its own seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluation, Evaluator, evaluate
from autoshrink.ranges import REQUIREMENTS, is_number

#: ``on_retry(position in jobs, retry number, reason)``: called before a candidate whose worker
#: died, or that ran out of memory, runs again, so the search can journal it.
RetryListener = Callable[[int, int, str], None]
#: Retries of a candidate whose worker died, or that ran out of memory, before it is "failed".
DEFAULT_RETRIES = 2


def check_retries(max_retries: int) -> int:
    """``max_retries`` when it is an int >= 0 (not a bool), else a :class:`ConfigError`."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    return max_retries


def unpicklable(sends: str, evaluator: object, reason: str, plain: str) -> TypeError:
    """The one-line error of an executor that ``sends`` the evaluator somewhere (``"the pool
    executor sends the evaluator to its worker processes"``) when ``evaluator`` does not
    pickle (``reason``); ``plain``: what it must not hold (``"no open file or lock"``)."""
    return TypeError(
        f"{sends}, and {type(evaluator).__qualname__} does not pickle ({reason}); keep what it "
        f"holds plain ({plain})"
    )


#: The executors that can stop a candidate that runs past its time limit (they kill its worker).
TIMEOUT_EXECUTORS = ("pool", "ray")
#: The longest an executor waits for its workers at once under a time limit (then it looks
#: again): the operating system's and Ray's waits overflow at some weeks (a C int of ms).
MAX_WAIT_S = 3600.0


def check_timeout(candidate_timeout: float | None) -> float | None:
    """``candidate_timeout`` when it is ``None`` (no limit) or a finite number of seconds > 0
    (not a bool), else a :class:`ConfigError`."""
    if candidate_timeout is None:
        return None
    if not (is_number(candidate_timeout) and REQUIREMENTS["finite and > 0"](candidate_timeout)):
        raise ConfigError(
            "candidate_timeout must be a finite number of seconds > 0 (or None: no limit), "
            f"got {candidate_timeout!r}"
        )
    return float(candidate_timeout)


def wait_s(deadlines: Iterable[float]) -> float | None:
    """Seconds to wait for workers until the first of ``deadlines`` (``time.monotonic()``
    times) passes, at most :data:`MAX_WAIT_S`; ``None`` where none is finite (no time limit:
    wait for ever)."""
    first = min(deadlines, default=math.inf)
    return None if first == math.inf else min(MAX_WAIT_S, max(0.0, first - time.monotonic()))


class WorkerError(RuntimeError):
    """An evaluator raised inside a pool worker or a Ray task (the message names the candidate
    and holds the worker's traceback)."""


@dataclass(frozen=True)
class Job:
    """One candidate to evaluate: its genotype, the seed its training uses, and ``known``:
    metrics of it the search has already measured (a hard constraint's check, in the main
    process), which an evaluator that takes them does not measure again in its worker
    (:func:`~autoshrink.evaluators.base.evaluate`)."""

    genotype: Any
    seed: int
    known: Mapping[str, float] = field(default_factory=dict)

    def named(self, position: int) -> str:
        """How a message names this job: ``candidate KEY``, its cell's key (what the journal
        records), or ``candidate POSITION`` in its batch for a genotype without one."""
        key = getattr(self.genotype, "key", None)
        return f"candidate {key if isinstance(key, str) else position}"

    def evaluate_with(self, evaluator: Evaluator) -> Evaluation:
        """``evaluator``'s checked evaluation of this job (:func:`evaluate`, ``known`` handed
        over first): what every executor runs for a job, wherever it runs it."""
        return evaluate(evaluator, self.genotype, self.seed, self.known)


class Executor(Protocol):
    """Runs a step's candidates through an evaluator: in process, in worker processes, on a
    GPU together, or on a Ray cluster."""

    def run(
        self, evaluator: Evaluator, jobs: Sequence[Job], on_retry: RetryListener | None = None
    ) -> Iterator[tuple[int, Evaluation]]:
        """Evaluate ``jobs``; yield ``(position in jobs, evaluation)`` as each finishes.

        Executors that rerun a candidate whose worker died call ``on_retry`` first; the others
        never retry and ignore it.
        """
        ...

    def close(self) -> None:
        """Release workers (a no-op for in-process execution)."""
        ...


class InProcessExecutor:
    """Evaluate jobs one after another in this process; a candidate that runs out of memory
    trains again, at most ``max_retries`` times (see
    :func:`~autoshrink.executors.retries.retry_out_of_memory`)."""

    def __init__(self, max_retries: int = DEFAULT_RETRIES) -> None:
        self.max_retries = check_retries(max_retries)

    def run(
        self, evaluator: Evaluator, jobs: Sequence[Job], on_retry: RetryListener | None = None
    ) -> Iterator[tuple[int, Evaluation]]:
        """Evaluate ``jobs`` one by one in this process, yielding ``(job index, evaluation)``
        as each ends; a job that ran out of memory runs again (``on_retry`` is told)."""
        from autoshrink.executors.retries import retry_out_of_memory  # it imports this module

        results = ((i, job.evaluate_with(evaluator)) for i, job in enumerate(jobs))
        yield from retry_out_of_memory(evaluator, jobs, results, self.max_retries, on_retry)

    def close(self) -> None:
        """Nothing to release: no workers."""
