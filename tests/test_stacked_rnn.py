"""Training K RNN candidates at once gives each the trajectory ``train_proxy_lm`` gives it alone."""

from __future__ import annotations

import math
import random

import pytest
import torch

from autoshrink.data.text import load_text
from autoshrink.errors import ConfigError
from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
from autoshrink.evaluators.stacked_rnn import StackedRNNEvaluator
from autoshrink.executors.base import InProcessExecutor
from autoshrink.executors.batched import BatchedExecutor
from autoshrink.executors.factory import build_executor, default_executor
from autoshrink.graph import Cell
from autoshrink.journal import Journal
from autoshrink.nn.rnn import RNNModel
from autoshrink.nn.stacked_rnn import StackedRNNModel, build_stacked_rnn
from autoshrink.search import run_search
from autoshrink.spaces.cells import start_cell
from autoshrink.training.language import train_proxy_lm
from autoshrink.training.proxy_settings import RNNProxyTraining
from autoshrink.training.stacked_language import train_stacked_lm
from autoshrink.training.stacked_windows import clip_per_candidate
from test_rnn_text import one_thread, write_tiny_corpus  # noqa: F401 (autouse)

PARENT = start_cell("rnn", 5, random.Random(0))
CELLS = [PARENT.remove_edge(e) for e in PARENT.edges[:4]] + [
    Cell("rnn", PARENT.ops, [(0, 1)]),  # one edge left: a leaf at node 1, the rest dead
    Cell("rnn", PARENT.ops, [(0, 1), (0, 3), (1, 2)]),  # two leaves: their mean
]
SEEDS = [11, 12, 13, 14, 15, 16]
NAN = 2  # this candidate gets a NaN decoder bias: it must diverge alone, and alone
HIGH = 3  # this one a decoder bias of 300 on one word: finite losses, perplexity above the bound
NHID = 6
SETTINGS = RNNProxyTraining(
    nhid=NHID, epochs=6, batch_size=4, bptt=7, eval_batch_size=3, patience=1, lr=6.0,
    lr_decay_after=(3, 5),
)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_text(write_tiny_corpus(tmp_path_factory.mktemp("tiny"), n_train=120, n_eval=30))


def alone(corpus, k, settings, dtype=torch.float64):
    torch.manual_seed(SEEDS[k])
    model = RNNModel(CELLS[k], corpus.ntokens, emsize=NHID, nhid=NHID).to(dtype)
    if k in (NAN, HIGH):
        model.decoder.bias.data[0] = float("nan") if k == NAN else 300.0
    return train_proxy_lm(model, corpus.train, corpus.valid, settings)


def together(corpus, settings, dtype=torch.float64, **options):
    model = build_stacked_rnn(CELLS, SEEDS, corpus.ntokens, nhid=NHID).to(dtype)
    model.decoder_bias.data[NAN, 0] = float("nan")
    model.decoder_bias.data[HIGH, 0] = 300.0
    return dict(train_stacked_lm(model, corpus.train, corpus.valid, settings, **options))


