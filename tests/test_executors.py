"""Executors: the local pool gives the in-process results, survives a dead worker, and says so.

A real tiny search (digits, 4-node cells, K = 2, 1 epoch, 1 torch thread) runs once in-process
as the reference (cached in pytest's session folder, so tests/test_ray.py and tests/test_report.py
reuse it). The pool then runs the same search with an evaluator wrapper that kills its worker
process (``os._exit``) on the first attempt at one candidate: the journal must hold the same
candidate records, one retry event for that candidate, and a resume must train nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import AutoshrinkError, ConfigError, HardwareError
from autoshrink.evaluators.base import Evaluation
from autoshrink.evaluators.factory import build_evaluator
from autoshrink.executors.base import InProcessExecutor, Job, WorkerError
from autoshrink.executors.factory import EXECUTORS, build_executor, default_executor
from autoshrink.executors.pool import LocalPoolExecutor, WorkerStartError
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.search import run_search
from autoshrink.search_loop import make_strategy
from autoshrink.spaces.cells import start_cell

# threads=1: torch's CPU reductions depend on the thread count, so in-process training matches
# the pool's and Ray's single-thread workers bit for bit only at one thread.
TINY = dict(
    nodes=4, k=2, keep_fraction=0.5, per_class=20, val_size=50, training_epochs=1, threads=1
)


def tiny_config() -> SearchConfig:
    return preset("demo", **TINY)


def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny search run in-process, once per test session."""
    run_dir = tmp_path_factory.getbasetemp() / "tiny-inprocess"
    if not (run_dir / "result.json").is_file():
        run_search(run_dir, tiny_config(), executor=InProcessExecutor(), progress=False)
    return run_dir


def journal(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]


def candidates(run_dir: Path) -> list[dict[str, Any]]:
    """Candidate records without their timing, in (step, index) order."""
    recs = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in journal(run_dir)
        if r["type"] == "candidate"
    ]
    return sorted(recs, key=lambda r: (r["step"], r["index"]))


def retries(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in journal(run_dir) if r["type"] == "event" and r["event"] == "retry"]


class CrashFirst:
    """Evaluator wrapper: the first ``times`` attempts at candidate ``key`` kill their process.

    Attempts are counted with files in ``marks`` (the worker processes share no memory).
    Never use it in-process: it would kill the test run.
    """

    def __init__(self, inner: Any, key: str, marks: Path, times: int = 1) -> None:
        self.inner, self.key, self.marks, self.times = inner, key, marks, times

    @property
    def device(self) -> str:
        return getattr(self.inner, "device", "cpu")

    def profile(self, genotype: Any) -> dict[str, float]:
        return self.inner.profile(genotype)

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if genotype.key == self.key:
            done = len(list(self.marks.glob("attempt-*")))
            if done < self.times:
                (self.marks / f"attempt-{done}").write_text(str(os.getpid()))
                os._exit(17)
        return self.inner.evaluate(genotype, seed)


class OutOfMemoryFirst(CrashFirst):
    """Evaluator wrapper: the first ``times`` attempts at candidate ``key`` fail for lack of
    memory, as the evaluators say it (a ``"failed"`` evaluation); counted with files in
    ``marks``, as the workers share no memory."""

    ERROR = "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if genotype.key == self.key:
            done = len(list(self.marks.glob("attempt-*")))
            if done < self.times:
                (self.marks / f"attempt-{done}").write_text(str(os.getpid()))
                return Evaluation(self.profile(genotype), "failed", 0.0, {"error": self.ERROR})
        return self.inner.evaluate(genotype, seed)


class Fake:
    """A training-free evaluator: accuracy from the seed; ``raise_on`` keys raise ValueError."""

    device = "cpu"

    def __init__(self, raise_on: str | None = None) -> None:
        self.raise_on = raise_on

    def profile(self, genotype: Any) -> dict[str, float]:
        return {"macs": 1000.0 * genotype.num_edges}

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if genotype.key == self.raise_on:
            raise ValueError(f"bad candidate {genotype.key}")
        return Evaluation({**self.profile(genotype), "accuracy": (seed % 97) / 97}, "ok", 0.0)


class RefusesInput(Fake):
    """``raise_on`` keys raise the bad-input error a latency table of another machine raises."""

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if genotype.key == self.raise_on:
            raise HardwareError("t.json: measured on AMD EPYC 9999, not on this machine")
        return super().evaluate(genotype, seed)


