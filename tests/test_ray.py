"""The Ray executor on a real local Ray instance (2 CPUs, started here, no dashboard).

The tiny search of tests/test_executors.py runs through Ray with the worker under one
candidate killed on its first attempt: the journal must hold exactly the in-process candidate
records, one retry event, and a resume must train nothing. Without Ray installed the module
is skipped (the install hint itself is tested in tests/test_executors.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')

import test_executors  # noqa: E402
from autoshrink.errors import ConfigError  # noqa: E402
from autoshrink.executors.base import WorkerError  # noqa: E402
from autoshrink.executors.factory import build_executor  # noqa: E402
from autoshrink.executors.ray_executor import (  # noqa: E402
    RayExecutor,
    probe_address,
    runs_on_cuda,
    started_a_local_instance,
)
from test_executors import (  # noqa: E402
    HANG_S,
    CrashFirst,
    Fake,
    Hangs,
    OutOfMemoryFirst,
    RefusesInput,
    WaitsForGo,
    _jobs,
    check_crash_run,
    finish_together,
    reference_run,
    run_with_crash,
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    # Ray workers cannot import this tests folder: ship its test evaluators by value.
    ray.cloudpickle.register_pickle_by_value(test_executors)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.mark.slow
def test_ray_matches_inprocess_and_retries_a_killed_worker(local_ray, tmp_path, tmp_path_factory):
    reference = reference_run(tmp_path_factory)
    executor = RayExecutor()
    key = run_with_crash(executor, reference, tmp_path / "ray")
    check_crash_run(tmp_path / "ray", reference, key)
    assert local_ray.is_initialized()  # a Ray the executor did not start stays up


@pytest.mark.slow
def test_ray_gives_up_after_max_retries(local_ray, tmp_path):
    jobs = _jobs(2)
    evaluator = CrashFirst(Fake(), jobs[0].genotype.key, tmp_path, times=99)
    seen: list[tuple[int, int, str]] = []
    out = dict(RayExecutor(max_retries=1).run(evaluator, jobs, on_retry=lambda *a: seen.append(a)))
    assert out[0].status == "failed" and out[0].detail["attempts"] == 2
    assert "WorkerCrashedError" in out[0].detail["error"]
    assert out[1] == Fake().evaluate(jobs[1].genotype, jobs[1].seed)
    assert [(i, n) for i, n, _ in seen] == [(0, 1)]
    reason = seen[0][2]  # the error's type and the first line of its text
    assert reason.startswith("WorkerCrashedError: ") and len(reason) > len("WorkerCrashedError: ")
    assert "\n" not in reason


@pytest.mark.slow
def test_ray_trains_a_candidate_that_ran_out_of_memory_again(local_ray, tmp_path):
    jobs = _jobs(2)
    evaluator = OutOfMemoryFirst(Fake(), jobs[0].genotype.key, tmp_path, times=1)
    seen: list[tuple[int, int, str]] = []
    out = dict(RayExecutor(max_retries=1).run(evaluator, jobs, on_retry=lambda *a: seen.append(a)))
    assert out == {i: Fake().evaluate(job.genotype, job.seed) for i, job in enumerate(jobs)}
    assert seen == [(0, 1, OutOfMemoryFirst.ERROR)]
    assert len(list(tmp_path.glob("attempt-*"))) == 1


@pytest.mark.slow
def test_ray_raises_bad_input_as_itself(local_ray):
    # a HardwareError raised in a task reached the command line as Ray's RayTaskError, whose
    # text is the task's whole traceback
    from autoshrink.errors import HardwareError

    jobs = _jobs(2)
    with pytest.raises(HardwareError) as caught:
        list(RayExecutor().run(RefusesInput(raise_on=jobs[0].genotype.key), jobs))
    assert str(caught.value) == "t.json: measured on AMD EPYC 9999, not on this machine"
    # any other error of the evaluator is a bug: the task's traceback, after the candidate's
    # name (it was Ray's error alone, which named no candidate)
    bad = jobs[1].genotype.key
    with pytest.raises(WorkerError, match=f"^candidate {bad} raised in a Ray task:\n") as caught:
        list(RayExecutor().run(Fake(raise_on=bad), jobs))
    assert str(caught.value).endswith(f"ValueError: bad candidate {bad}")


@pytest.mark.slow
def test_a_result_that_ends_beside_a_raising_task_is_yielded_before_the_error(
    local_ray, tmp_path, monkeypatch
):
    # a task that raised took down the tasks that had already ended well beside it: they were
    # cancelled with the error, and trained again on resume
    jobs = _jobs(3)[1:]  # both wait for the go file: neither ends before the test lets them
    go = tmp_path / "go"
    wait = local_ray.wait

    def both_end_first(refs: list[Any], **kw: Any) -> Any:
        if not go.exists():  # the driver's first wait: both tasks end, then it looks
            finish_together(go, [job.seed for job in jobs])
            wait(refs, num_returns=len(refs))  # both replies are in
        return wait(refs, **kw)  # ready ones come in the order of refs: the raising one

    monkeypatch.setattr(local_ray, "wait", both_end_first)
    results = RayExecutor().run(WaitsForGo(str(go), raise_on=jobs[0].genotype.key), jobs)
    assert next(results) == (1, Fake().evaluate(jobs[1].genotype, jobs[1].seed))
    with pytest.raises(WorkerError, match=f"^candidate {jobs[0].genotype.key} raised"):
        next(results)


#: The time limit of the Ray tests: a fresh Ray worker (replacing a cancelled one) imports
#: torch within it, on a loaded 2-core machine too.
RAY_LIMIT_S = 15.0


@pytest.mark.slow
def test_ray_cancels_a_task_past_its_time_limit_and_goes_on(local_ray):
    jobs = _jobs(4)
    hung = jobs[1].genotype.key
    expected = {i: Fake().evaluate(job.genotype, job.seed) for i, job in enumerate(jobs)}
    assert dict(RayExecutor().run(Fake(), jobs)) == expected  # workers up, torch imported
    executor = RayExecutor(candidate_timeout=RAY_LIMIT_S)
    seen: list[tuple[int, int, str]] = []
    t0 = time.monotonic()
    out = dict(executor.run(Hangs(hung), jobs, on_retry=lambda *a: seen.append(a)))
    assert time.monotonic() - t0 < HANG_S / 2  # it did not wait for the hang
    assert sorted(out) == [0, 1, 2, 3] and seen == []  # not retried: it would hang again
    error = f"timed out after {RAY_LIMIT_S:g} s (1 attempt)"
    assert out[1].status == "failed" and out[1].detail == {"error": error, "attempts": 1}
    assert out[1].metrics == {"macs": 1000.0 * jobs[1].genotype.num_edges}  # cost kept
    assert out[1].seconds == RAY_LIMIT_S
    assert {i: out[i] for i in (0, 2, 3)} == {i: expected[i] for i in (0, 2, 3)}
    assert dict(executor.run(Fake(), jobs)) == expected  # a worker replaces the killed one


def test_under_a_time_limit_ray_gets_as_many_tasks_as_it_runs_at_once():
    # handed all at once, tasks queued behind the CPUs would spend their time waiting there
    assert RayExecutor()._at_once(_StubRay(), Fake(), 10) == 10  # no limit: all
    assert RayExecutor(candidate_timeout=60)._at_once(_StubRay(), Fake(), 10) == 2  # 2 CPUs
    assert RayExecutor(candidate_timeout=60)._at_once(_StubRay(), Fake(), 1) == 1
    assert RayExecutor(candidate_timeout=60, cpus_per_task=2)._at_once(_StubRay(), Fake(), 9) == 1
    on_gpus = RayExecutor(candidate_timeout=60, cpus_per_task=1)
    assert on_gpus._at_once(_StubRay(gpus=1), _OnCuda(), 10) == 1  # 1 GPU, 2 CPUs
    assert on_gpus._at_once(_StubRay(gpus=0), _OnCuda(), 10) == 1  # at least one
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ConfigError, match="^candidate_timeout must be a finite number"):
            RayExecutor(candidate_timeout=bad)


class HoldsALock(Fake):
    """An evaluator that holds what no pickle takes, cloudpickle's included: a lock."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def test_an_evaluator_that_does_not_pickle_is_named_in_one_line(local_ray) -> None:
    # it was Ray's 20-line TypeError ("Could not serialize the put value ...", a report of its
    # serializability check) inside a 70-line traceback, naming neither the evaluator's class
    # nor why it is pickled
    says = (
        r"^the ray executor sends the evaluator to its tasks through Ray's object store, and "
        r"HoldsALock does not pickle \(cannot pickle '_thread.lock' object\); keep what it "
        r"holds plain \(no open file or lock\)$"
    )
    executor = RayExecutor()
    with pytest.raises(TypeError, match=says):
        list(executor.run(HoldsALock(), _jobs(2)))
    assert len(list(executor.run(Fake(), _jobs(2)))) == 2  # the executor goes on


