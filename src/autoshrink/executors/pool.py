"""A local pool of single-thread worker processes (the default on the CPU).

Proxy networks are small, so one candidate cannot keep several cores busy: one single-thread
worker per core trains candidates side by side and beats one multi-thread process (measured
by ``benchmarks/bench_executors.py``, figures in benchmarks/README.md). Workers are started with
``spawn`` (safe with torch's thread pools), get each evaluator they run once (a search that
alternates a few, as progressive screening does, keeps its workers) and live for the whole
search (all of them start with the first batch, even one smaller than the pool); a closed
worker ends without the interpreter's teardown.

Each worker owns a pipe, so the driver always knows which candidate a worker holds. When a
worker dies (``kill -9``, the OOM killer, a crash in a kernel), only that candidate is lost:
the worker is replaced, the candidate runs again from the same seed (at most ``max_retries``
times, each retry reported to the search's journal), and the other workers carry on. A
candidate whose evaluation failed for lack of memory runs again the same way. A candidate that
runs past ``candidate_timeout`` has its worker killed (SIGKILL) and replaced, and is
``"failed"``, not run again. This is why the pool manages its processes itself instead of
using ``concurrent.futures``, whose pool breaks as a whole on one death and cannot say which
candidate caused it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

from autoshrink.errors import AutoshrinkError, ConfigError
from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import Job, WorkerError, check_timeout, unpicklable, wait_s
from autoshrink.executors.retries import (
    DEFAULT_RETRIES,
    RetryBudget,
    RetryListener,
    check_retries,
)
from autoshrink.processes import die_with_parent, exit_now

log = logging.getLogger(__name__)

_EXIT_WAIT_S = 10.0  # how long a worker may take to exit once its pipe has closed
_KEPT_EVALUATORS = 4  # evaluators a worker holds at once (a search alternates a few)


def driver_logging() -> tuple[int, str | None]:
    """How this process logs, for a worker to log the same: the level of the package's loggers
    and the format of the root logger's first handler (``None``: logging is not set up)."""
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else None
    fmt = formatter._fmt if formatter is not None else None
    return logging.getLogger("autoshrink").getEffectiveLevel(), fmt


def _serve(conn: Connection, logging_as: tuple[int, str | None]) -> None:
    """A worker's main loop until ``None`` or EOF: ``("load", slot, evaluator, live slots)``
    keeps an evaluator (answered ``"ready"``), ``("job", index, job, slot)`` evaluates a job.
    It logs as the driver does (``logging_as``: :func:`driver_logging`'s). Ctrl-C is the
    driver's to handle (a terminal sends it to the workers too): the driver stops between
    journal records and closes the pool. A driver killed outright (``kill -9``) takes the
    worker with it (:func:`~autoshrink.processes.die_with_parent`)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    level, fmt = logging_as
    if fmt is not None:
        logging.basicConfig(level=logging.WARNING, format=fmt)
    logging.getLogger("autoshrink").setLevel(level)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    # a worker shows no bars, but tqdm makes its lock on the first one, even a disabled one: a
    # multiprocessing lock by default, whose semaphores a worker killed busy (the driver was
    # stopped) leaves to the resource tracker, which warns of them after the stop message
    tqdm.set_lock(threading.RLock())
    evaluators: dict[int, Evaluator] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the driver has gone (a reset pipe: it was interrupted)
            return
        if message is None:
            return
        if message[0] == "load":
            _, slot, evaluator, live = message
            evaluators = {s: e for s, e in evaluators.items() if s in live}
            evaluators[slot] = evaluator
            if not _reply(conn, "ready"):
                return
            continue
        _, index, job, slot = message
        try:
            reply: tuple[str, Any] = ("ok", job.evaluate_with(evaluators[slot]))
        except AutoshrinkError as err:  # bad input (a latency table of another machine, ...):
            reply = ("raise", err) if _travels(err) else ("error", traceback.format_exc())
        except Exception:  # sent to the driver, which raises it as the in-process run would
            reply = ("error", traceback.format_exc())
        if not _reply(conn, (index, reply)):
            return


def _worker_main(conn: Connection, logging_as: tuple[int, str | None]) -> None:
    """A worker process: :func:`_serve` until the driver closes the pool, then the end without
    the interpreter's teardown (:func:`~autoshrink.processes.exit_now`): torch's took each
    worker about half a second, which the driver waited for at the end of every search."""
    _serve(conn, logging_as)
    exit_now(0)


def _travels(err: BaseException) -> bool:
    """Whether ``err`` comes out of the pipe as itself (the driver then raises it, one line, as
    an in-process run does); one that cannot is sent as its traceback."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # an attribute that does not pickle, an __init__ of other arguments
        return False
    return True


