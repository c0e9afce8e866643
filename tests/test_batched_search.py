"""The batched evaluator and executor: same results as one-by-one evaluation, wired into search."""

from __future__ import annotations

import json
import random

import pytest
import torch

from autoshrink.data.images import load_images, proxy_split
from autoshrink.errors import ConfigError
from autoshrink.evaluators import cnn_proxy
from autoshrink.evaluators.batched import BatchedCNNEvaluator
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.executors.base import Job
from autoshrink.executors.batched import BatchedExecutor
from autoshrink.executors.factory import build_executor
from autoshrink.graph import Cell
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.proxy_settings import ProxyTraining

SPEC = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25)
TRAINING = ProxyTraining(epochs=1, batch_size=32)
PARENT = start_cell("cnn", 5, random.Random(3))
CELLS = [PARENT.remove_edge(e) for e in PARENT.edges[:3]]
SEEDS = [5, 6, 7]
VAL = 50

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def split():
    return proxy_split(load_images("digits"), per_class=10, val_size=VAL, seed=0)


@pytest.mark.parametrize("evaluator", [CNNProxyEvaluator, BatchedCNNEvaluator])
def test_an_evaluator_restores_the_callers_thread_count(split, evaluator) -> None:
    """``threads`` holds while a candidate trains, not after: an in-process search leaves the
    caller's torch thread count as it was."""
    seen: set[int] = set()
    loss = torch.nn.functional.cross_entropy

    def spy(*args, **kwargs):
        seen.add(torch.get_num_threads())
        return loss(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "cross_entropy", spy)
        evaluator(split, SPEC, TRAINING, threads=2).evaluate(CELLS[0], 0)
    assert torch.get_num_threads() == 1  # the one_thread fixture's
    assert seen == {2}


def assert_same(batched, alone):
    assert batched.status == alone.status

    def plain(detail):
        return {k: v for k, v in detail.items() if k != "batch"}

    assert plain(batched.detail) == plain(alone.detail)
    for key in ("macs", "params"):
        assert batched.metrics[key] == alone.metrics[key]
    assert abs(batched.metrics["accuracy"] - alone.metrics["accuracy"]) <= 2 / VAL


def test_evaluate_many_matches_the_one_by_one_evaluator(split):
    alone = CNNProxyEvaluator(split, SPEC, TRAINING)
    batched = BatchedCNNEvaluator(split, SPEC, TRAINING)
    results = batched.evaluate_many(CELLS, SEEDS)
    assert [r.detail["batch"] for r in results] == [3, 3, 3]
    for cell, seed, result in zip(CELLS, SEEDS, results, strict=True):
        assert_same(result, alone.evaluate(cell, seed))
    # in chunks of two (the last one alone), each built as the complete cell: the same results
    chunked = BatchedCNNEvaluator.from_proxy(alone, max_batch=2, fixed_structure=True)
    chunked = chunked.evaluate_many(CELLS, SEEDS)
    assert [r.detail["batch"] for r in chunked] == [2, 2, 1]
    for a, b in zip(chunked, results, strict=True):
        assert_same(a, b)


def test_mixed_ops_are_grouped_and_other_ops_trained_one_by_one(split):
    other_ops = Cell("cnn", ("input", "conv1x1", "conv1x1", "sep3x3", "sep3x3"), [(0, 1), (1, 2)])
    unstackable = Cell("cnn", ("input", "conv3x3", "conv1x1"), [(0, 1), (1, 2)])
    cells, seeds = [CELLS[0], unstackable, other_ops, CELLS[1]], [1, 2, 3, 4]
    batched = BatchedCNNEvaluator(split, SPEC, TRAINING)
    results = batched.evaluate_many(cells, seeds)
    assert [r.detail.get("batch") for r in results] == [2, None, 1, 2]
    alone = CNNProxyEvaluator(split, SPEC, TRAINING)
    ref = alone.evaluate(unstackable, 2)  # the same code path: the very same result
    assert (results[1].metrics, results[1].detail) == (ref.metrics, ref.detail)
    assert_same(results[2], alone.evaluate(other_ops, 3))