def test_the_stacked_forward_pass_is_each_candidates_own(corpus) -> None:
    model = build_stacked_rnn(CELLS, SEEDS, corpus.ntokens, nhid=NHID).double()
    tokens = torch.randint(0, corpus.ntokens, (5, 3), generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(len(CELLS), 3, NHID, dtype=torch.float64)
    logits, last = model(tokens, hidden)
    for k, cell in enumerate(CELLS):
        torch.manual_seed(SEEDS[k])
        ref = RNNModel(cell, corpus.ntokens, emsize=NHID, nhid=NHID).double()
        out = ref(tokens, hidden[k])
        torch.testing.assert_close(logits[k], out.logits, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(last[k], out.hidden, rtol=1e-12, atol=1e-12)
    # a candidate's missing edges are zero matrices and get no gradient
    logits.sum().backward()
    e = model.edges.index((0, 2))  # CELLS[1] lacks it
    assert not model.edge_mask[1, e]
    assert torch.all(model.edge_weights[e][1] == 0)
    assert torch.all(model.edge_weights[e].grad[1] == 0)
    assert torch.any(model.edge_weights[e].grad[0] != 0)


@pytest.mark.parametrize("compact_below", [1.0, 0.01])
def test_float64_trajectories_equal_one_by_one_training_including_early_stops(
    corpus, monkeypatch, compact_below
) -> None:
    """Whether stopped candidates leave the stacks at once (1.0) or ride along to the end
    (0.01; the diverged ones too), no trajectory changes."""
    compactions = []
    select = StackedRNNModel.select
    monkeypatch.setattr(
        StackedRNNModel, "select", lambda m, keep: compactions.append(len(keep)) or select(m, keep)
    )
    outs = together(corpus, SETTINGS, compact_below=compact_below)
    # the two diverged candidates stop after epoch 1, the others at the last epoch
    assert compactions == {1.0: [len(CELLS) - 2], 0.01: []}[compact_below]
    assert sorted(outs) == list(range(len(CELLS)))
    for k in range(len(CELLS)):
        ref, out = alone(corpus, k, SETTINGS), outs[k]
        assert (out.epochs, out.stop_reason, out.diverged) == (
            ref.epochs,
            ref.stop_reason,
            ref.diverged,
        )
        if ref.diverged:
            assert math.isnan(out.best_perplexity)
        else:
            assert out.best_perplexity == pytest.approx(ref.best_perplexity, rel=1e-9)
        assert len(out.history) == len(ref.history)
        for mine, theirs in zip(out.history, ref.history, strict=True):
            assert mine["lr"] == theirs["lr"]
            for key in ("train_loss", "val_perplexity"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-9, nan_ok=True)
    assert outs[NAN].diverged and outs[NAN].epochs == 1
    high = outs[HIGH].history[0]  # diverged by the bound, with finite numbers
    assert outs[HIGH].diverged and math.isfinite(high["train_loss"])
    assert SETTINGS.divergence_factor * corpus.ntokens < high["val_perplexity"] < math.inf
    assert {o.stop_reason for o in outs.values()} == {"diverged", "epochs"}


def test_patience_stops_a_stacked_candidate_as_it_stops_alone(corpus) -> None:
    # a clip of 1e-30 leaves the weights unchanged: the perplexity never improves
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "clip": 1e-30, "patience": 2})
    outs = together(corpus, settings)
    for k in (0, 5):
        ref = alone(corpus, k, settings)
        assert (
            (outs[k].stop_reason, outs[k].epochs)
            == ("patience", 3)
            == (
                ref.stop_reason,
                ref.epochs,
            )
        )
        assert outs[k].best_perplexity == pytest.approx(ref.best_perplexity, rel=1e-12)


def test_float32_first_epoch_matches_within_float_tolerance(corpus) -> None:
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 1})
    outs = together(corpus, settings, dtype=torch.float32)
    for k in (0, 4):
        ref = alone(corpus, k, settings, dtype=torch.float32)
        assert outs[k].history[0]["train_loss"] == pytest.approx(
            ref.history[0]["train_loss"], rel=1e-4
        )
        assert outs[k].best_perplexity == pytest.approx(ref.best_perplexity, rel=1e-3)


def test_bf16_autocast_trains_to_finite_losses(corpus) -> None:
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 1})
    outs = together(corpus, settings, dtype=torch.float32, bf16=True)
    assert all(math.isfinite(o.best_perplexity) for k, o in outs.items() if k not in (NAN, HIGH))


def test_gradients_are_clipped_per_candidate() -> None:
    a = torch.zeros(3, 2, requires_grad=True)
    b = torch.zeros(3, 4, requires_grad=True)
    a.grad = torch.tensor([[3.0, 0.0], [0.1, 0.0], [0.0, 0.0]])
    b.grad = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0] * 4, [0.0, 0.0, 0.0, 2.0]])
    clip_per_candidate([a, b], 1.0)
    # candidate 0: norm 5 -> 1; candidate 1: norm 0.1, unchanged; candidate 2: norm 2 -> 1
    assert a.grad[0].tolist() == pytest.approx([0.6, 0.0], rel=1e-5)
    assert b.grad[0].tolist() == pytest.approx([0.0, 0.8, 0.0, 0.0], rel=1e-5)
    assert a.grad[1].tolist() == pytest.approx([0.1, 0.0])
    assert b.grad[2].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0], rel=1e-5)


def test_candidates_must_share_their_node_ops() -> None:
    other = Cell("rnn", ("input", "relu", "relu", "relu", "relu"), [(0, 1)])
    with pytest.raises(ConfigError, match="same node ops"):
        StackedRNNModel([CELLS[0], other], 20, nhid=4)