def _reply(conn: Connection, message: object) -> bool:
    """Send ``message`` to the driver; False when the driver has gone."""
    try:
        conn.send(message)
    except OSError:  # a broken or reset pipe
        return False
    return True


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    """``workers`` when it is an int >= 1 (not a bool), else a :class:`ConfigError` (a pool of
    none would wait for ever on its first batch)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    job: int | None = None
    slots: set[int] = field(default_factory=set)  # the evaluators it holds
    deadline: float = math.inf  # when its job runs past the candidate timeout (monotonic)


class WorkerStartError(WorkerError, AutoshrinkError):
    """Pool workers kept dying while they started (loaded the evaluator): one line, exit 2."""


class LocalPoolExecutor:
    """Evaluate jobs in ``workers`` single-thread processes; results stream back as they finish.

    Args:
        workers: processes, an int >= 1 (default: one per usable core).
        max_retries: how many times a candidate whose worker died is run again before it is
            reported as ``"failed"``.
        candidate_timeout: seconds a candidate may train (``None``: no limit); a worker whose
            candidate runs longer is killed and replaced, and the candidate is ``"failed"``
            ("timed out after N s"), not run again.
    """

    #: The torch threads each candidate trains on: a worker's one.
    candidate_threads = 1

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_retries: int = DEFAULT_RETRIES,
        candidate_timeout: float | None = None,
    ) -> None:
        self.workers = default_workers() if workers is None else check_workers(workers)
        self.max_retries = check_retries(max_retries)
        self.candidate_timeout = check_timeout(candidate_timeout)
        self._idle: list[_Worker] = []
        self._slots: list[tuple[int, Evaluator]] = []  # the evaluators workers hold, newest last
        self._next_slot = 0
        self._start_failures = 0  # starts in a row in which a worker died

    # ------------------------------------------------------------------ workers
    def _start(self, slot: int, evaluator: Evaluator, n: int) -> None:
        """Start ``n`` workers side by side and add them to the idle ones once they are ready.

        The evaluator goes through each worker's pipe, not the start-up arguments, and each
        worker confirms it loaded it, so a worker that dies while starting is seen here, not a
        hang (spawn blocks on a child that dies while reading its arguments), and is not a
        candidate's lost attempt. A worker killed by a signal (from outside: the OOM killer,
        ``kill -9``) is started again, up to ``max_retries`` times in a row; one that exits with
        an error (its traceback is printed above: an evaluator it cannot load) and one more
        death in a row are a :class:`WorkerStartError`.
        """
        while True:
            died = self._start_once(slot, evaluator, n)
            if died is None:
                self._start_failures = 0
                return
            self._start_failures += 1
            if died > 0:  # Python's exit after an error: the same error on every start
                raise WorkerStartError(
                    f"a pool worker failed while starting (exit code {died}): it could not "
                    "load the evaluator; its error is printed above"
                )
            if self._start_failures > self.max_retries:
                raise WorkerStartError(
                    f"pool workers were killed while starting, {self._start_failures} times in "
                    f"a row (exit code {died}: signal {-died})"
                )
            log.warning(
                "a pool worker died while starting (exit code %s); starting again (%d of %d)",
                died, self._start_failures, self.max_retries,
            )  # fmt: skip

    def _start_once(self, slot: int, evaluator: Evaluator, n: int) -> int | None:
        """Start ``n`` workers and add them to the idle ones; with one that died while it
        loaded the evaluator, stop them all and return its exit code (``None``: all started;
        negative: the signal that killed it)."""
        ctx = mp.get_context("spawn")
        started, logging_as = [], driver_logging()
        for _ in range(n):
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=_worker_main, args=(child, logging_as), name="autoshrink-worker"
            )
            process.daemon = True
            process.start()
            child.close()
            started.append(_Worker(process, parent))
        for w in started:
            try:
                self._load(w, slot, evaluator)
            except BaseException as err:  # a worker that died, or Ctrl-C while they start
                died = isinstance(err, (EOFError, OSError))
                if died:  # its own exit code, before the kill below
                    w.process.join(_EXIT_WAIT_S)
                code = w.process.exitcode
                for other in started:
                    other.process.kill()
                    self._stop(other)
                if not died:
                    raise
                return code if code is not None else -signal.SIGKILL
            log.debug("started worker %d", w.process.pid)
        self._idle.extend(started)
        return None

    def _slot(self, evaluator: Evaluator) -> int:
        """The slot of ``evaluator`` in the workers (a new one, dropping the oldest, if new):
        a search that alternates evaluators (progressive screening's stages) keeps its
        workers and sends each evaluator to each worker once."""
        for slot, held in self._slots:
            if held is evaluator:
                return slot
        slot, self._next_slot = self._next_slot, self._next_slot + 1
        self._slots = [*self._slots[-(_KEPT_EVALUATORS - 1) :], (slot, evaluator)]
        return slot

    def _load(self, w: _Worker, slot: int, evaluator: Evaluator) -> None:
        """Send ``evaluator`` to worker ``w`` as ``slot`` and wait until it holds it (raises
        ``EOFError`` or ``OSError`` when the worker died, a :class:`TypeError` naming an
        evaluator that does not pickle)."""
        live = {s for s, _ in self._slots}
        try:  # pickled whole before a byte is sent: the worker still waits for a message
            w.conn.send(("load", slot, evaluator, live))
        except (pickle.PicklingError, AttributeError, TypeError) as err:
            sends = "the pool executor sends the evaluator to its worker processes"
            raise unpicklable(sends, evaluator, str(err), "no lambda, open file or lock") from None
        if w.conn.recv() != "ready":
            raise EOFError("the worker did not confirm the evaluator")
        w.slots = (w.slots & live) | {slot}

    def _worker(self, slot: int, evaluator: Evaluator) -> _Worker:
        """An idle live worker (dead idle ones are dropped: they held no candidate)."""
        while True:
            while self._idle:
                w = self._idle.pop()
                if w.process.is_alive():
                    return w
                self._stop(w)
            self._start(slot, evaluator, 1)

    @staticmethod
    def _stop(w: _Worker) -> None:
        w.conn.close()
        w.process.join(_EXIT_WAIT_S)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()

    @staticmethod
    def _receive(w: _Worker) -> tuple[int, tuple[str, Any]] | None:
        """The worker's reply, or ``None`` when it died (its pipe closed without one)."""
        try:
            if w.conn.poll():
                return w.conn.recv()
        except (EOFError, OSError):
            pass
        w.process.join(_EXIT_WAIT_S)  # its pipe closed or its sentinel fired: it is exiting
        return None

    def _hand_out(
        self, slot: int, evaluator: Evaluator, jobs: Sequence[Job], queue: deque[int]
    ) -> _Worker | None:
        """Send the job first in ``queue`` to a worker (which loads the evaluator's ``slot``
        first if it has not); the worker, or ``None`` if it died before it took the job, which
        goes back to the front of the queue (not the job's fault)."""
        w = self._worker(slot, evaluator)
        w.job = queue.popleft()
        try:
            if slot not in w.slots:
                self._load(w, slot, evaluator)
            w.conn.send(("job", w.job, jobs[w.job], slot))
            w.deadline = time.monotonic() + (self.candidate_timeout or math.inf)
        except (EOFError, OSError):
            queue.appendleft(w.job)
            self._stop(w)
            return None
        except TypeError:  # an evaluator that does not pickle: nothing sent, the worker waits
            queue.appendleft(w.job)
            w.job = None
            self._idle.append(w)
            raise
        return w

    def _late(self, busy: dict[Connection, _Worker], woken: set[_Worker]) -> set[_Worker]:
        """The busy workers, not among ``woken``, whose candidate ran past its time limit and
        that have not replied meanwhile (one that has is added to ``woken``: its result
        counts)."""
        now, late = time.monotonic(), set()
        for w in busy.values():
            if w in woken or w.deadline > now:
                continue
            if w.conn.poll():  # it answered at the last moment
                woken.add(w)
            else:
                late.add(w)
        return late

    def _time_out(
        self, w: _Worker, index: int, evaluator: Evaluator, job: Job, budget: RetryBudget
    ) -> Evaluation:
        """Kill worker ``w``, whose job ``index`` (``job``) ran past the time limit, and reap
        it; the job's ``"failed"`` evaluation (not run again: it would hang again)."""
        w.process.kill()
        self._stop(w)
        assert self.candidate_timeout is not None  # a worker is late only under a limit
        return budget.timed_out(evaluator, job, index, self.candidate_timeout)

    def _settle(
        self,
        w: _Worker,
        index: int,
        evaluator: Evaluator,
        job: Job,
        budget: RetryBudget,
        queue: deque[int],
    ) -> Evaluation | None:
        """What became of job ``index`` (``job``), which worker ``w`` held: its evaluation, or
        ``None`` when it goes back to the front of ``queue`` to run again (its worker died, or
        memory ran out -- perhaps held by another worker's candidate -- and ``budget`` allows
        another try), or a ``"failed"`` evaluation once it does not. An exception the
        evaluator raised is raised here."""
        reply = self._receive(w)
        if reply is None:
            self._stop(w)
            reason = f"worker {w.process.pid} died (exit code {w.process.exitcode})"
            if budget.retry(index, reason):
                queue.appendleft(index)
                return None
            return budget.failed(evaluator, job, index, reason)
        w.job = None
        self._idle.append(w)
        _, (kind, value) = reply
        if kind == "raise":
            raise value
        if kind == "error":
            raise WorkerError(f"{job.named(index)} raised in a pool worker:\n{value}")
        settled = budget.settled(index, value)
        if settled is None:  # out of memory: it runs again
            queue.appendleft(index)
        return settled

    def _missing(self, busy: int, queued: int) -> int:
        """How many workers to start before a round hands out jobs: the whole pool, side by
        side, while jobs wait. A batch smaller than the pool (a search's step 0) starts them
        all, as the next batch would start the rest while the others waited."""
        return self.workers - busy - len(self._idle) if queued else 0

    # ------------------------------------------------------------------ public API
    def run(
        self,
        evaluator: Evaluator,
        jobs: Sequence[Job],
        on_retry: RetryListener | None = None,
    ) -> Iterator[tuple[int, Evaluation]]:
        """Evaluate ``jobs``; yield ``(position in jobs, evaluation)`` as each finishes.

        ``on_retry(position, retry number, reason)`` is called before a candidate whose worker
        died, or whose memory ran out, runs again. A candidate that runs past
        ``candidate_timeout`` is yielded ``"failed"`` (its worker killed and replaced). An error a
        candidate raised is raised once the evaluations that finished beside it are yielded.
        """
        slot = self._slot(evaluator)
        budget = RetryBudget(jobs, self.max_retries, on_retry)
        queue = deque(range(len(jobs)))
        busy: dict[Connection, _Worker] = {}
        try:
            while queue or busy:
                if (missing := self._missing(len(busy), len(queue))) > 0:
                    self._start(slot, evaluator, missing)
                while queue and len(busy) < self.workers:
                    if (w := self._hand_out(slot, evaluator, jobs, queue)) is not None:
                        busy[w.conn] = w
                sentinels = {w.process.sentinel: w for w in busy.values()}
                ready = wait([*busy, *sentinels], wait_s(w.deadline for w in busy.values()))
                woken = {
                    sentinels[r] if isinstance(r, int) else busy[cast(Connection, r)] for r in ready
                }
                late = self._late(busy, woken)
                raised: Exception | None = None  # after the others of this wake-up are out
                for w in sorted(woken | late, key=lambda w: w.job or 0):
                    index = w.job
                    assert index is not None
                    del busy[w.conn]
                    evaluation: Evaluation | None
                    try:
                        if w in late:
                            evaluation = self._time_out(w, index, evaluator, jobs[index], budget)
                        else:
                            evaluation = self._settle(
                                w, index, evaluator, jobs[index], budget, queue
                            )
                    except Exception as err:
                        raised = raised or err
                        continue
                    if evaluation is not None:
                        yield index, evaluation
                if raised is not None:
                    raise raised
        finally:
            for w in busy.values():  # abandoned mid-batch: their results would be stale
                w.process.kill()
                self._stop(w)

    def close(self) -> None:
        """Stop the idle workers (busy ones are stopped when their batch ends)."""
        for w in self._idle:
            with contextlib.suppress(OSError):  # already gone
                w.conn.send(None)
        for w in self._idle:
            self._stop(w)
        self._idle = []
        self._slots = []