def test_a_failing_group_is_retried_in_halves_down_to_the_plain_loop(split, monkeypatch):
    batched = BatchedCNNEvaluator(split, SPEC, TRAINING)
    real = BatchedCNNEvaluator._train

    def fails_together(self, cells, seeds):
        if len(cells) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        yield from real(self, cells, seeds)

    monkeypatch.setattr(BatchedCNNEvaluator, "_train", fails_together)
    results = batched.evaluate_many(CELLS, SEEDS)
    assert [r.status for r in results] == ["ok"] * 3
    assert [r.detail["batch"] for r in results] == [1, 1, 1]

    def always_fails(*args, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(BatchedCNNEvaluator, "_train", always_fails)  # the stacked engine
    monkeypatch.setattr(cnn_proxy, "train_proxy", always_fails)  # and the plain loop
    results = batched.evaluate_many(CELLS[:2], SEEDS[:2])
    assert [r.status for r in results] == ["failed", "failed"]
    assert results[0].detail == {"error": "RuntimeError: broken", "batch": 1}
    assert results[0].metrics["macs"] > 0


def test_a_single_candidate_trains_as_a_stack_of_one_where_cuda_graphs_replay_it(
    split, monkeypatch
):
    def evaluator(device, **options):
        return BatchedCNNEvaluator(split, SPEC, TRAINING, device=device, **options)

    assert evaluator("cuda").stacks_single and evaluator("cuda:1").stacks_single
    assert evaluator("cuda", cuda_graph=True).stacks_single
    assert not evaluator("cuda", cuda_graph=False).stacks_single  # the plain loop
    assert not evaluator("cpu").stacks_single
    monkeypatch.setattr(BatchedCNNEvaluator, "stacks_single", True)  # the routing, on the CPU
    sizes = []
    real = BatchedCNNEvaluator._train
    monkeypatch.setattr(
        BatchedCNNEvaluator, "_train", lambda self, c, s: sizes.append(len(c)) or real(self, c, s)
    )
    got = evaluator("cpu").evaluate(PARENT, 5)
    assert sizes == [1] and got.detail["batch"] == 1
    assert_same(got, CNNProxyEvaluator(split, SPEC, TRAINING).evaluate(PARENT, 5))


def test_the_executor_batches_a_proxy_evaluator_and_runs_others_one_by_one(split):
    executor = BatchedExecutor()
    jobs = [Job(c, s) for c, s in zip(CELLS, SEEDS, strict=True)]
    out = dict(executor.run(CNNProxyEvaluator(split, SPEC, TRAINING), jobs))
    assert sorted(out) == [0, 1, 2] and all(r.detail["batch"] == 3 for r in out.values())

    class Lookup:
        def profile(self, genotype):
            return {}

        def evaluate(self, genotype, seed):
            from autoshrink.evaluators.base import Evaluation

            return Evaluation({"accuracy": seed / 10})

    out = list(executor.run(Lookup(), jobs))
    assert [(i, e.metrics["accuracy"]) for i, e in out] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    executor.close()


def test_bad_engine_options_fail_at_construction(split):
    alone = CNNProxyEvaluator(split, SPEC, TRAINING)
    for bad in ({"max_batch": 0}, {"compact_below": 0.0}, {"compact_below": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BatchedCNNEvaluator.from_proxy(alone, **bad)
    with pytest.raises(ConfigError, match="unknown depthwise backend 'cuda'"):
        BatchedCNNEvaluator.from_proxy(alone, depthwise="cuda")
    with pytest.raises(ConfigError, match="cuda_graph needs a CUDA device, not 'cpu'"):
        BatchedCNNEvaluator.from_proxy(alone, cuda_graph=True)


def test_a_local_executor_on_cuda_needs_a_gpu_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in (None, "inprocess", "pool", "batched"):
        with pytest.raises(ConfigError, match="sees no CUDA GPU here"):
            build_executor(name, device="cuda")


def test_the_gpu_default_executor_is_batched(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert isinstance(build_executor(None, device="cuda"), BatchedExecutor)
    assert isinstance(build_executor("batched", device="cpu"), BatchedExecutor)
    assert not isinstance(build_executor(None, device="cpu"), BatchedExecutor)


def test_precision_cuda_graph_and_depthwise_configure_the_batched_engine(
    cli, tmp_path, monkeypatch
):
    from autoshrink.nn import stacked_ops

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(stacked_ops, "triton_version", lambda: "2.3.1")  # PyTorch 2.3's
    with pytest.raises(ConfigError, match=r"^--depthwise triton needs Triton 3.0 or newer \("):
        build_executor(None, device="cuda", depthwise="triton")
    monkeypatch.setattr(stacked_ops, "triton_version", lambda: "3.2.0")
    executor = build_executor(
        None, device="cuda", precision="bf16", cuda_graph=True, depthwise="triton"
    )
    assert executor.options == {
        "bf16": True,
        "tf32": True,
        "cuda_graph": True,
        "depthwise": "triton",
    }
    assert build_executor(None, device="cuda").options == {
        "bf16": False,
        "tf32": True,
        "cuda_graph": None,  # each engine's default
        "depthwise": "auto",
    }
    assert build_executor("batched", precision="fp32").options["tf32"] is False
    with pytest.raises(ConfigError, match="executor is 'pool'"):
        build_executor(None, device="cpu", precision="bf16")
    with pytest.raises(ConfigError, match=r"cuda_graph \(--cuda-graph\) needs device 'cuda'"):
        build_executor("batched", device="cpu", cuda_graph=True)
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        build_executor("batched", precision="fp16")
    with pytest.raises(ConfigError, match="unknown depthwise backend 'cuda'"):
        build_executor("batched", depthwise="cuda")
    with pytest.raises(ConfigError, match="executor is 'pool'"):
        build_executor(None, device="cpu", depthwise="cudnn")
    code, _, err = cli("search", "--preset", "demo", "--out", tmp_path, "--precision", "bf16")
    assert code == 2 and "executor is 'pool'" in err and len(err.strip().splitlines()) == 1


def test_a_latency_cost_keeps_the_candidates_trained_together(split) -> None:
    # a latency cost or constraint wraps the evaluator, and the executor trained the wrapped
    # one one by one, dropping --precision and the other engine options without a word
    from autoshrink.evaluators.costed import CostedEvaluator

    measured: list[str] = []

    class Edges:
        name = "edges_ms"

        def __call__(self, genotype: Cell) -> float:
            measured.append(genotype.key)
            return float(genotype.num_edges)

    costed = CostedEvaluator(CNNProxyEvaluator(split, SPEC, TRAINING), [Edges()])
    jobs = [Job(c, s) for c, s in zip(CELLS, SEEDS, strict=True)]
    jobs[0] = Job(CELLS[0], SEEDS[0], {"edges_ms": 99.0})  # measured by the constraint check
    executor = BatchedExecutor()
    out = dict(executor.run(costed, jobs))
    executor.close()
    assert sorted(out) == [0, 1, 2] and all(r.detail["batch"] == 3 for r in out.values())
    edges = [out[i].metrics["edges_ms"] for i in range(3)]
    assert edges == [99.0, *(c.num_edges for c in CELLS[1:])]
    assert measured == [c.key for c in CELLS[1:]]  # the known one is not measured again
    assert all("accuracy" in r.metrics for r in out.values())


def test_search_with_the_batched_executor(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli(
        "search", "--preset", "demo", "--out", out, "--executor", "batched", "--nodes", "4",
        "-k", "3", "--keep-fraction", "0.7", "--per-class", "10", "--val-size", "40",
        "--width", "0.25", "--epochs", "1", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    candidates = [r for r in records if r.get("type") == "candidate"]
    steps = [r["step"] for r in candidates]
    assert steps.count(0) == 1 and sorted(set(steps)) == [0, 1, 2]  # 6 -> 5 -> 4 edges
    for r in candidates:  # each step's candidates were trained together
        assert r["detail"]["batch"] == steps.count(r["step"])
    assert json.loads((out / "result.json").read_text())["best"]["score"] is not None


def test_triton_depthwise_on_cuda_is_refused_as_built_without_triton_3(split, monkeypatch) -> None:
    """A library user's engine on CUDA with Triton 2 (PyTorch 2.2 and 2.3) met Triton's own
    error at the first training step; the CLI's factory refused it, the evaluator did not."""
    from autoshrink.nn import stacked_ops

    monkeypatch.setattr(stacked_ops, "triton_version", lambda: "2.3.1")
    line = (
        r"^depthwise backend 'triton' needs Triton 3.0 or newer \(pip install .*2.3.1 is installed$"
    )
    with pytest.raises(ConfigError, match=line):
        BatchedCNNEvaluator(split, SPEC, TRAINING, device="cuda", depthwise="triton")
    BatchedCNNEvaluator(split, SPEC, TRAINING, device="cpu", depthwise="triton")  # one kernel
    monkeypatch.setattr(stacked_ops, "triton_version", lambda: "3.2.0")
    BatchedCNNEvaluator(split, SPEC, TRAINING, device="cuda", depthwise="triton")


@pytest.mark.parametrize(
    ("options", "says"),
    [({"max_batch": 0}, "max_batch must be >= 1, got 0"),
     ({"compact_below": 2.0}, r"compact_below must be in \(0, 1\], got 2.0")],
)  # fmt: skip
def test_bad_engine_settings_are_config_errors(split, options, says) -> None:
    with pytest.raises(ConfigError, match=says):
        BatchedCNNEvaluator(split, SPEC, TRAINING, **options)
