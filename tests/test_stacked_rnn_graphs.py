"""The stacked RNN's BPTT windows on fixed buffers, and the loop that replays them from CUDA graphs.

The capture itself needs a GPU (``scripts/gpu_check.sh`` part ``rnn`` times it there); here the
parts that decide its correctness run on the CPU: a warm-up before a capture leaves no trace,
and the loop of ``cuda_graph=True`` -- with each capture replaced by its warm-up and eager
calls -- gives the trajectories of the plain loop bit for bit, capturing again exactly when
the learning rate or the stacks change.
"""

from __future__ import annotations

import pytest
import torch

import autoshrink.training.stacked_language as sl
import test_stacked_rnn
from autoshrink.nn.stacked_rnn import build_stacked_rnn
from autoshrink.training.cuda_graph import warm_up
from autoshrink.training.stacked_windows import EvalWindow, TrainWindow, WindowPass
from test_rnn_text import one_thread  # noqa: F401 (autouse)
from test_stacked_rnn import CELLS, NHID, SEEDS, SETTINGS, together

corpus = test_stacked_rnn.corpus  # the tiny corpus fixture

K, B, BPTT = len(CELLS), 4, 7


def batches(corpus) -> torch.Tensor:
    tokens = torch.from_numpy(corpus.train[: 5 * BPTT * B + 4 * B]).long()
    return tokens.view(B, -1).t().contiguous()  # [T, B], the last window shorter