class _PathError(ConfigError):
    """A bad-input error whose ``__init__`` takes other arguments than its message."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")


class RefusesOddly(Fake):
    """``raise_on`` keys raise an error that cannot come out of the pipe as itself."""

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if genotype.key == self.raise_on:
            raise _PathError("t.json", "odd")
        return super().evaluate(genotype, seed)


def crash_target(reference: Path) -> str:
    """A step-1 candidate of the reference run: another candidate trains beside it."""
    return next(r["key"] for r in candidates(reference) if r["step"] == 1)


def run_with_crash(executor: Any, reference: Path, out: Path) -> str:
    """The tiny search through ``executor``, the worker under one candidate killed once."""
    key = crash_target(reference)
    marks = out.parent / f"{out.name}-marks"
    marks.mkdir()

    def factory(config: SearchConfig) -> CrashFirst:
        return CrashFirst(build_evaluator(config), key, marks)

    run_search(out, tiny_config(), evaluator_factory=factory, executor=executor, progress=False)
    assert len(list(marks.glob("attempt-*"))) == 1, "the crash did not happen"
    return key


def check_crash_run(run_dir: Path, reference: Path, key: str) -> None:
    """Same candidates as in-process, one journalled retry, and nothing trained on resume."""
    assert candidates(run_dir) == candidates(reference)
    events = retries(run_dir)
    assert [(e["key"], e["attempt"]) for e in events] == [(key, 1)]
    assert "died" in events[0]["reason"] or "Crashed" in events[0]["reason"]
    before = journal(run_dir)
    again = run_search(
        run_dir,
        resume=True,
        executor=InProcessExecutor(),
        progress=False,
        evaluator_factory=build_evaluator,
    )  # the crash only wrapped it
    assert again.trained == 0
    assert journal(run_dir) == before
    keys = [r["key"] for r in before if r["type"] == "candidate"]
    assert len(keys) == len(set(keys))  # nothing trained twice


@pytest.mark.slow
def test_pool_matches_inprocess_and_retries_a_killed_worker(tmp_path, tmp_path_factory):
    reference = reference_run(tmp_path_factory)
    key = run_with_crash(LocalPoolExecutor(2), reference, tmp_path / "pool")
    check_crash_run(tmp_path / "pool", reference, key)


def _jobs(n: int) -> list[Job]:
    cells = [cell for _, cell in make_strategy(tiny_config()).shrink_space()[:n]]
    return [Job(cell, 1000 + i) for i, cell in enumerate(cells)]


def test_pool_gives_up_after_max_retries(tmp_path):
    jobs = _jobs(3)
    bad = jobs[1].genotype.key
    evaluator = CrashFirst(Fake(), bad, tmp_path, times=99)
    seen: list[tuple[int, int, str]] = []
    pool = LocalPoolExecutor(2, max_retries=1)
    try:
        out = dict(pool.run(evaluator, jobs, on_retry=lambda *a: seen.append(a)))
    finally:
        pool.close()
    assert sorted(out) == [0, 1, 2]
    assert [out[i].status for i in (0, 1, 2)] == ["ok", "failed", "ok"]
    assert out[1].metrics == {"macs": 1000.0 * jobs[1].genotype.num_edges}  # cost kept
    assert out[1].detail["attempts"] == 2
    assert [(i, n) for i, n, _ in seen] == [(1, 1)]
    assert len(list(tmp_path.glob("attempt-*"))) == 2
    for i in (0, 2):  # the other candidates: exactly the in-process result
        assert out[i] == Fake().evaluate(jobs[i].genotype, jobs[i].seed)


def test_messages_of_a_lost_or_raising_candidate_name_its_cell(tmp_path, caplog):
    # they said "candidate 1": its place in the batch handed to the executor, which is not the
    # journal's index when a step's other candidates were done already (a resume mid-step) or
    # rejected by a constraint, and which no record or message of the search names otherwise
    jobs = _jobs(3)[1:]  # the step's candidates 1 and 2, say: positions 0 and 1 here
    bad = jobs[0].genotype.key
    with contextlib.closing(LocalPoolExecutor(1, max_retries=1)) as pool:
        with caplog.at_level(logging.WARNING, logger="autoshrink"):
            dict(pool.run(CrashFirst(Fake(), bad, tmp_path, times=99), jobs))
        assert f"candidate {bad}: worker " in caplog.text and "retry 1 of 1" in caplog.text
        assert "giving up after 1 retries" in caplog.text and "candidate 0" not in caplog.text
        with pytest.raises(WorkerError, match=f"^candidate {bad} raised in a pool worker"):
            list(pool.run(Fake(raise_on=bad), jobs))


@pytest.mark.parametrize(("times", "status"), [(1, "ok"), (99, "failed")])
def test_pool_trains_a_candidate_that_ran_out_of_memory_again(tmp_path, times, status):
    """A candidate that ran out of memory in a worker was recorded as failed at once, where
    in-process it trained again: memory another worker's candidate held may be free now."""
    jobs = _jobs(3)
    evaluator = OutOfMemoryFirst(Fake(), jobs[1].genotype.key, tmp_path, times=times)
    seen: list[tuple[int, int, str]] = []
    with contextlib.closing(LocalPoolExecutor(2, max_retries=2)) as pool:
        out = dict(pool.run(evaluator, jobs, on_retry=lambda *a: seen.append(a)))
    assert sorted(out) == [0, 1, 2] and out[1].status == status
    if status == "ok":  # the candidate's own result, from its seed
        assert out[1] == Fake().evaluate(jobs[1].genotype, jobs[1].seed)
    else:  # the last attempt's evaluation, after 2 retries, saying so
        assert out[1].detail == {"error": evaluator.ERROR, "attempts": 3}
    assert seen == [(1, n, evaluator.ERROR) for n in range(1, min(times, 2) + 1)]
    assert len(list(tmp_path.glob("attempt-*"))) == min(times, 3)
    for i in (0, 2):
        assert out[i] == Fake().evaluate(jobs[i].genotype, jobs[i].seed)


@pytest.mark.parametrize(
    ("evaluator", "raised", "says"),
    [
        # a worker's HardwareError was a WorkerError: 45 lines of traceback and exit 1, where
        # the in-process run said one line and exited 2
        (RefusesInput, HardwareError, "^t.json: measured on AMD EPYC 9999"),
        # one that cannot travel as itself was sent so: rebuilding it in the driver raised a
        # TypeError and leaked the worker; it comes back as its traceback
        (RefusesOddly, WorkerError, "_PathError: t.json: odd"),
    ],
)
def test_pool_raises_bad_input_as_itself_or_as_its_traceback(evaluator, raised, says):
    jobs = _jobs(3)
    pool = LocalPoolExecutor(1)
    try:
        with pytest.raises(raised, match=says):
            list(pool.run(evaluator(raise_on=jobs[1].genotype.key), jobs))
        assert len(list(pool.run(Fake(), jobs))) == 3  # still usable
    finally:
        pool.close()