def test_the_stacked_evaluator_matches_the_one_by_one_evaluator(corpus) -> None:
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 2})
    plain = RNNProxyEvaluator(corpus, settings)
    stacked = StackedRNNEvaluator.from_proxy(plain)
    cells = [CELLS[0], CELLS[1], CELLS[4]]
    results = stacked.evaluate_many(cells, SEEDS[:3])
    for cell, seed, got in zip(cells, SEEDS[:3], results, strict=True):
        ref = plain.evaluate(cell, seed)
        assert got.status == ref.status == "ok" and got.detail["batch"] == 3
        assert got.detail["epochs"] == ref.detail["epochs"]
        for key in ("edges", "edge_cost", "params", "macs"):
            assert got.metrics[key] == ref.metrics[key]
        # float32: the stacked matmuls round differently from the one-by-one ones
        assert got.metrics["perplexity"] == pytest.approx(ref.metrics["perplexity"], rel=1e-3)


def test_a_group_that_fails_is_retried_in_halves_down_to_the_plain_loop(
    corpus, monkeypatch
) -> None:
    import autoshrink.evaluators.stacked_rnn as module

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(module, "train_stacked_lm", out_of_memory)
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 1})
    stacked = StackedRNNEvaluator(corpus, settings)
    results = stacked.evaluate_many(CELLS[:3], SEEDS[:3])
    assert [r.detail["batch"] for r in results] == [1, 1, 1]
    assert [r.status for r in results] == ["ok"] * 3
    for cell, seed, got in zip(CELLS[:3], SEEDS[:3], results, strict=True):  # the plain loop
        assert (
            got.metrics["perplexity"]
            == RNNProxyEvaluator(corpus, settings).evaluate(cell, seed).metrics["perplexity"]
        )


def test_a_single_candidate_trains_as_a_stack_of_one_where_graphs_replay_it(
    corpus, monkeypatch
) -> None:
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 2})
    plain = RNNProxyEvaluator(corpus, settings)
    stacked = StackedRNNEvaluator.from_proxy(plain)
    assert not stacked.stacks_single  # no graphs (CPU): the plain loop, the very same result
    assert stacked.evaluate(CELLS[0], 7).metrics == plain.evaluate(CELLS[0], 7).metrics
    monkeypatch.setattr(StackedRNNEvaluator, "stacks_single", True)  # as with CUDA graphs
    sizes = []
    train = StackedRNNEvaluator._train
    monkeypatch.setattr(
        StackedRNNEvaluator, "_train", lambda self, c, s: sizes.append(len(c)) or train(self, c, s)
    )
    got = stacked.evaluate(CELLS[0], 7)
    assert sizes == [1] and got.status == "ok" and got.detail["batch"] == 1
    ref = plain.evaluate(CELLS[0], 7)
    assert got.detail["epochs"] == ref.detail["epochs"]
    assert got.metrics["perplexity"] == pytest.approx(ref.metrics["perplexity"], rel=1e-3)


def test_a_failed_stack_of_one_is_trained_by_the_plain_loop(corpus, monkeypatch) -> None:
    import autoshrink.evaluators.stacked_rnn as module

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(module, "train_stacked_lm", out_of_memory)
    monkeypatch.setattr(StackedRNNEvaluator, "stacks_single", True)
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 1})
    got = StackedRNNEvaluator(corpus, settings).evaluate_many(CELLS[:3], SEEDS[:3])
    for cell, seed, result in zip(CELLS[:3], SEEDS[:3], got, strict=True):
        ref = RNNProxyEvaluator(corpus, settings).evaluate(cell, seed)
        assert result.detail["batch"] == 1 and result.metrics == ref.metrics