def test_an_instance_started_here_is_told_from_one_joined(local_ray) -> None:
    # the fixture's ray.init() started a head node in this process: Ray's own record says so
    assert started_a_local_instance(local_ray)
    node = SimpleNamespace(head=False)  # what ray.init() leaves when it joins a running Ray
    assert not started_a_local_instance(
        SimpleNamespace(_private=SimpleNamespace(worker=SimpleNamespace(_global_node=node)))
    )
    assert not started_a_local_instance(SimpleNamespace())  # unreadable: as on a cluster


@pytest.mark.slow
def test_tasks_left_mid_batch_are_cancelled_unless_their_instance_ends_with_them(
    local_ray, monkeypatch
) -> None:
    """A stop mid-step cancelled the tasks of the executor's own local instance just before it
    shut that instance down, and Ray aborted in 4 of 10 such stops (exit 1, a C++ trace)."""
    cancelled: list[bool] = []
    monkeypatch.setattr(local_ray, "cancel", lambda ref, force: cancelled.append(force))
    jobs = _jobs(3)
    joined = RayExecutor()  # the fixture's instance: not the executor's, as a cluster's
    results = joined.run(Fake(), jobs)
    next(results)
    results.close()
    assert cancelled == [True, True]
    own = RayExecutor()
    own._own_instance = True  # as after its own ray.init() started the instance
    results = own.run(Fake(), jobs)
    next(results)
    results.close()
    assert cancelled == [True, True]  # close() shuts the instance down, tasks and all