class MarkedCost:
    """A cost that leaves a file in ``marks`` for each measurement (workers share no memory)."""

    name = "latency_ms"  # a constraint may bound it

    def __init__(self, marks: Path) -> None:
        self.marks = marks

    def __call__(self, genotype: Any) -> float:
        (self.marks / f"measured-{genotype.key}-{os.getpid()}").touch()
        return float(genotype.num_edges)


@pytest.mark.parametrize("executor", [InProcessExecutor, lambda: LocalPoolExecutor(2)])
def test_a_cost_known_to_the_job_is_not_measured_again(tmp_path, executor):
    # a measured latency a constraint had checked in the main process was measured again in
    # the pool worker that trained the candidate (and that second value was dropped)
    from autoshrink.evaluators.costed import CostedEvaluator

    jobs = _jobs(3)
    jobs[1] = Job(jobs[1].genotype, jobs[1].seed, {"latency_ms": 0.5, "macs": 1.0})
    run = executor()
    try:
        out = dict(run.run(CostedEvaluator(Fake(), [MarkedCost(tmp_path)]), jobs))
    finally:
        run.close()
    assert out[1].metrics["latency_ms"] == 0.5  # the known cost: other metrics are the evaluator's
    assert out[1].metrics["macs"] == 1000.0 * jobs[1].genotype.num_edges
    assert out[0].metrics["latency_ms"] == jobs[0].genotype.num_edges
    measured = sorted(p.name.split("-")[1] for p in tmp_path.glob("measured-*"))
    assert measured == sorted([jobs[0].genotype.key, jobs[2].genotype.key])


def test_a_search_measures_a_constrained_cost_once_in_the_main_process(tmp_path):
    # the constraint's check measured every candidate in the main process, then the pool
    # worker that trained it measured it again
    from autoshrink.evaluators.costed import CostedEvaluator

    marks = tmp_path / "marks"
    marks.mkdir()
    config = replace(tiny_config(), constraints={"latency_ms": 100.0})
    pool = LocalPoolExecutor(2)
    try:
        costed = CostedEvaluator(Fake(), [MarkedCost(marks)])
        run_search(tmp_path / "run", config, executor=pool, progress=False,
                   evaluator_factory=lambda c: costed)  # fmt: skip
    finally:
        pool.close()
    trained = [r["key"] for r in candidates(tmp_path / "run") if r["status"] == "ok"]
    measured = [p.name.split("-") for p in marks.glob("measured-*")]
    assert trained and sorted(key for _, key, _ in measured) == sorted(trained)
    assert {pid for _, _, pid in measured} == {str(os.getpid())}  # all in the main process


def test_pool_reraises_an_evaluator_error():
    jobs = _jobs(3)
    evaluator = Fake(raise_on=jobs[0].genotype.key)
    pool = LocalPoolExecutor(1)
    try:
        with pytest.raises(WorkerError, match="ValueError: bad candidate"):
            list(pool.run(evaluator, jobs))
        # the pool is still usable afterwards
        assert len(list(pool.run(evaluator, jobs[1:]))) == 2
    finally:
        pool.close()


def _refuse() -> None:
    raise RuntimeError("this evaluator cannot be loaded")


class Unloadable(Fake):
    """Pickles fine, fails to unpickle: a worker that dies while starting."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse, ())


def test_pool_worker_that_cannot_start_is_an_error_not_a_hang():
    pool = LocalPoolExecutor(2)
    try:  # its error exits the worker: the same on every start, so not started again
        with pytest.raises(WorkerStartError, match=r"failed while starting \(exit code 1\)"):
            list(pool.run(Unloadable(), _jobs(2)))
    finally:
        pool.close()
    assert isinstance(WorkerStartError("x"), AutoshrinkError)  # the command line: one line, 2


class HoldsALambda(Fake):
    """An evaluator that holds what pickle cannot take: a lambda."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = lambda x: x


def test_an_evaluator_that_does_not_pickle_is_named() -> None:
    """It was pickle's own error ("Can't pickle local object ..."), naming neither the evaluator
    nor why it is pickled; a worker that held another evaluator kept running, held by nobody."""
    pool = LocalPoolExecutor(1)
    says = (
        r"^the pool executor sends the evaluator to its worker processes, and HoldsALambda "
        r"does not pickle \(.+\); keep what it holds plain \(no lambda, open file or lock\)$"
    )
    try:
        with pytest.raises(TypeError, match=says):
            list(pool.run(HoldsALambda(), _jobs(2)))
        assert len(list(pool.run(Fake(), _jobs(2)))) == 2  # the pool goes on
        with pytest.raises(TypeError, match=says):  # a worker that holds another evaluator
            list(pool.run(HoldsALambda(), _jobs(2)))
        assert [w.process.is_alive() for w in pool._idle] == [True]
    finally:
        pool.close()


def _die_once(flag: str) -> Fake:
    if not os.path.exists(flag):  # the first worker to load it dies, as if killed from outside
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return Fake()


class DiesOnceWhileLoading(Fake):
    def __init__(self, flag: Path) -> None:
        super().__init__()
        self.flag = str(flag)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_die_once, (self.flag,))


def test_a_worker_killed_while_starting_is_started_again(tmp_path, caplog):
    pool = LocalPoolExecutor(1)
    try:
        done = dict(pool.run(DiesOnceWhileLoading(tmp_path / "died"), _jobs(2)))
    finally:
        pool.close()
    assert sorted(done) == [0, 1] and all(e.status == "ok" for e in done.values())
    assert (
        "a pool worker died while starting (exit code -9); starting again (1 of 2)" in caplog.text
    )


class AlwaysKilledWhileLoading(Fake):
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_killed, ())


def _killed() -> Fake:
    os.kill(os.getpid(), signal.SIGKILL)
    return Fake()


