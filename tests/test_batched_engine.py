"""The stacked K-candidate network: each slice computes exactly its candidate's own network."""

from __future__ import annotations

import random

import pytest
import torch

from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nn import stacked_ops
from autoshrink.nn.batched import BatchedCNN, build_batched, union_cell, widest_widths
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import published_cell, start_cell
from autoshrink.spaces.macros import cifar_proxy, shrinkcnn_imagenet

PARENT = start_cell("cnn", 8, random.Random(0))

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def candidates() -> list[Cell]:
    """Single-edge removals plus the corner cases: no edge left (node 0 is the only leaf), one
    edge, two leaves of 16 channels (= the 32-channel stem: an identity shortcut), every op
    node a leaf (the widest cell output a sub-graph of the parent has)."""
    cells = [PARENT.remove_edge(e) for e in PARENT.edges[::5]]
    star = [(0, j) for j in range(1, PARENT.num_nodes)]
    for edges in ([], [(0, 3)], [(0, 3), (0, 5)], star):
        cells.append(Cell("cnn", PARENT.ops, edges, "relu"))
    return cells


def replicate(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> the stacked layout ``[B, H, W, K, C]``, the same images for all."""
    return x.permute(0, 2, 3, 1)[:, :, :, None].expand(-1, -1, -1, k, -1).contiguous()


def reference_nets(cells, spec, seeds):
    nets = []
    for cell, seed in zip(cells, seeds, strict=True):
        torch.manual_seed(seed)
        nets.append(build_network(cell, spec).double())
    return nets


@pytest.mark.parametrize(
    "spec",
    [
        cifar_proxy(in_channels=3, image_size=8, num_classes=10, width=0.25),
        shrinkcnn_imagenet(width=0.25, depths=(1, 2, 1), image_size=16, num_classes=7),
        cifar_proxy(in_channels=3, image_size=6, num_classes=10, width=0.25),  # pools 3 px
    ],
    ids=["cifar-proxy", "imagenet-macro", "odd-size"],
)
@pytest.mark.parametrize("fixed", [False, True], ids=["union", "complete-widest"])
@pytest.mark.parametrize("node_inputs", ["concat", "buffer"])
def test_every_slice_equals_its_own_network_in_train_and_eval_mode(spec, fixed, node_inputs):
    cells = candidates()
    seeds = [100 + i for i in range(len(cells))]
    parent, widths = (PARENT, widest_widths(PARENT, spec)) if fixed else (union_cell(cells), None)
    engine = build_batched(
        parent, spec, cells, seeds, widths=widths, general=fixed, node_inputs=node_inputs
    ).double()
    nets = reference_nets(cells, spec, seeds)
    x = torch.randn(3, 3, spec.image_size, spec.image_size, dtype=torch.float64)
    for train in (True, False, True):  # eval mode reads the running stats the train pass wrote
        out = engine.train(train)(replicate(x, len(cells)))  # [B, K, classes]
        for k, net in enumerate(nets):
            torch.testing.assert_close(out[:, k], net.train(train)(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("node_inputs", ["concat", "buffer"])
def test_gradients_reach_only_the_candidates_own_weights(node_inputs):
    spec = cifar_proxy(in_channels=3, image_size=8, num_classes=10, width=0.25)
    cells = candidates()
    engine = build_batched(
        union_cell(cells), spec, cells, range(len(cells)), node_inputs=node_inputs
    ).double()
    nets = reference_nets(cells, spec, range(len(cells)))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    engine(replicate(x, len(cells))).square().sum().backward()
    for k, net in enumerate(nets):
        net(x).square().sum().backward()
        # the classifier's gradient: the candidate's own columns, zeros in the padding
        features = net.classifier.weight.shape[1]
        grad = engine.classifier.grad[k]
        torch.testing.assert_close(
            grad[:, :features], net.classifier.weight.grad, rtol=1e-9, atol=0
        )
        assert (grad[:, features:] == 0).all()
        torch.testing.assert_close(engine.stem.grad[k], net.stem[0].weight.grad, rtol=1e-9, atol=0)
    # a removed edge's weight columns get no gradient: node 7's 1x1 weights of candidate 0
    cell0 = engine.cells[0]
    op = cell0.ops[-1]
    w = op.pw.grad[0]  # [F, C_in of the last node]
    unused = cell0.mask7[0] == 0
    assert unused.any() and (w[:, unused] == 0).all()


def test_select_keeps_the_chosen_candidates():
    spec = cifar_proxy(in_channels=3, image_size=8, num_classes=10, width=0.25)
    cells = candidates()
    engine = build_batched(union_cell(cells), spec, cells, range(len(cells))).double()
    x = replicate(torch.randn(3, 3, 8, 8, dtype=torch.float64), len(cells))
    full = engine.eval()(x)
    keep = torch.tensor([1, 4, len(cells) - 1])
    engine.select(keep)
    assert engine.k == 3
    assert all(p.shape[0] == 3 for p in engine.parameters())
    torch.testing.assert_close(engine(x[:, :, :, keep]), full[:, keep], rtol=0, atol=0)


def test_bad_candidates_are_refused_with_a_clear_error():
    spec = cifar_proxy()
    with pytest.raises(ConfigError, match="edges the parent cell lacks"):
        BatchedCNN(PARENT.remove_edge(PARENT.edges[0]), spec, [PARENT])
    with pytest.raises(ConfigError, match="ops or activation differ"):
        BatchedCNN(PARENT, spec, [published_cell("shrinkcnn")])
    other = Cell.complete("cnn", ("input", "conv3x3", "conv1x1"))
    with pytest.raises(ConfigError, match="supports ops"):
        BatchedCNN(other, spec, [other])
    with pytest.raises(ConfigError, match="at least one candidate"):
        BatchedCNN(PARENT, spec, [])
    with pytest.raises(ConfigError, match="exceed the stacked widths"):
        BatchedCNN(PARENT, spec, [PARENT], widths=[16, 16, 16])


@pytest.mark.parametrize("chunks", [1, 4], ids=["one-reduction", "split-rows"])
def test_pointwise_gradients_are_exact(monkeypatch, chunks):
    """The stacked 1x1 convolution's hand-written backward against finite differences, with its
    weight gradient's rows in one reduction (CPU) and split into chunks (CUDA's way)."""
    monkeypatch.setattr(stacked_ops, "_split", lambda n, device: chunks)
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64, requires_grad=True)  # [B, H, W, K, C]
    w = torch.randn(5, 7, 6, dtype=torch.float64, requires_grad=True)  # [K, O, C]
    assert torch.autograd.gradcheck(stacked_ops.pointwise, (x, w))
    # and it is the per-candidate 1x1 convolution: y[..., k, :] = x[..., k, :] @ w[k].T
    expected = torch.einsum("bhwkc,koc->bhwko", x, w)
    torch.testing.assert_close(stacked_ops.pointwise(x, w), expected, rtol=1e-12, atol=1e-12)


def test_on_cuda_the_rows_split_into_power_of_two_chunks_of_at_least_split_rows():
    """The chunk count the split above uses on CUDA (arithmetic only: nothing runs there)."""
    cuda, rows = torch.device("cuda"), stacked_ops.SPLIT_ROWS
    assert stacked_ops._split(8 * rows, cuda) == 8
    assert stacked_ops._split(8 * rows + 2, cuda) == 2  # 2 x (4 rows + 1): odd, no further
    assert stacked_ops._split(2 * rows - 2, cuda) == 1  # halves would fall short of SPLIT_ROWS
    assert stacked_ops._split(8 * rows, torch.device("cpu")) == 1


def test_pointwise_gives_the_input_its_gradient_under_frozen_weights():
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 7, 6, dtype=torch.float64)  # frozen: no gradient asked for
    stacked_ops.pointwise(x, w).sum().backward()
    reference = x.detach().clone().requires_grad_()
    torch.einsum("bhwkc,koc->bhwko", reference, w).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, reference.grad, rtol=1e-12, atol=1e-12)


def test_pointwise_follows_autocast_as_a_matmul_would():
    x = torch.randn(64, 3, 8, requires_grad=True)
    w = torch.randn(3, 4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = stacked_ops.pointwise(x, w)
        reference = torch.bmm(x.transpose(0, 1), w.transpose(1, 2)).transpose(0, 1)
    assert y.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(y, reference, rtol=0, atol=0)
    y.float().sum().backward()
    assert x.grad.dtype == w.grad.dtype == torch.float32  # gradients in the tensors' own dtype
    x64 = x.detach().double()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float64 is not autocast's to cast
        assert stacked_ops.pointwise(x64, w.detach().double()).dtype == torch.float64


def test_the_engine_compiles_to_one_graph_and_trains_as_it_does_eagerly() -> None:
    """Under ``torch.compile`` the 1x1 convolutions write their strided outputs by a copy
    (``_bmm_into``): the whole forward pass is one graph (PyTorch 2.4+: 2.2 and 2.3 cannot
    trace a backward reading ``ctx.needs_input_grad``, 39 graphs), and forward and backward
    equal the eager ones (float64, traced by AOTAutograd without code generation)."""
    import torch._dynamo

    one_graph = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    cell = start_cell("cnn", 4, random.Random(0))
    spec = cifar_proxy(image_size=8, width=0.25)
    engine = build_batched(cell, spec, [cell] * 3, [0, 1, 2]).double()
    x = torch.randn(4, 8, 8, 3, 3, dtype=torch.float64)
    explained = torch._dynamo.explain(engine)(x)
    if one_graph:  # 2.4 broke it into 23 at frozenset() and enumerate(start=1)
        assert explained.graph_count == 1 and explained.graph_break_count == 0
    # node inputs read from one buffer (CUDA's default), training and validating: the
    # validation pass broke into 37 graphs before (an autograd.Function under no_grad)
    buffered = build_batched(cell, spec, [cell] * 3, [0, 1, 2], node_inputs="buffer").double()
    for training in (True, False):
        torch._dynamo.reset()
        buffered.train(training)
        with torch.set_grad_enabled(training):
            explained = torch._dynamo.explain(buffered)(x)
        if one_graph:
            assert (explained.graph_count, explained.graph_break_count) == (1, 0), training
    torch._dynamo.reset()
    eager = engine(x)
    eager.square().sum().backward()
    grads = [p.grad.clone() for p in engine.parameters()]
    engine.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(engine, backend="aot_eager", dynamic=False)(x)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)
    for p, g in zip(engine.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-12)


def test_building_an_engine_gives_the_callers_generator_state_back():
    spec = cifar_proxy(in_channels=3, image_size=8, num_classes=10, width=0.25)
    cells = candidates()[:2]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    build_batched(union_cell(cells), spec, cells, [1, 2])
    assert torch.equal(torch.get_rng_state(), before)
