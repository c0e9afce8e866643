"""Training K candidates at once gives each the trajectory ``train_proxy`` gives it alone."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from autoshrink.data.images import load_images, proxy_split
from autoshrink.graph import Cell
from autoshrink.nn.batched import build_batched, union_cell
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.batched import train_batched
from autoshrink.training.classification import train_proxy
from autoshrink.training.proxy_settings import ProxyTraining

SPEC = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25)
PARENT = start_cell("cnn", 5, random.Random(1))
CELLS = [PARENT.remove_edge(e) for e in PARENT.edges[:2]] + [
    Cell("cnn", PARENT.ops, [], "relu"),  # nothing left: the cell is its residual
    PARENT.remove_edge(PARENT.edges[5]),
    PARENT.remove_edge(PARENT.edges[3]),
]
SEEDS = [11, 12, 13, 14, 15]
NAN = 4  # this candidate gets a NaN bias: it must diverge alone, and alone

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    split = proxy_split(load_images("digits"), per_class=8, val_size=40, seed=0)

    def tensors(dtype):
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(dtype) if a.dtype == np.float32 else torch.from_numpy(a)

        return (t(split.train_x), t(split.train_y)), (t(split.val_x), t(split.val_y))

    return tensors


def alone(cell, seed, settings, train, val, dtype, nan=False):
    torch.manual_seed(seed)
    net = build_network(cell, SPEC).to(dtype)
    if nan:
        net.classifier.bias.data[0] = float("nan")
    return train_proxy(net, train, val, settings, torch.Generator().manual_seed(seed))


def together(settings, train, val, dtype, nan=None, node_inputs="auto", **options):
    engine = build_batched(union_cell(CELLS), SPEC, CELLS, SEEDS, node_inputs=node_inputs)
    engine = engine.to(dtype)
    if nan is not None:
        engine.classifier_bias.data[nan, 0] = float("nan")
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    return dict(train_batched(engine, train, val, settings, gens, **options))


@pytest.mark.parametrize(
    ("compact_below", "node_inputs"),
    [(1.0, "concat"), (0.5, "concat"), (0.01, "concat"), (1.0, "buffer")],
)
def test_float64_trajectories_equal_one_by_one_training_including_early_stops(
    data, monkeypatch, compact_below, node_inputs
):
    """Whether stopped candidates leave the stacks at once (1.0), once half have stopped (0.5),
    or ride along to the end (0.01; a diverged one too), no trajectory changes; nor whether
    node inputs are concatenated or views of one buffer (``node_inputs``)."""
    import autoshrink.training.batched as tb

    compactions = []
    select = tb._select
    monkeypatch.setattr(tb, "_select", lambda *a: compactions.append(len(a[2])) or select(*a))
    settings = ProxyTraining(epochs=4, batch_size=32, patience=2, min_accuracy=0.15)
    train, val = data(torch.float64)
    outs = together(
        settings,
        train,
        val,
        torch.float64,
        nan=NAN,
        compact_below=compact_below,
        node_inputs=node_inputs,
    )
    # every stop compacts at 1.0; fewer, later compactions at 0.5; none at 0.01
    assert {1.0: len(compactions) >= 2, 0.5: len(compactions) == 1, 0.01: not compactions}[
        compact_below
    ], compactions
    assert sorted(outs) == list(range(len(CELLS)))
    for k, (cell, seed) in enumerate(zip(CELLS, SEEDS, strict=True)):
        ref = alone(cell, seed, settings, train, val, torch.float64, nan=k == NAN)
        out = outs[k]
        assert (out.epochs, out.stop_reason, out.diverged) == (
            ref.epochs,
            ref.stop_reason,
            ref.diverged,
        )
        assert out.best_accuracy == ref.best_accuracy
        assert len(out.history) == len(ref.history)
        for mine, theirs in zip(out.history, ref.history, strict=True):
            assert mine["val_accuracy"] == theirs["val_accuracy"]
            for key in ("train_loss", "val_loss"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12)
    # the candidates stopped at different epochs, for different reasons
    assert len({o.epochs for o in outs.values()}) >= 3
    assert outs[NAN].diverged and outs[NAN].epochs == 1
    assert {o.stop_reason for o in outs.values()} >= {"diverged", "low_accuracy", "epochs"}


def test_float32_first_epochs_match_within_float_tolerance(data):
    settings = ProxyTraining(epochs=2, batch_size=32)
    train, val = data(torch.float32)
    outs = together(settings, train, val, torch.float32)
    for k in (0, 3):  # float32 rounding differs between kernels; differences grow with epochs
        ref = alone(CELLS[k], SEEDS[k], settings, train, val, torch.float32)
        first, ref_first = outs[k].history[0], ref.history[0]
        assert first["train_loss"] == pytest.approx(ref_first["train_loss"], rel=1e-4)
        assert first["val_loss"] == pytest.approx(ref_first["val_loss"], rel=1e-3)
        assert abs(first["val_accuracy"] - ref_first["val_accuracy"]) <= 2 / 40


def test_bf16_autocast_trains_to_finite_losses(data):
    settings = ProxyTraining(epochs=2, batch_size=32)
    train, val = data(torch.float32)
    outs = together(settings, train, val, torch.float32, bf16=True)
    assert sorted(outs) == list(range(len(CELLS)))
    for out in outs.values():
        assert not out.diverged
        assert all(
            math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in out.history
        )


def test_one_generator_per_candidate(data):
    train, val = data(torch.float32)
    engine = build_batched(union_cell(CELLS), SPEC, CELLS, SEEDS)
    with pytest.raises(ValueError, match="generators"):
        next(train_batched(engine, train, val, ProxyTraining(), [torch.Generator()]))


def test_cuda_graph_replay_asks_for_what_it_needs(data) -> None:
    """The graph path itself needs a GPU (scripts/gpu_check.sh checks it in float64 there);
    here: it refuses CPU data, and a captured step needs a capturable optimizer."""
    from autoshrink.training.cuda_graph import GraphedStep

    train, val = data(torch.float32)
    with pytest.raises(ValueError, match="cuda_graph needs the data on a CUDA device"):
        together(ProxyTraining(epochs=1, batch_size=16), train, val, torch.float32, cuda_graph=True)
    engine = build_batched(union_cell(CELLS), SPEC, CELLS, SEEDS)
    opt = torch.optim.Adam(engine.parameters())
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedStep(lambda: None, engine, opt)  # type: ignore[arg-type]


@pytest.mark.parametrize("second_capture", [False, True])
def test_the_warm_up_before_a_capture_leaves_no_trace(data, second_capture) -> None:
    """The warm-up runs of a CUDA-graph capture are undone exactly: training on after
    ``warm_up`` (fresh Adam state, or state from earlier steps) matches training without it
    bit for bit -- weights, batch-norm statistics, Adam state and the loss sum."""
    from autoshrink.training.batched import TrainStep
    from autoshrink.training.cuda_graph import warm_up

    (x, y), _ = data(torch.float64)
    x = x.permute(0, 2, 3, 1).contiguous()  # [N, H, W, C], as train_batched keeps it
    k, b = len(CELLS), 16
    orders = torch.stack([torch.randperm(len(y), generator=torch.Generator().manual_seed(s))
                          for s in SEEDS])  # fmt: skip

    def train(with_warm_up: bool):
        engine = build_batched(union_cell(CELLS), SPEC, CELLS, SEEDS).double()
        opt = torch.optim.Adam(engine.parameters(), lr=4e-3, weight_decay=1e-4)
        idx, loss_sum = torch.empty(k, b, dtype=torch.long), torch.zeros(k)
        step = TrainStep(engine, opt, (x, y), idx, loss_sum)
        for s in range(4):
            idx.copy_(orders[:, s * b : (s + 1) * b])
            if with_warm_up and s == (2 if second_capture else 0):
                warm_up(step, engine, opt, runs=2)
            step()
        state = [v for st in opt.state.values() for v in st.values()]
        return [*engine.parameters(), *engine.buffers(), *state, loss_sum]

    plain, warmed = train(False), train(True)
    assert len(plain) == len(warmed)
    for a, c in zip(plain, warmed, strict=True):
        assert torch.equal(a, c)


@pytest.fixture
def eager_replays(monkeypatch) -> list[tuple[int, ...]]:
    """``cuda_graph=True`` on the CPU: each capture replaced by its warm-up and eager calls
    (and Adam without ``capturable``); the list of the captures' batch-index shapes."""
    import autoshrink.training.batched as tb
    from autoshrink.training.cuda_graph import warm_up

    captures: list[tuple[int, ...]] = []

    class EagerReplay:
        def __init__(self, step, model, opt) -> None:
            warm_up(step, model, opt)
            self.step = step
            captures.append(tuple(step.idx.shape))

        def __call__(self) -> None:
            self.step()

    adam = torch.optim.Adam
    monkeypatch.setattr(tb, "GraphedStep", EagerReplay)
    monkeypatch.setattr(tb, "require_cuda", lambda dev: None)
    monkeypatch.setattr(torch.optim, "Adam", lambda *a, capturable=False, **kw: adam(*a, **kw))
    return captures