def test_workers_killed_at_every_start_stop_after_the_retries():
    pool = LocalPoolExecutor(1, max_retries=1)
    try:
        with pytest.raises(WorkerStartError, match=r"killed while starting, 2 times in a row"):
            list(pool.run(AlwaysKilledWhileLoading(), _jobs(1)))
    finally:
        pool.close()


def test_the_count_of_starts_killed_in_a_row_begins_again_after_a_good_start(caplog):
    pool = LocalPoolExecutor(1, max_retries=1)
    try:
        assert [e.status for _, e in pool.run(Fake(), _jobs(1))] == ["ok"]
        caplog.clear()  # the worker that started well reset the count: one more start is tried
        with pytest.raises(WorkerStartError, match=r"killed while starting, 2 times in a row"):
            list(pool.run(AlwaysKilledWhileLoading(), _jobs(1)))
    finally:
        pool.close()
    assert "starting again (1 of 1)" in caplog.text


def test_factory_defaults_and_errors():
    assert {"inprocess", "pool", "ray"} <= set(EXECUTORS)
    assert default_executor("cpu") == "pool"  # measured: benchmarks/bench_executors.py
    assert isinstance(build_executor(None, device="cpu"), LocalPoolExecutor)
    assert isinstance(build_executor("inprocess"), InProcessExecutor)
    assert build_executor("pool", 3, max_retries=0).workers == 3
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        build_executor("dask")
    with pytest.raises(ConfigError, match=r"^workers \(--workers\) must be >= 1, got 0$"):
        build_executor("pool", 0)  # the library's argument and the CLI's flag: "--workers" only
    assert build_executor("pool", 1).workers == 1
    for name in ("inprocess", "batched"):  # they train in this process: workers mean nothing
        says = f"workers (--workers) is for executor 'pool' (--executor pool); '{name}' trains in"
        with pytest.raises(ConfigError, match=re.escape(says)):
            build_executor(name, 2)
    with pytest.raises(ConfigError, match=re.escape("ray_address (--ray-address) needs executor")):
        build_executor("pool", ray_address="10.0.0.1:6379")


@pytest.mark.parametrize(
    ("arguments", "says"),
    [  # each named only the CLI's flag ("--workers is for --executor pool"): a library call
        # names its arguments, the flags in brackets, as workers < 1 does
        ({"name": "ray", "workers": 2}, "workers (--workers) is for executor 'pool' (--executor "
         "pool); Ray runs as many"),
        ({"name": "ray", "device": "cuda:1"}, "device (--device) 'cuda:1': with executor 'ray' "
         "use 'cuda'; Ray gives each"),
        ({"name": "pool", "ray_address": "10.0.0.1:6379"}, "ray_address (--ray-address) needs "
         "executor 'ray' (--executor ray), not 'pool'"),
        ({"name": "pool", "precision": "bf16"}, "precision, cuda_graph and depthwise "
         "(--precision, --cuda-graph, --depthwise) set the batched engine; the executor is "
         "'pool', not 'batched' (--executor batched, the default with device 'cuda')"),
        ({"name": "batched", "cuda_graph": True}, "cuda_graph (--cuda-graph) needs device "
         "'cuda' (--device cuda), not 'cpu'"),
        ({"name": "batched", "depthwise": "triton"}, "depthwise (--depthwise) 'triton' chooses "
         "CUDA kernels; device (--device) is 'cpu'"),
        ({"name": "inprocess", "candidate_timeout": 5.0}, "candidate_timeout "
         "(--candidate-timeout) needs executor 'pool' or 'ray' (--executor), which kill a "
         "candidate's worker; 'inprocess' trains in this process and cannot stop a candidate"),
    ],
)  # fmt: skip
def test_build_executor_names_its_arguments_and_their_flags(arguments, says) -> None:
    with pytest.raises(ConfigError) as caught:
        build_executor(**arguments)
    assert str(caught.value).startswith(says), caught.value
    for bad in (-1, True, 1.0):  # a bool or a float is no count of retries
        with pytest.raises(ConfigError, match=f"max_retries must be an integer >= 0, got {bad}"):
            build_executor("pool", max_retries=bad)


@pytest.mark.parametrize("name", ["inprocess", "batched"])
@pytest.mark.parametrize("bad", [-1, None, "2"])
def test_every_executor_refuses_a_bad_count_of_retries_when_it_is_made(name, bad):
    # the in-process and batched executors took any value, and the first candidate that ran out
    # of memory, mid-search, ended it in a TypeError ('>' not supported ...), or -1 gave up at once
    says = f"max_retries must be an integer >= 0, got {bad!r}"
    with pytest.raises(ConfigError, match=re.escape(says)):
        build_executor(name, max_retries=bad)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_a_pool_of_no_workers_is_refused_when_it_is_made(bad):
    # -1 waited for ever on no worker at the first batch; 0 became one worker per core
    says = f"workers must be an integer >= 1, got {bad!r}"
    with pytest.raises(ConfigError, match=re.escape(says)):
        LocalPoolExecutor(bad)