class _StubRay:
    """Records the options a task is declared with; a cluster of ``gpus`` GPUs."""

    def __init__(self, gpus: float = 8) -> None:
        self.declared: dict[str, Any] = {}
        self.gpus = gpus

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "GPU": self.gpus}

    def remote(self, fn: Any) -> _StubRay:
        return self

    def options(self, **kw: Any) -> _StubRay:
        self.declared = kw
        return self


class _OnCuda(Fake):
    device = "cuda"


class _OnCpu(Fake):
    device = "cpu"


def test_a_task_asks_for_one_gpu_when_the_search_runs_on_cuda():
    assert runs_on_cuda(_OnCuda()) and not runs_on_cuda(Fake())
    for evaluator, gpus in ((_OnCuda(), 1), (Fake(), 0)):
        stub = _StubRay()
        RayExecutor()._task(stub, evaluator)
        assert stub.declared == {"num_cpus": 1, "num_gpus": gpus, "max_retries": 0}


def test_a_wrapped_evaluator_on_cuda_asks_for_its_gpu_too():
    # one-shot evaluation and latency costs wrap the evaluator: their tasks asked for no GPU
    from autoshrink.evaluators.costed import CostedEvaluator
    from autoshrink.evaluators.oneshot import OneShotEvaluator

    for inner, gpus in ((_OnCuda(), 1), (_OnCpu(), 0)):
        oneshot = OneShotEvaluator(inner, 1)  # type: ignore[arg-type]
        for wrapped in (CostedEvaluator(inner, []), oneshot, CostedEvaluator(oneshot, [])):
            stub = _StubRay()
            RayExecutor()._task(stub, wrapped)
            assert stub.declared["num_gpus"] == gpus, (wrapped, gpus)