def test_the_batched_executor_runs_an_rnn_search_stacked(tmp_path, monkeypatch) -> None:
    from test_rnn_search import tiny_config

    corpus_dir = write_tiny_corpus(tmp_path / "tiny", n_train=60, n_eval=20)
    config = tiny_config(corpus_dir)
    seen = []
    train = StackedRNNEvaluator._train
    monkeypatch.setattr(
        StackedRNNEvaluator, "_train", lambda self, c, s: seen.append(len(c)) or train(self, c, s)
    )
    batched = run_search(tmp_path / "b", config, executor=BatchedExecutor(), progress=False)
    assert seen == [2, 2, 2]  # every shrink step's K = 2 candidates trained together
    alone = run_search(tmp_path / "a", config, executor=InProcessExecutor(), progress=False)
    assert batched.evaluations == alone.evaluations == 7
    got = {r["key"]: r for r in Journal(tmp_path / "b" / "journal.jsonl").records()}
    ref = {r["key"]: r for r in Journal(tmp_path / "a" / "journal.jsonl").records()}
    assert got.keys() == ref.keys()  # the same candidates: the same choice at every step
    for key, r in ref.items():
        assert got[key]["metrics"]["perplexity"] == pytest.approx(
            r["metrics"]["perplexity"], rel=1e-3
        )


def test_the_batched_executor_is_the_rnn_default_on_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert default_executor("cuda") == "batched" and default_executor("cuda:1") == "batched"
    executor = build_executor(None, device="cuda")
    assert isinstance(executor, BatchedExecutor)
    on_gpu = RNNProxyEvaluator(None, SETTINGS, device="cuda")
    stacked = BatchedExecutor(cuda_graph=True)._batched_for(on_gpu)
    assert isinstance(stacked, StackedRNNEvaluator) and stacked.cuda_graph
    with pytest.raises(ConfigError, match="cuda_graph needs a CUDA device, not 'cpu'"):
        StackedRNNEvaluator(None, SETTINGS, cuda_graph=True)  # at once, not at every group


def test_rnn_candidates_are_replayed_from_cuda_graphs_by_default_on_cuda_only() -> None:
    def graphs(device: str, cuda_graph: bool | None = None) -> bool:
        evaluator = RNNProxyEvaluator(None, SETTINGS, device=device)
        return BatchedExecutor(cuda_graph=cuda_graph)._batched_for(evaluator).cuda_graph

    assert graphs("cuda") and graphs("cuda:1") and not graphs("cpu")
    assert not graphs("cuda", False)
    evaluator = BatchedExecutor()._batched_for(RNNProxyEvaluator(None, SETTINGS, device="cuda"))
    assert evaluator.stacks_single  # graphs replay a stack of one too, step 0's complete cell


def test_bad_stack_settings_are_config_errors(corpus) -> None:
    with pytest.raises(ConfigError, match="max_batch must be >= 1, got 0"):
        StackedRNNEvaluator(corpus, SETTINGS, max_batch=0)
    with pytest.raises(ConfigError, match=r"compact_below must be in \(0, 1\], got 0"):
        StackedRNNEvaluator(corpus, SETTINGS, compact_below=0)


def test_a_stack_needs_a_candidate_a_hidden_unit_and_two_words() -> None:
    assert build_stacked_rnn(CELLS[:1], SEEDS[:1], 2, nhid=1).ntoken == 2  # the smallest
    for ntoken, nhid in ((1, 4), (2, 0)):
        with pytest.raises(ConfigError, match=f"got {nhid} and {ntoken}"):
            StackedRNNModel(CELLS[:1], ntoken, nhid=nhid)
    with pytest.raises(ConfigError, match="at least one candidate"):
        StackedRNNModel([], 2, nhid=1)
    with pytest.raises(ValueError, match="2 cells but 1 seeds"):
        build_stacked_rnn(CELLS[:2], SEEDS[:1], 2, nhid=1)


def test_tf32_is_asked_of_cuda_matmuls_only(corpus, monkeypatch) -> None:
    from autoshrink.training import stacked_language

    asked: list[bool] = []
    real = stacked_language.tf32_matmuls
    monkeypatch.setattr(stacked_language, "tf32_matmuls", lambda on: asked.append(on) or real(on))
    settings = RNNProxyTraining(**{**SETTINGS.__dict__, "epochs": 1})
    model = build_stacked_rnn(CELLS[:2], SEEDS[:2], corpus.ntokens, nhid=NHID)
    dict(train_stacked_lm(model, corpus.train, corpus.valid, settings, device="cpu", tf32=True))
    assert asked == [False]  # on the CPU a tf32 request changes nothing


def test_building_a_stack_gives_the_callers_generator_state_back() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    build_stacked_rnn(CELLS[:2], SEEDS[:2], 20, nhid=4)
    assert torch.equal(torch.get_rng_state(), before)  # as the CNN engine's build_batched does