@pytest.mark.parametrize("method", ["evaluate_many", "evaluate_iter"])
def test_the_batched_executor_hands_a_batching_evaluator_the_whole_batch(method):
    """An evaluator that batches itself (either method) gets all jobs in one call; one that
    does not is trained one job at a time."""
    from autoshrink.executors.batched import BatchedExecutor

    def result(seed: int) -> Evaluation:
        return Evaluation({"accuracy": seed / 10, "macs": 1.0, "params": 1.0}, "ok")

    class Plain:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def profile(self, cell):
            return {"macs": 1.0, "params": 1.0}

        def evaluate(self, cell, seed):
            self.calls.append(("evaluate", 1))
            return result(seed)

    class Many(Plain):
        def evaluate_many(self, cells, seeds):
            self.calls.append(("evaluate_many", len(cells)))
            return [result(s) for s in seeds]

    class Iter(Plain):
        def evaluate_iter(self, cells, seeds):
            self.calls.append(("evaluate_iter", len(cells)))
            return reversed(list(enumerate(map(result, seeds))))  # as each candidate stops

    full = Cell.complete("cnn", ("input", "sep3x3", "conv1x1", "sep3x3"))
    jobs = [Job(full.remove_edge(e), seed) for seed, e in enumerate(full.edges[:3], 1)]
    ev = Many() if method == "evaluate_many" else Iter()
    out = dict(BatchedExecutor().run(ev, jobs))
    assert [out[i].metrics["accuracy"] for i in range(3)] == [0.1, 0.2, 0.3]
    assert ev.calls == [(method, 3)]
    plain = Plain()
    assert len(dict(BatchedExecutor().run(plain, jobs))) == 3
    assert plain.calls == [("evaluate", 1)] * 3