def test_ray_executor_options_are_checked():
    with pytest.raises(ConfigError, match="cpus_per_task must be >= 1, got 0"):
        RayExecutor(cpus_per_task=0)
    with pytest.raises(ConfigError, match="gpus_per_task must be >= 0, got -1"):
        RayExecutor(gpus_per_task=-1)
    for gpus in (0, 0.5):  # no GPU, or a share of one: Ray packs tasks onto a GPU
        stub = _StubRay()
        RayExecutor(cpus_per_task=2, gpus_per_task=gpus)._task(stub, _OnCuda())
        assert stub.declared == {"num_cpus": 2, "num_gpus": gpus, "max_retries": 0}


def test_a_task_asks_for_as_many_cpus_as_its_candidate_trains_on_threads():
    """``--threads N`` trained each Ray task on N threads on the one CPU it asked for: Ray
    packed N times too many candidates onto each machine."""
    from autoshrink.config import ExecutionSettings
    from autoshrink.executors.factory import executor_for

    assert build_executor("ray", threads=4).cpus_per_task == 4
    assert build_executor("ray").cpus_per_task == 1
    ray_settings = ExecutionSettings(executor="ray")
    assert executor_for(ray_settings, "cpu", 3).candidate_threads == 3
    stub = _StubRay()
    executor_for(ray_settings, "cpu", 3)._task(stub, Fake())
    assert stub.declared["num_cpus"] == 3


def test_gpu_tasks_on_a_ray_without_gpus_are_refused_here_and_said_of_a_cluster(caplog):
    """``--device cuda --executor ray`` on a machine without a GPU waited for ever (Ray's
    autoscaler said it could not place the task every 35 s)."""
    import logging

    here = RayExecutor()
    here._local = True  # the instance Ray started on this machine (no address)
    with pytest.raises(ConfigError, match="asks Ray for 1 GPU, and the Ray instance on this "):
        here._task(_StubRay(gpus=0), _OnCuda())
    here._task(_StubRay(gpus=0), _OnCpu())  # a CPU search asks for none
    cluster = RayExecutor("10.0.0.1:6379")  # a cluster's autoscaler may add a GPU node
    with caplog.at_level(logging.WARNING):
        cluster._task(_StubRay(gpus=0), _OnCuda())
    assert "the candidates wait until it has enough" in caplog.text


def test_tasks_of_more_cpus_than_a_local_ray_has_are_refused_here_and_said_of_a_cluster(caplog):
    """``--executor ray --threads 4`` on a 2-core machine waited for ever (Ray's autoscaler
    said every 35 s that no node type can fulfil {'CPU': 4.0})."""
    import logging

    here = RayExecutor(cpus_per_task=4)
    here._local = True  # the instance Ray started on this machine (no address)
    said = "each candidate asks Ray for 4 CPUs, and the Ray instance on this machine has 2"
    with pytest.raises(ConfigError, match=said):
        here._task(_StubRay(), _OnCpu())
    fits = RayExecutor(cpus_per_task=2)
    fits._local = True
    fits._task(stub := _StubRay(), _OnCpu())
    assert stub.declared["num_cpus"] == 2
    cluster = RayExecutor("10.0.0.1:6379", cpus_per_task=4)  # its autoscaler may add a node
    with caplog.at_level(logging.WARNING):
        cluster._task(_StubRay(), _OnCpu())
    assert "asks Ray for 4 CPUs and the cluster has 2 now" in caplog.text


