"""Evaluate candidates as Ray tasks, on one machine or a cluster (the ``ray`` extra).

Each candidate is one Ray task; the evaluator (with its proxy data) goes into Ray's object
store once per search and every task reads it from there, so worker machines need the
``autoshrink`` package but not the data set. A task asks for one GPU when the evaluator runs
on CUDA (Ray then sets ``CUDA_VISIBLE_DEVICES``, so ``cuda`` is the GPU it was given) and for
one CPU otherwise. Results come back to the driver as tasks finish; the driver alone writes
the journal and the run folder.

Ray's own task retries are switched off (``max_retries=0``): when a worker or node dies under
a candidate, this executor resubmits it (at most ``max_retries`` times) and reports each retry
so the journal records it; so it does with a candidate whose evaluation failed for lack of
memory. An exception raised by the evaluator is re-raised in the driver: bad input (an
autoshrink error) as itself, anything else as a ``WorkerError`` naming the candidate, after the
evaluations of the tasks that had ended beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoshrink.devices import is_cuda
from autoshrink.errors import AutoshrinkError, ConfigError
from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import Job, WorkerError, check_timeout, unpicklable, wait_s
from autoshrink.executors.retries import (
    DEFAULT_RETRIES,
    RetryBudget,
    RetryListener,
    check_retries,
    out_of_memory,
)
from autoshrink.stop_signals import SearchInterrupted, handlers_kept, sigint_deferred

log = logging.getLogger(__name__)

#: autoshrink is not on PyPI: the extra is installed from a clone, into its environment.
INSTALL_HINT = 'pip install -e ".[ray]" in a clone of autoshrink'

# Errors that mean the task's process or machine was lost, not that the evaluator raised.
_LOST = (
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "OutOfMemoryError",
    "ObjectLostError",
    "OwnerDiedError",
)


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


PROBE_SECONDS = 5.0


#: What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
#: A frame's type byte (the fourth of its header) of SETTINGS, what a gRPC server answers with.
SETTINGS_FRAME = 4


def probe_address(address: str, timeout: float = PROBE_SECONDS, *, named: str = "") -> None:
    """Fail fast when no Ray cluster answers at a ``HOST:PORT`` or ``ray://HOST:PORT`` address.

    Ray itself keeps retrying an unreachable cluster for minutes, and one whose port holds
    another service (a dashboard's, a web server's) as long. One TCP connection tells within
    ``timeout`` seconds whether anything listens, and the HTTP/2 preface whether it speaks
    gRPC as a Ray cluster's GCS and client server do (they answer with a SETTINGS frame; so
    does any other gRPC or HTTP/2 server, which passes and is left to Ray); with
    ``RAY_USE_TLS`` set the port speaks TLS first, and only the connection is tried. ``auto``
    and ``local`` pass; any other address without a port is refused. Raises
    :class:`ConfigError` naming the address as ``named`` (default ``--ray-address ADDRESS``).
    """
    if address in ("auto", "local"):
        return
    named = named or f"--ray-address {address}"
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not (sep and host and port.isdigit()):
        raise ConfigError(f"{named}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    host = host.strip("[]")  # [IPv6]:port
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            f"{named}: nothing answers there ({reason}); start the cluster "
            "with `ray start --head` and pass the address it prints"
        ) from None
    with conn:
        try:
            answer = b"" if tls else _http2_answer(conn)
            said = f"it answered {answer[:16]!r}" if answer else "it said nothing"
        except OSError as err:  # took the connection, then dropped it
            answer, said = b"", f"it dropped the connection: {err.strerror or type(err).__name__}"
    if not tls and (len(answer) < 4 or answer[3] != SETTINGS_FRAME):
        raise ConfigError(
            f"{named}: something listens there, but not a Ray cluster ({said}; "
            "Ray's address is the one `ray start --head` prints, port 6379 by default)"
        )


def _http2_answer(conn: socket.socket) -> bytes:
    """The first bytes the server at ``conn`` sends after an HTTP/2 client preface (none when
    it says nothing within the connection's timeout, or closes)."""
    conn.sendall(HTTP2_PREFACE)
    try:
        return conn.recv(16)
    except TimeoutError:
        return b""


def started_a_local_instance(ray: Any) -> bool:
    """Whether ``ray.init()`` in this process started a Ray instance of its own (a head node),
    rather than joined a running one (a cluster, or ``ray start`` on this machine). Read from
    Ray's private node record (``ray._private.worker._global_node.head``, Ray 2.x); ``False``
    where that cannot be read, the side on which in-flight tasks are cancelled as on a cluster."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    return getattr(getattr(worker, "_global_node", None), "head", False) is True


def _evaluate(evaluator: Evaluator, job: Job, threads: int) -> Evaluation:
    """The body of one Ray task (``evaluator`` arrives resolved from the object store)."""
    import torch

    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # the object store hands out read-only arrays; only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return job.evaluate_with(evaluator)


def _ended_well(ray: Any, pending: dict[Any, int]) -> Iterator[tuple[int, Evaluation]]:
    """Take the tasks of ``pending`` that have already ended with an evaluation out of it and
    yield ``(position, evaluation)`` of each, in the order they were handed out: the results
    that finished beside a task that raised, journalled before its error stops the search. One
    whose memory ran out, or that ended in an error, is left (it would run again)."""
    if not pending:
        return
    ended, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
    for ref in ended:
        try:
            evaluation = ray.get(ref)
        except Exception:  # raised or lost too: no result to keep
            continue
        if not out_of_memory(evaluation):
            yield pending.pop(ref), evaluation


def _put(ray: Any, evaluator: Evaluator) -> Any:
    """``evaluator`` in Ray's object store (its reference), or a one-line :class:`TypeError`
    naming an evaluator that does not pickle (Ray's own is a 20-line report)."""
    try:
        return ray.put(evaluator)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        reason = (str(err.__cause__ or err).strip().splitlines() or [""])[0]
        sends = "the ray executor sends the evaluator to its tasks through Ray's object store"
        raise unpicklable(sends, evaluator, reason, "no open file or lock") from None


def _raised(err: Any, job: Job, index: int) -> Exception:
    """What the driver raises for job ``index`` (``job``), whose evaluator raised in its task
    (Ray's ``RayTaskError`` ``err``): bad input (an autoshrink error) as itself, in its one
    line; anything else as a :class:`~autoshrink.executors.base.WorkerError` that names the
    candidate, followed by the task's traceback."""
    if isinstance(err.cause, AutoshrinkError):
        return err.cause
    return WorkerError(f"{job.named(index)} raised in a Ray task:\n{err}")


def runs_on_cuda(evaluator: Evaluator) -> bool:
    """Whether ``evaluator`` trains on a CUDA device (its ``device`` attribute)."""
    return is_cuda(getattr(evaluator, "device", "cpu"))


@dataclass
class _Batch:
    """The tasks of one batch: the positions not handed to Ray yet (``waiting``), the tasks
    handed (``pending``: reference -> position, at most ``at_once``) and, under a time limit
    (``limit`` seconds), when each is late (``deadlines``, monotonic)."""

    submit: Callable[[int], Any]  # hands Ray the task of a position: its reference
    at_once: int
    limit: float | None
    waiting: deque[int]
    pending: dict[Any, int] = field(default_factory=dict)
    deadlines: dict[Any, float] = field(default_factory=dict)

    def fill(self) -> None:
        """Hand Ray the waiting positions, first first, while fewer than ``at_once`` run."""
        while self.waiting and len(self.pending) < self.at_once:
            index = self.waiting.popleft()
            ref = self.submit(index)
            self.pending[ref] = index
            if self.limit is not None:
                self.deadlines[ref] = time.monotonic() + self.limit

    def wait_s(self) -> float | None:
        """How long until the first task is late, at most
        :data:`~autoshrink.executors.base.MAX_WAIT_S` (``None``: no limit)."""
        return wait_s(self.deadlines.values())

    def take(self, ref: Any) -> int:
        """The position of task ``ref``, which ended or is cancelled (no longer pending)."""
        self.deadlines.pop(ref, None)
        return self.pending.pop(ref)

    def late(self, ray: Any, done: list[Any]) -> list[Any]:
        """The tasks past their deadline, not ``done`` and not ended meanwhile (one that has
        is added to ``done``: its result counts)."""
        now = time.monotonic()
        late = [ref for ref, t in self.deadlines.items() if t <= now and ref not in done]
        if not late:
            return []
        ended, late = ray.wait(late, num_returns=len(late), timeout=0)
        done.extend(ended)
        return list(late)


class RayExecutor:
    """Run each candidate as a Ray task.

    Args:
        address: a running cluster (``ray start --head`` prints it, e.g. ``HOST:6379``);
            ``None`` joins the cluster Ray finds itself (``RAY_ADDRESS``, or one started on
            this machine) or starts a local instance. A Ray already initialised in this
            process is used as it is.
        max_retries: how many times a candidate whose worker died is resubmitted.
        cpus_per_task: CPUs each task asks for (also its torch threads).
        gpus_per_task: GPUs each task asks for; ``None``: 1 when the evaluator is on CUDA.
        candidate_timeout: seconds a candidate's task may take from when it is handed to Ray
            (``None``: no limit); one that takes longer is cancelled (``ray.cancel(force=True)``
            kills its worker) and its candidate is ``"failed"`` ("timed out after N s"), not
            run again. Under a limit the executor hands Ray no more tasks than the cluster's
            CPUs (GPUs) run at once, so that a task does not wait out its time in Ray's queue.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        max_retries: int = DEFAULT_RETRIES,
        cpus_per_task: int = 1,
        gpus_per_task: float | None = None,
        candidate_timeout: float | None = None,
    ) -> None:
        if cpus_per_task < 1:
            raise ConfigError(f"cpus_per_task must be >= 1, got {cpus_per_task}")
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ConfigError(f"gpus_per_task must be >= 0, got {gpus_per_task}")
        self.address = address
        self.max_retries = check_retries(max_retries)
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.candidate_timeout = check_timeout(candidate_timeout)
        self._started_ray = False
        self._local = False  # whether Ray was given no address (an instance on this machine)
        self._own_instance = False  # whether that instance is this executor's, started by it
        self._evaluator: Evaluator | None = None
        self._evaluator_ref: Any = None
        self._remote: Any = None  # the task of that evaluator (``ray.remote``, its options)

    @property
    def candidate_threads(self) -> int:
        """The torch threads each candidate trains on: its task's CPUs."""
        return self.cpus_per_task

    def _ray(self) -> Any:
        ray = require_ray()
        if not ray.is_initialized():
            # Ray reads RAY_ADDRESS itself when given no address: probed as --ray-address is,
            # else an unreachable one kept Ray retrying for minutes, deaf to Ctrl-C
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if address is None:
                named = "--ray-address auto (a new local instance if none is running)"
            else:
                named = f"--ray-address {address}" if self.address else f"RAY_ADDRESS={address}"
            log.info("connecting to Ray at %s", named)
            if address:
                probe_address(address, named=named)
            try:
                # Ctrl-C and SIGTERM stay the search's clean stops; a Ctrl-C while Ray starts
                # stops the search once it has (a second one at once): stopped midway, Ray
                # left two of its agents running
                with handlers_kept(), sigint_deferred() as ctrl_c:
                    ray.init(address=self.address)
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as err:
                first_line = (str(err).strip().splitlines() or [""])[0]
                raise ConfigError(
                    f"{named}: cannot connect to Ray ({first_line}); with token authentication "
                    "set RAY_AUTH_MODE=token and give this machine the cluster's token "
                    "(~/.ray/auth_token or RAY_AUTH_TOKEN_PATH)"
                ) from None
            except SystemExit as exit_:  # SIGTERM while Ray started: its handler's sys.exit
                with contextlib.suppress(Exception):
                    ray.shutdown()
                if exit_.code != signal.SIGTERM:
                    raise
                raise SearchInterrupted(signal.SIGTERM) from None
            except Exception as err:  # Ray's bare Exception: a local node that did not start
                with contextlib.suppress(Exception):  # (its raylet or GCS timed out, a busy
                    ray.shutdown()  # machine): what it started goes
                first_line = (str(err).strip().splitlines() or [""])[0]
                raise ConfigError(f"{named}: Ray did not start ({first_line})") from None
            if ctrl_c:
                ray.shutdown()
                raise SearchInterrupted(signal.SIGINT)
            self._started_ray = True
            self._local = address is None
            self._own_instance = self._local and started_a_local_instance(ray)
        return ray

    def _check_resources(self, ray: Any, cpus: int, gpus: float) -> None:
        """Refuse tasks that ask for more CPUs or GPUs than a Ray instance started on this
        machine has (they would wait for ever); say it of a cluster, whose autoscaler may add
        them."""
        resources = ray.cluster_resources()
        for name, asked, flag, instead in (
            ("CPU", cpus, f"--threads {cpus}", "fewer --threads, or a cluster with more CPUs"),
            ("GPU", gpus, "--device cuda", "--device cpu, or a cluster with GPUs"),
        ):
            have = float(resources.get(name, 0))
            if asked <= have:
                continue
            many = f"{asked:g} {name}{'s' if asked > 1 else ''}"
            if self._local:
                raise ConfigError(
                    f"{flag} with --executor ray: each candidate asks Ray for {many}, and the "
                    f"Ray instance on this machine has {have:g}; use {instead} (--ray-address)"
                )
            log.warning(
                "each candidate asks Ray for %s and the cluster has %g now: the candidates "
                "wait until it has enough (an autoscaler adding a node)",
                many,
                have,
            )

    def _gpus(self, evaluator: Evaluator) -> float:
        """The GPUs each task of ``evaluator`` asks for."""
        if self.gpus_per_task is not None:
            return self.gpus_per_task
        return 1 if runs_on_cuda(evaluator) else 0

    def _at_once(self, ray: Any, evaluator: Evaluator, jobs: int) -> int:
        """How many of ``jobs`` tasks to hand Ray at a time: all without a time limit; under
        one, as many as the cluster's CPUs (and GPUs) run at once now (at least 1), so that
        none waits in Ray's queue while its time runs."""
        if self.candidate_timeout is None:
            return jobs
        resources = ray.cluster_resources()
        fits = float(resources.get("CPU", 0)) // self.cpus_per_task
        gpus = self._gpus(evaluator)
        if gpus:
            fits = min(fits, float(resources.get("GPU", 0)) // gpus)
        return max(1, min(jobs, int(fits)))

    @staticmethod
    def _time_out(
        ray: Any,
        batch: _Batch,
        done: list[Any],
        evaluator: Evaluator,
        jobs: Sequence[Job],
        budget: RetryBudget,
    ) -> Iterator[tuple[int, Evaluation]]:
        """Cancel the tasks of ``batch`` past their time limit (``done``: those that ended) and
        yield the ``"failed"`` evaluation of each (not run again: a hang would hang again)."""
        for ref in batch.late(ray, done):
            ray.cancel(ref, force=True)  # kills its worker: a hang would not end
            index = batch.take(ref)
            assert batch.limit is not None  # a task is late only under a limit
            yield index, budget.timed_out(evaluator, jobs[index], index, batch.limit)

    def _task(self, ray: Any, evaluator: Evaluator) -> Any:
        gpus = self._gpus(evaluator)
        self._check_resources(ray, self.cpus_per_task, gpus)
        return ray.remote(_evaluate).options(
            num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=0
        )

    def run(
        self,
        evaluator: Evaluator,
        jobs: Sequence[Job],
        on_retry: RetryListener | None = None,
    ) -> Iterator[tuple[int, Evaluation]]:
        """Evaluate ``jobs`` as Ray tasks; yield ``(position in jobs, evaluation)`` as they end.

        ``on_retry(position, retry number, reason)`` is called before a candidate whose worker
        or node died, or whose memory ran out, is resubmitted. A task that runs past
        ``candidate_timeout`` is cancelled (its worker killed) and yielded ``"failed"``.
        """
        ray = self._ray()
        lost = tuple(getattr(ray.exceptions, name) for name in _LOST)
        if evaluator is not self._evaluator:
            self._evaluator_ref = _put(ray, evaluator)
            self._evaluator = evaluator
            self._remote = self._task(ray, evaluator)  # once: its check asks the cluster
        task = self._remote
        budget = RetryBudget(jobs, self.max_retries, on_retry)

        batch = _Batch(
            lambda i: task.remote(self._evaluator_ref, jobs[i], self.cpus_per_task),
            self._at_once(ray, evaluator, len(jobs)),
            self.candidate_timeout,
            deque(range(len(jobs))),
        )
        pending, waiting = batch.pending, batch.waiting
        try:
            while waiting or pending:
                batch.fill()
                done, _ = ray.wait(list(pending), num_returns=1, timeout=batch.wait_s())
                yield from self._time_out(ray, batch, done, evaluator, jobs, budget)
                for ref in done:
                    index = batch.take(ref)
                    try:
                        evaluation = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:  # the evaluator raised
                        yield from _ended_well(ray, pending)  # not lost with it
                        raise _raised(err, jobs[index], index) from None
                    except lost as err:
                        first_line = (str(err).strip().splitlines() or [""])[0]
                        reason = f"{type(err).__name__}: {first_line}"
                        if budget.retry(index, reason):
                            waiting.appendleft(index)
                        else:
                            yield index, budget.failed(evaluator, jobs[index], index, reason)
                        continue
                    settled = budget.settled(index, evaluation)
                    if settled is None:  # out of memory: as in-process, it runs again
                        waiting.appendleft(index)
                        continue
                    yield index, settled
        finally:
            # abandoned mid-batch (a stop signal, an error): an instance of this executor's own
            # ends with its tasks at close(); cancelling them first raced their replies, and Ray
            # aborted (task_manager.cc "Tried to complete task that was not pending", exit 1,
            # two of its agents left running) in 4 of 10 stops measured on 2026-12-07
            if not self._own_instance and ray.is_initialized():  # not after close()'s shutdown
                for ref in pending:
                    ray.cancel(ref, force=True)

    def close(self) -> None:
        """Drop the evaluator from the object store; shut down a Ray this executor started."""
        self._evaluator = self._evaluator_ref = self._remote = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = self._own_instance = False