def test_the_graph_loop_matches_the_eager_loop(data, eager_replays) -> None:
    """The epoch loop of ``cuda_graph=True``: buffers reused across epochs, a new capture
    whenever the stacks are compacted (here at every stop; one candidate diverges in epoch 1),
    the smaller last batch eagerly -- same trajectories as the plain loop, bit for bit."""
    train, val = data(torch.float64)
    settings = ProxyTraining(epochs=3, batch_size=24, min_accuracy=0.0, overfit_ratio=1e9)
    assert len(train[1]) % 24  # a smaller last batch every epoch
    plain = together(settings, train, val, torch.float64, nan=NAN, compact_below=1.0)
    graphed = together(
        settings, train, val, torch.float64, nan=NAN, cuda_graph=True, compact_below=1.0
    )
    assert eager_replays == [(5, 24), (4, 24)]  # all five, then the four left after divergence
    assert plain.keys() == graphed.keys()
    for k, out in plain.items():
        assert out.history == graphed[k].history
        assert (out.epochs, out.stop_reason) == (graphed[k].epochs, graphed[k].stop_reason)


def test_a_stack_of_one_in_the_graph_loop_trains_as_the_plain_loop(data, eager_replays) -> None:
    """Step 1's complete cell on CUDA (``BatchedCNNEvaluator.stacks_single``): one candidate,
    its training steps replayed -- in float64 the trajectory ``train_proxy`` gives it alone."""
    train, val = data(torch.float64)
    settings = ProxyTraining(epochs=3, batch_size=24, min_accuracy=0.0, overfit_ratio=1e9)
    engine = build_batched(PARENT, SPEC, [PARENT], [SEEDS[0]]).to(torch.float64)
    gens = [torch.Generator().manual_seed(SEEDS[0])]
    outs = dict(train_batched(engine, train, val, settings, gens, cuda_graph=True))
    assert eager_replays == [(1, 24)]
    ref = alone(PARENT, SEEDS[0], settings, train, val, torch.float64)
    assert (outs[0].epochs, outs[0].stop_reason) == (ref.epochs, ref.stop_reason)
    for mine, theirs in zip(outs[0].history, ref.history, strict=True):
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_tf32_matmuls_is_scoped() -> None:
    from autoshrink.training.batched import tf32_matmuls

    before = torch.backends.cuda.matmul.allow_tf32
    with pytest.raises(KeyError), tf32_matmuls(True):
        assert torch.backends.cuda.matmul.allow_tf32
        raise KeyError
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with tf32_matmuls(False):
        assert torch.backends.cuda.matmul.allow_tf32 == before