def test_an_address_in_ray_address_is_probed_and_named(monkeypatch):
    """Ray reads ``RAY_ADDRESS`` itself when given none: an unreachable one kept the search
    waiting for minutes, deaf to Ctrl-C, its log saying it started a local instance."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and is closed now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("Ray was not to be started"))
    with pytest.raises(ConfigError, match=rf"^RAY_ADDRESS=127.0.0.1:{port}: nothing answers"):
        RayExecutor()._ray()


def _starting_ray(monkeypatch, init: Any) -> list[bool]:
    """No Ray running and ``init`` for ``ray.init``; the list ``ray.shutdown`` calls append to."""
    shut: list[bool] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: shut.append(True))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return shut


def test_a_sigterm_while_ray_starts_is_the_searchs_stop(monkeypatch):
    """``ray.init`` makes SIGTERM ``sys.exit(15)``: a SIGTERM while it started Ray ended the
    search with status 15 and no word of how to resume."""
    import signal

    from autoshrink.stop_signals import SearchInterrupted

    def init(**kw: Any) -> None:
        raise SystemExit(signal.SIGTERM)

    shut = _starting_ray(monkeypatch, init)
    with pytest.raises(SearchInterrupted) as stop:
        RayExecutor()._ray()
    assert stop.value.signum == signal.SIGTERM and shut == [True]


def test_a_local_ray_that_does_not_start_is_one_line(monkeypatch):
    """On a busy machine ``ray.init`` raised a bare Exception ("The current node timed out
    during startup ..."), and the search ended in a traceback."""

    def init(**kw: Any) -> None:
        raise Exception(
            "The current node timed out during startup. This could happen because some of "
            "the raylet failed to startup or the GCS has become overloaded.\nmore"
        )

    shut = _starting_ray(monkeypatch, init)
    with pytest.raises(ConfigError) as caught:
        RayExecutor()._ray()
    assert str(caught.value) == (
        "--ray-address auto (a new local instance if none is running): Ray did not start (The "
        "current node timed out during startup. This could happen because some of the raylet "
        "failed to startup or the GCS has become overloaded.)"
    )
    assert shut == [True]  # what it had started goes


@pytest.mark.parametrize("presses", [1, 2])
def test_a_ctrl_c_while_ray_starts_stops_the_search_once_ray_has(monkeypatch, presses):
    """A Ctrl-C in the seconds while a local instance started stopped ``ray.init`` midway,
    before Ray knew of two of its agents: they were left running after the search. The first
    waits for Ray to start (and be shut down); a second stops at once."""
    import os
    import signal

    from autoshrink.stop_signals import SearchInterrupted

    started: list[bool] = []

    def init(**kw: Any) -> None:
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)
        started.append(True)

    shut = _starting_ray(monkeypatch, init)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SearchInterrupted) as stop:
        RayExecutor()._ray()
    assert stop.value.signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is before
    assert (started, shut) == (([True], [True]) if presses == 1 else ([], []))


def test_ray_factory_errors():
    with pytest.raises(ConfigError, match="use 'cuda'"):
        build_executor("ray", device="cuda:1")
    with pytest.raises(ConfigError, match=r"workers \(--workers\) is for executor 'pool'"):
        build_executor("ray", 2)
    assert isinstance(build_executor(None, ray_address="127.0.0.1:6379"), RayExecutor)