def test_missing_ray_says_how_to_install(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    hint = 'pip install -e ".[ray]" in a clone of autoshrink'  # it is not on PyPI
    with pytest.raises(ConfigError, match=re.escape(hint)):
        build_executor("ray")
    code, _, err = cli("search", "--executor", "ray", "--out", tmp_path / "run")
    assert code == 2
    assert err.count("\n") == 1 and hint in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


class WhoAmI:
    """Reports the worker process and its own name: which evaluator ran where."""

    def __init__(self, name: str) -> None:
        self.name = name

    def profile(self, genotype: Any) -> dict[str, float]:
        return {}

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        return Evaluation({"pid": float(os.getpid())}, "ok", 0.0, {"name": self.name})


def test_pool_workers_keep_several_evaluators_without_restarting(monkeypatch):
    jobs = _jobs(4)
    evaluators = [WhoAmI(n) for n in ("full", "stage", "other", "fourth")]  # 4 are kept
    with contextlib.closing(LocalPoolExecutor(2)) as pool:
        loads: list[str] = []
        load = pool._load
        monkeypatch.setattr(
            pool, "_load", lambda w, slot, ev: loads.append(ev.name) or load(w, slot, ev)
        )
        pids: set[float] = set()
        for evaluator in [*evaluators, evaluators[0], evaluators[1]]:  # alternate, as stages do
            out = dict(pool.run(evaluator, jobs))
            assert {e.detail["name"] for e in out.values()} == {evaluator.name}
            pids |= {e.metrics["pid"] for e in out.values()}
        assert len(pids) == 2  # the same two workers served every evaluator
        assert sorted(loads) == sorted(e.name for e in evaluators for _ in range(2))  # once each


class InterruptsItself(Fake):
    """Sends its process a SIGINT, as a terminal's Ctrl-C reaches every worker of the pool."""

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        os.kill(os.getpid(), signal.SIGINT)
        return super().evaluate(genotype, seed)


def test_pool_workers_leave_ctrl_c_to_the_driver():
    cell = start_cell("cnn", 3, random.Random(0))
    retried: list[str] = []
    with contextlib.closing(LocalPoolExecutor(1)) as pool:
        out = list(pool.run(InterruptsItself(), [Job(cell, 5)], lambda *a: retried.append(a[2])))
    assert retried == [] and [e.status for _, e in out] == ["ok"]


class ShowsNoBarThenWaits(Fake):
    """Makes a disabled tqdm bar, as the RNN proxy training does in a worker, says so in the
    file ``marker`` and waits, so that the driver abandons it busy."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        import time

        from tqdm import tqdm

        with tqdm(total=1, disable=True):
            Path(self.marker).write_text("busy")
            time.sleep(60)
        return super().evaluate(genotype, seed)


ABANDON_A_BUSY_WORKER = """
import random, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_executors import ShowsNoBarThenWaits
from autoshrink.executors.base import Job
from autoshrink.executors.pool import LocalPoolExecutor
from autoshrink.spaces.cells import start_cell

def stop_once_busy(*_):
    if not Path(sys.argv[2]).exists():
        signal.alarm(1)
        return
    raise KeyboardInterrupt  # as a Ctrl-C: the driver stops, the busy worker is killed

signal.signal(signal.SIGALRM, stop_once_busy)
signal.alarm(1)
pool = LocalPoolExecutor(1)
try:
    cell = start_cell("cnn", 3, random.Random(0))
    list(pool.run(ShowsNoBarThenWaits(sys.argv[2]), [Job(cell, 5)]))
except KeyboardInterrupt:
    pool.close()
    print("stopped")
"""


def test_a_worker_killed_busy_leaks_no_semaphore_of_a_progress_bar(tmp_path: Path) -> None:
    """A Ctrl-C on an RNN search on the pool ended with resource_tracker's "There appear to be
    2 leaked semaphore objects" after the stop message: tqdm's lock, made in the worker by a
    bar even when disabled, is a multiprocessing one, and the worker was killed holding it."""
    import subprocess

    marker = tmp_path / "busy"
    done = subprocess.run(
        [sys.executable, "-c", ABANDON_A_BUSY_WORKER, str(Path(__file__).parent), str(marker)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.strip() == "stopped", done.stdout + done.stderr
    assert "leaked semaphore" not in done.stderr, done.stderr


def test_executor_for_builds_what_the_config_execution_says():
    from autoshrink.config import ExecutionSettings
    from autoshrink.executors.factory import executor_for

    with contextlib.closing(executor_for(ExecutionSettings(), "cpu")) as pool:
        assert isinstance(pool, LocalPoolExecutor)  # the command line's CPU default
    chosen = executor_for(ExecutionSettings(executor="inprocess"), "cpu")
    assert isinstance(chosen, InProcessExecutor)
    with pytest.raises(ConfigError, match="unknown executor 'nope'"):
        executor_for(ExecutionSettings(executor="nope"), "cpu")


class _RayThatTakesSigterm:
    """``ray`` as far as connecting goes: its ``init`` installs its own SIGTERM handler, as
    the real one does (``sys.exit``; its native handler then aborts the process)."""

    class exceptions:  # noqa: N801 (the module's attribute)
        RayError = RuntimeError

    def __init__(self) -> None:
        self.initialised = False

    def is_initialized(self) -> bool:
        return self.initialised

    def init(self, address: str | None = None) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        self.initialised = True


def test_connecting_to_ray_keeps_the_searchs_signal_handlers(monkeypatch) -> None:
    from autoshrink.executors.ray_executor import RayExecutor
    from autoshrink.stop_signals import StopSignals

    monkeypatch.setitem(sys.modules, "ray", _RayThatTakesSigterm())
    with StopSignals() as signals:
        RayExecutor()._ray()
        assert signal.getsignal(signal.SIGTERM) == signals._handle  # a clean stop, not an abort
        assert signal.getsignal(signal.SIGINT) == signals._handle


class _FakeRay(_RayThatTakesSigterm):
    """``ray`` as far as connecting and shutting down go: ``init`` raises ``fails`` (if any),
    ``shutdown`` is counted."""

    def __init__(self, fails: Exception | None = None) -> None:
        super().__init__()
        self.fails, self.shutdowns = fails, 0

    def init(self, address: str | None = None) -> None:
        if self.fails is not None:
            raise self.fails
        self.initialised = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialised = False


def test_a_ray_that_cannot_be_reached_is_one_line_naming_where(monkeypatch) -> None:
    from autoshrink.executors.ray_executor import RayExecutor

    for address, error, said in (
        (None, ConnectionError("no cluster\nits details"), "no cluster"),
        ("auto", RuntimeError(""), ""),
    ):
        ray = _FakeRay(fails=error)
        monkeypatch.setitem(sys.modules, "ray", ray)
        executor = RayExecutor(address)
        where = address or "auto (a new local instance if none is running)"
        with pytest.raises(ConfigError) as caught:
            executor._ray()
        assert str(caught.value).startswith(
            f"--ray-address {where}: cannot connect to Ray ({said}); with token authentication"
        )
        executor.close()
        assert ray.shutdowns == 0  # it started nothing


def test_a_ray_executor_shuts_down_the_ray_it_started_and_only_that(monkeypatch) -> None:
    from autoshrink.executors.ray_executor import RayExecutor

    ray = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    executor = RayExecutor()
    executor._ray()
    executor.close()
    executor.close()
    assert ray.shutdowns == 1
    ray.init()  # a Ray someone else started: left running
    executor = RayExecutor()
    executor._ray()
    executor.close()
    assert ray.shutdowns == 1 and ray.initialised


def test_a_sigterm_that_a_library_turns_into_keyboardinterrupt_stays_a_sigterm(tmp_path):
    from autoshrink.journal import Journal
    from autoshrink.search import interrupted
    from autoshrink.stop_signals import SearchInterrupted, StopSignals

    with StopSignals() as signals, pytest.raises(SearchInterrupted):
        signals._handle(signal.SIGTERM, None)
    assert signals.received == signal.SIGTERM
    plain = KeyboardInterrupt()  # what Ray's wait raises in its place
    stop = interrupted(plain, Journal(tmp_path / "journal.jsonl"), tmp_path, signals.received)
    assert stop.signum == signal.SIGTERM and "stopped by SIGTERM" in str(stop)


class LogsWhileEvaluating(Fake):
    """Logs one line at INFO per candidate, as an evaluator of the package would."""

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        logging.getLogger("autoshrink.test").info("evaluating %s", genotype.key)
        return super().evaluate(genotype, seed)


def test_pool_workers_log_as_the_driver_does(monkeypatch, capfd):
    """Workers had no logging set up: their warnings came without level and name, and their
    info and debug lines were lost (with -v too)."""
    import autoshrink.executors.pool as pool_module

    fmt = "worker-test %(levelname)s %(name)s: %(message)s"
    monkeypatch.setattr(pool_module, "driver_logging", lambda: (logging.INFO, fmt))
    jobs = _jobs(2)
    pool = LocalPoolExecutor(1)
    try:
        assert len(list(pool.run(LogsWhileEvaluating(), jobs))) == 2
    finally:
        pool.close()
    err = capfd.readouterr().err
    for job in jobs:
        assert f"worker-test INFO autoshrink.test: evaluating {job.genotype.key}" in err


def test_driver_logging_reads_the_command_lines_set_up(monkeypatch):
    """What a worker is told: the package's level and the console handler's format, also
    while the command line writes its lines above the progress bars."""
    from autoshrink.cli import LOG_FORMAT, configure_logging, lines_above_bars
    from autoshrink.executors.pool import driver_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(sys.stderr)])
    for name in ("autoshrink", "matplotlib"):  # the levels it sets, given back after the test
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    root.handlers[0].setFormatter(logging.Formatter(LOG_FORMAT))
    configure_logging(verbose=True)
    assert driver_logging() == (logging.DEBUG, LOG_FORMAT)
    with lines_above_bars():  # the console handler is replaced by tqdm's, same format
        assert driver_logging() == (logging.DEBUG, LOG_FORMAT)


def test_a_pool_worker_dies_with_a_driver_killed_outright() -> None:
    """A search killed by ``kill -9`` (or the OOM killer) left its pool workers training on,
    orphaned, until their candidate ended -- minutes at the paper's sizes."""
    import subprocess
    import textwrap
    import time

    code = textwrap.dedent(
        """
        import multiprocessing as mp, os, time
        from autoshrink.processes import die_with_parent

        def work():
            die_with_parent()  # what a pool worker does first
            print(os.getpid(), flush=True)
            time.sleep(60)

        child = mp.get_context("fork").Process(target=work)
        child.start()
        time.sleep(60)
        """
    )
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    worker = int(driver.stdout.readline())
    try:
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that no one reaps has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_drivers_torch_work_runs_on_the_threads_of_the_candidates(tmp_path, monkeypatch):
    """With the pool (one thread a candidate) and no ``threads`` set, the zero-cost ranker ran
    in the driver on torch's default threads: its snip scores then differed from an in-process
    run's on one thread, and from a resume's."""
    from autoshrink.evaluators import zero_cost

    asked: list[int | None] = []
    made = zero_cost.ZeroCostRanker.__init__

    def spy(self, *args: Any, **kwargs: Any) -> None:
        asked.append(kwargs["threads"])
        made(self, *args, **kwargs)

    monkeypatch.setattr(zero_cost.ZeroCostRanker, "__init__", spy)

    class OneThreadEach(InProcessExecutor):
        candidate_threads = 1  # as LocalPoolExecutor's

    config = replace(tiny_config(), threads=None, screening="zero-cost", zc_proxy="snip")
    run_search(tmp_path / "r", config, executor=OneThreadEach(), progress=False)
    assert asked == [1]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["threads"] is None
    assert LocalPoolExecutor.candidate_threads == 1  # what the pool's workers run on
    from autoshrink.executors.ray_executor import RayExecutor

    assert RayExecutor(cpus_per_task=2).candidate_threads == 2  # a Ray task's CPUs


#: How long :class:`WaitsForGo` jobs wait for their go, and the test for them to end: a worker
#: (a Ray worker that imports torch) can take a minute to start on a loaded machine.
GO_WAIT_S = 300


class WaitsForGo(Fake):
    """Jobs other than the first wait for the file ``go``; ``raise_on`` keys then raise. Each
    job that waited leaves the file ``go.SEED`` as it ends."""

    def __init__(self, go: str, raise_on: str) -> None:
        super().__init__(raise_on)
        self.go = Path(go)

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if seed == 1000:  # the first job of _jobs
            return super().evaluate(genotype, seed)
        deadline = time.monotonic() + GO_WAIT_S
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            return super().evaluate(genotype, seed)
        finally:
            self.go.with_suffix(f".{seed}").touch()


def finish_together(go: Path, seeds: list[int]) -> None:
    """Let the jobs of :class:`WaitsForGo` go on, and return once those of ``seeds`` ended."""
    go.touch()
    deadline = time.monotonic() + GO_WAIT_S
    while not all(go.with_suffix(f".{s}").exists() for s in seeds):
        assert time.monotonic() < deadline, f"jobs {seeds} did not all end in {GO_WAIT_S} s"
        time.sleep(0.01)
    time.sleep(0.5)  # their replies are on their way


def test_a_result_that_ends_beside_a_raising_candidate_is_yielded_before_the_error(tmp_path):
    # two workers that finish in one wake-up of the pool, the first (in job order) raising: the
    # other's finished evaluation was dropped with the error (trained again on resume)
    jobs = _jobs(3)
    go = tmp_path / "go"
    pool = LocalPoolExecutor(3)
    try:
        results = pool.run(WaitsForGo(str(go), raise_on=jobs[1].genotype.key), jobs)
        assert next(results)[0] == 0  # the pool now waits in this generator, not in wait()
        finish_together(go, [1001, 1002])  # both other workers reply before the pool looks
        assert next(results)[0] == 2
        with pytest.raises(WorkerError, match=f"^candidate {jobs[1].genotype.key} raised"):
            next(results)
    finally:
        pool.close()


#: A candidate that hangs sleeps this long (the tests' time limits are far below it).
HANG_S = 120.0
#: The time limit of the tests: far below HANG_S, far above a Fake evaluation.
LIMIT_S = 0.5


class Hangs(Fake):
    """``hang_on`` keys hang (sleep :data:`HANG_S`): a deadlocked data loader, a kernel that
    never returns. With ``marks``, only the first candidate of fewer than ``edges_below`` edges
    to claim the file ``marks/hung`` hangs (the workers share no memory), each attempt at it
    leaving a file ``marks/attempt-PID``."""

    def __init__(
        self, hang_on: str | None = None, marks: str | None = None, edges_below: int = 0
    ) -> None:
        super().__init__()
        self.hang_on, self.marks, self.edges_below = hang_on, marks, edges_below

    def _hangs(self, genotype: Any) -> bool:
        if self.marks is None:
            return genotype.key == self.hang_on
        hung = Path(self.marks) / "hung"
        if not (hung.exists() and hung.read_text() == genotype.key):
            if genotype.num_edges >= self.edges_below:
                return False
            try:
                with open(hung, "x") as f:
                    f.write(genotype.key)
            except FileExistsError:  # another candidate hangs
                return False
        (hung.parent / f"attempt-{os.getpid()}-{time.monotonic_ns()}").touch()
        return True

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        if self._hangs(genotype):
            time.sleep(HANG_S)
        return super().evaluate(genotype, seed)


def test_pool_kills_a_candidate_past_its_time_limit_and_goes_on(tmp_path):
    jobs = _jobs(4)
    hung = jobs[1].genotype.key
    seen: list[tuple[int, int, str]] = []
    with contextlib.closing(LocalPoolExecutor(2, candidate_timeout=LIMIT_S)) as pool:
        t0 = time.monotonic()
        out = dict(pool.run(Hangs(hung), jobs, on_retry=lambda *a: seen.append(a)))
        assert time.monotonic() - t0 < HANG_S / 2  # it did not wait for the hang
        assert sorted(out) == [0, 1, 2, 3] and seen == []  # not retried: it would hang again
        assert out[1].status == "failed"
        assert out[1].detail == {
            "error": f"timed out after {LIMIT_S:g} s (1 attempt)",
            "attempts": 1,
        }
        assert out[1].metrics == {"macs": 1000.0 * jobs[1].genotype.num_edges}  # cost kept
        assert out[1].seconds == LIMIT_S  # the time it took, as the report sums it (not 0)
        for i in (0, 2, 3):  # the others: exactly their own results
            assert out[i] == Fake().evaluate(jobs[i].genotype, jobs[i].seed)
        # the killed worker was replaced: the pool trains the next batch in full
        again = dict(pool.run(Fake(), jobs))
        assert again == {i: Fake().evaluate(j.genotype, j.seed) for i, j in enumerate(jobs)}
        assert len(pool._idle) == 2 and all(w.process.is_alive() for w in pool._idle)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "5"])