def buffers(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k = model.k
    return (
        model.init_hidden(B),
        torch.zeros(k, dtype=torch.float64),
        torch.ones(k, dtype=torch.bool),
    )


@pytest.mark.parametrize("at", [0, 2])
def test_a_warm_up_before_a_training_capture_leaves_no_trace(corpus, at) -> None:
    data = batches(corpus)

    def train(with_warm_up: bool) -> list[torch.Tensor]:
        model = build_stacked_rnn(CELLS, SEEDS, corpus.ntokens, nhid=NHID).double()
        opt = torch.optim.SGD(model.parameters(), lr=6.0)
        hidden, loss_sum, finite = buffers(model)
        tokens = data.new_zeros(BPTT + 1, B)
        step = TrainWindow(model, opt, tokens, hidden, loss_sum, finite, clip=0.25)
        for w in range(4):
            tokens.copy_(data[w * BPTT : (w + 1) * BPTT + 1])
            if with_warm_up and w == at:
                warm_up(step, model, opt, runs=2)
            step()
        return [*model.parameters(), hidden, loss_sum, finite]

    plain, warmed = train(False), train(True)
    for a, b in zip(plain, warmed, strict=True):
        assert torch.equal(a, b)


def test_a_warm_up_before_an_evaluation_capture_leaves_no_trace(corpus) -> None:
    data = batches(corpus)
    model = build_stacked_rnn(CELLS, SEEDS, corpus.ntokens, nhid=NHID).double().eval()
    hidden, loss_sum, _ = buffers(model)
    tokens = data[: BPTT + 1].clone()
    step = EvalWindow(model, tokens, hidden, loss_sum)
    step()
    before = [t.clone() for t in (*model.parameters(), hidden, loss_sum)]
    warm_up(step, model, None, runs=3)
    for a, b in zip(before, [*model.parameters(), hidden, loss_sum], strict=True):
        assert torch.equal(a, b)


def test_a_window_pass_covers_every_target_and_replays_only_full_windows(corpus) -> None:
    data = batches(corpus)
    seen: list[tuple[str, int]] = []

    class Step:
        def __init__(self, tokens: torch.Tensor) -> None:
            self.tokens = tokens

        @property
        def state(self) -> tuple[torch.Tensor, ...]:
            return ()

        def __call__(self) -> None:
            seen.append(("eager", len(self.tokens) - 1))

    def capture(step):
        seen.append(("capture", len(step.tokens) - 1))
        return lambda: seen.append(("replay", len(step.tokens) - 1))

    lr = [1.0]
    windows = WindowPass(Step, data, BPTT, capture=capture, key=lambda: lr[0])
    assert windows.targets == (data.size(0) - 1) * B
    windows.run()
    lr[0] = 0.5
    windows.run()
    last = (data.size(0) - 1) % BPTT
    assert last  # the data ends in a shorter window
    one_pass = [("replay", BPTT)] * 5 + [("eager", last)]
    assert seen == [("capture", BPTT), *one_pass, ("capture", BPTT), *one_pass]


@pytest.fixture
def eager_replays(monkeypatch) -> list[tuple[str, int, float | None]]:
    """``cuda_graph=True`` on the CPU: each capture replaced by its warm-up and eager calls;
    the list of captures ``(step, stacked candidates, learning rate)`` as they happen."""
    captures: list[tuple[str, int, float | None]] = []

    class EagerReplay:
        def __init__(self, step, model, opt) -> None:
            warm_up(step, model, opt)
            self.step = step
            lr = None if opt is None else opt.param_groups[0]["lr"]
            captures.append((type(step).__name__, model.k, lr))

        def __call__(self) -> None:
            self.step()

    monkeypatch.setattr(sl, "GraphedStep", EagerReplay)
    monkeypatch.setattr(sl, "require_cuda", lambda dev: None)
    return captures


def test_the_graph_loop_matches_the_eager_loop(corpus, eager_replays) -> None:
    """The buffers reused across epochs and windows, a new training capture after each
    learning-rate decay and each compaction (two candidates diverge in epoch 1), a new
    validation capture after each compaction -- the same trajectories, bit for bit."""
    plain = together(corpus, SETTINGS, compact_below=1.0)
    assert not eager_replays
    graphed = together(corpus, SETTINGS, compact_below=1.0, cuda_graph=True)
    lr = SETTINGS.lr
    assert eager_replays == [
        ("TrainWindow", K, lr),
        ("EvalWindow", K, None),
        ("TrainWindow", K - 2, lr),  # after the two divergences of epoch 1
        ("EvalWindow", K - 2, None),
        ("TrainWindow", K - 2, lr / 10),  # after the decays of epochs 3 and 5
        ("TrainWindow", K - 2, lr / 10 / 10),
    ]
    assert plain.keys() == graphed.keys()
    for k, out in plain.items():
        assert out.history == graphed[k].history
        assert (out.epochs, out.stop_reason) == (graphed[k].epochs, graphed[k].stop_reason)


def test_a_stack_of_one_in_the_graph_loop_trains_as_the_plain_loop(corpus, eager_replays) -> None:
    """Step 0's complete cell on CUDA (``StackedRNNEvaluator.stacks_single``): one candidate,
    its windows replayed -- in float64 the trajectory ``train_proxy_lm`` gives it alone."""
    model = build_stacked_rnn(CELLS[:1], SEEDS[:1], corpus.ntokens, nhid=NHID).double()
    outs = dict(sl.train_stacked_lm(model, corpus.train, corpus.valid, SETTINGS, cuda_graph=True))
    assert [step for step, _, _ in eager_replays][:2] == ["TrainWindow", "EvalWindow"]
    ref = test_stacked_rnn.alone(corpus, 0, SETTINGS)
    assert (outs[0].epochs, outs[0].stop_reason) == (ref.epochs, ref.stop_reason)
    for mine, theirs in zip(outs[0].history, ref.history, strict=True):
        assert mine["lr"] == theirs["lr"]
        for key in ("train_loss", "val_perplexity"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-9)


def test_cuda_graphs_need_the_data_on_a_gpu(corpus) -> None:
    with pytest.raises(ValueError, match="cuda_graph needs the data on a CUDA device"):
        together(corpus, SETTINGS, cuda_graph=True)


def test_a_window_step_builds_no_index_on_the_host(corpus, monkeypatch) -> None:
    """A capture refuses host-to-device copies, and indexing with a Python list is one (the
    first H200 capture failed on it): every index of a window step is a device tensor."""
    data = batches(corpus)
    model = build_stacked_rnn(CELLS, SEEDS, corpus.ntokens, nhid=NHID)
    hidden, loss_sum, finite = buffers(model)
    opt = torch.optim.SGD(model.parameters(), lr=6.0)
    tokens = data[: BPTT + 1].clone()
    host_indices: list[str] = []
    getitem = torch.Tensor.__getitem__

    def spy(self, index):
        for part in index if isinstance(index, tuple) else (index,):
            if isinstance(part, list | tuple) or (
                isinstance(part, torch.Tensor) and part.device != self.device
            ):
                host_indices.append(repr(part))
        return getitem(self, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", spy)
    TrainWindow(model, opt, tokens, hidden, loss_sum, finite, clip=0.25)()
    EvalWindow(model.eval(), tokens, hidden, loss_sum)()
    assert host_indices == []