def test_an_address_where_nothing_listens_is_refused_by_the_probe():
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and is closed now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the probe's own refusal, not Ray's (which retries for minutes)
    with pytest.raises(ConfigError, match=rf"--ray-address 127.0.0.1:{port}: nothing answers"):
        probe_address(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="nothing answers"):
        probe_address(f"ray://127.0.0.1:{port}")
    probe_address("auto")  # no port: left to Ray
    for bad in ("bogus", "127.0.0.1:", ":6379", "127.0.0.1:port"):
        with pytest.raises(ConfigError, match=f"--ray-address {bad}: expected auto, local, HOST"):
            probe_address(bad)
    with pytest.raises(ConfigError, match=r"nothing answers there \(Connection refused\)"):
        probe_address(f"127.0.0.1:{port}")


def _serve_once(answer: bytes | None) -> tuple[Any, int]:
    """A server on a free port that answers one connection's first bytes with ``answer``
    (``None``: resets the connection once it has read them)."""
    import contextlib
    import socket
    import struct
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def reply() -> None:
        with contextlib.suppress(OSError):  # the client went, or the test closed the server
            conn, _ = server.accept()
            if answer is None:  # after the preface, a close with a linger of 0 s: a reset
                conn.recv(64)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            with conn:
                conn.recv(64)
                if answer:
                    conn.sendall(answer)
                conn.recv(64)  # until the client closes

    threading.Thread(target=reply, daemon=True).start()
    return server, server.getsockname()[1]


def test_an_address_whose_port_holds_another_service_is_refused_at_once(monkeypatch):
    settings = bytes([0, 0, 0x18, 4, 0, 0, 0, 0, 0])  # the frame a Ray GCS answered with
    server, port = _serve_once(settings)
    with server:
        probe_address(f"127.0.0.1:{port}")  # speaks gRPC: passes
    server, port = _serve_once(settings[:4])  # as far as the frame's type
    with server:
        probe_address(f"127.0.0.1:{port}")
    server, port = _serve_once(b"<!DOCTYPE HTML>\n<html>")  # a web server, say the dashboard's
    with server, pytest.raises(ConfigError, match=r"something listens there, but not a Ray clu"):
        probe_address(f"127.0.0.1:{port}")
    server, port = _serve_once(b"")  # listens and says nothing
    with server, pytest.raises(ConfigError, match=r"not a Ray cluster \(it said nothing;"):
        probe_address(f"ray://127.0.0.1:{port}", timeout=0.5)
    server, port = _serve_once(None)  # takes the connection and resets it
    with (
        server,
        pytest.raises(ConfigError, match=r"dropped the connection: (Connection reset|Broken pipe)"),
    ):
        probe_address(f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_USE_TLS", "1")  # TLS first: only the connection is tried
    server, port = _serve_once(b"")
    with server:
        probe_address(f"127.0.0.1:{port}", timeout=0.5)


@pytest.mark.slow
def test_ray_screens_progressively_like_the_inprocess_search(local_ray, tmp_path, one_thread):
    from autoshrink.screening import ScreeningStage
    from autoshrink.search import run_search
    from test_progressive_screening import prog_config, records, strip_seconds

    cfg = prog_config(nodes=3, k=2, screening_stages=(ScreeningStage(4, 1, 0.5),))
    run_search(tmp_path / "inproc", cfg, progress=False, executor=build_executor("inprocess"))
    run_search(tmp_path / "ray", cfg, progress=False, executor=RayExecutor())
    for kind in ("candidate", "stage"):
        want, got = (
            sorted(strip_seconds(records(tmp_path / run, kind)), key=lambda r: r["key"])
            for run in ("inproc", "ray")
        )
        assert got == want


def test_ray_waits_for_a_time_limit_of_years_in_steps():
    # ray.wait takes its timeout in milliseconds: one of 1e308 s overflowed
    from autoshrink.executors.base import MAX_WAIT_S
    from autoshrink.executors.ray_executor import _Batch

    for limit in (3e6, 1e308):
        batch = _Batch(lambda i: f"ref{i}", 2, limit, deque([0, 1]))
        batch.fill()
        assert batch.pending == {"ref0": 0, "ref1": 1}
        assert batch.wait_s() == MAX_WAIT_S