def test_a_bad_candidate_timeout_is_refused_when_the_pool_is_made(bad):
    with pytest.raises(ConfigError, match=r"^candidate_timeout must be a finite number"):
        LocalPoolExecutor(1, candidate_timeout=bad)


@pytest.mark.slow
def test_a_timed_out_candidate_is_journalled_failed_kept_on_resume_and_retried_on_request(
    tmp_path,
):
    marks = tmp_path / "marks"
    marks.mkdir()
    config = tiny_config()
    complete = config.nodes * (config.nodes - 1) // 2  # the first to hang: one of step 1

    def factory(_: SearchConfig) -> Hangs:
        return Hangs(marks=str(marks), edges_below=complete)

    def search(executor: Any, **kw: Any) -> Any:
        return run_search(
            tmp_path / "run", None if kw else config, evaluator_factory=factory,
            executor=executor, progress=False, **kw,
        )  # fmt: skip

    result = search(LocalPoolExecutor(2, candidate_timeout=LIMIT_S))
    assert result.stopped is None  # the search went on past the failed candidate
    hung = (marks / "hung").read_text()
    records = [r for r in candidates(tmp_path / "run") if r["key"] == hung]
    assert [(r["step"], r["status"], r["score"]) for r in records] == [(1, "failed", None)]
    assert records[0]["detail"]["error"] == f"timed out after {LIMIT_S:g} s (1 attempt)"
    assert [r["seconds"] for r in journal(tmp_path / "run") if r.get("key") == hung] == [LIMIT_S]
    assert len(list(marks.glob("attempt-*"))) == 1 and retries(tmp_path / "run") == []
    before = journal(tmp_path / "run")
    # in this process, where it would hang for HANG_S: it is not trained again
    assert search(InProcessExecutor(), resume=True).trained == 0
    assert journal(tmp_path / "run") == before and len(list(marks.glob("attempt-*"))) == 1
    again = search(LocalPoolExecutor(2, candidate_timeout=LIMIT_S), resume=True, retry_failed=True)
    assert again.trained >= 1
    assert len(list(marks.glob("attempt-*"))) == 2  # it ran again, and hung again
    last = [r for r in candidates(tmp_path / "run") if r["key"] == hung][-1]
    assert last["status"] == "failed" and "timed out" in last["detail"]["error"]


def test_a_time_limit_of_years_waits_in_steps_the_operating_system_takes(tmp_path):
    # multiprocessing's wait() raised OverflowError past ~24.8 days (poll's milliseconds in a
    # C int), so a --candidate-timeout of 3e6 s (35 days) ended the search in a traceback
    jobs = _jobs(2)
    for limit in (3e6, 1e308):
        with contextlib.closing(LocalPoolExecutor(1, candidate_timeout=limit)) as pool:
            out = dict(pool.run(Fake(), jobs))
        assert out == {i: Fake().evaluate(j.genotype, j.seed) for i, j in enumerate(jobs)}


def _marks_its_teardown(path: str) -> Fake:
    import atexit

    atexit.register(lambda: open(path, "w").close())  # runs only in the interpreter's teardown
    return Fake()


class MarksItsTeardown(Fake):
    """Unpickles into a worker that writes ``path`` if its interpreter tears down at exit."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_marks_its_teardown, (self.path,))


def test_a_closed_pool_worker_exits_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """Torch's teardown took each worker about half a second, which the driver waited for at
    the end of every search."""
    pool = LocalPoolExecutor(1)
    try:
        assert [e.status for _, e in pool.run(MarksItsTeardown(tmp_path / "torn"), _jobs(1))] == [
            "ok"
        ]
        workers = list(pool._idle)
    finally:
        pool.close()
    assert [w.process.exitcode for w in workers] == [0]
    assert not (tmp_path / "torn").exists()


def test_a_batch_smaller_than_the_pool_starts_the_whole_pool(monkeypatch) -> None:
    """A search's step 0 trains one cell: the second worker used to start only with step 1,
    which waited for it while the first sat idle (benchmarks/bench_pool_lifecycle.py)."""
    with contextlib.closing(LocalPoolExecutor(2)) as pool:
        starts: list[int] = []
        start = pool._start_once
        monkeypatch.setattr(
            pool, "_start_once", lambda slot, ev, n: starts.append(n) or start(slot, ev, n)
        )
        evaluator = WhoAmI("full")
        assert len(list(pool.run(evaluator, _jobs(1)))) == 1
        assert starts == [2] and len(pool._idle) == 2
        pids = {e.metrics["pid"] for _, e in pool.run(evaluator, _jobs(4))}
        assert starts == [2] and pids == {float(w.process.pid) for w in pool._idle}
