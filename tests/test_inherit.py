"""Weight inheritance (nn/inherit.py): a cut network computes what the trained one does when the
removed edge carried nothing, copies BN statistics, and drops unreachable nodes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from autoshrink.cost.cells import plan
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.nn.inherit import Inheritance, inherit_cnn
from autoshrink.spaces.macros import MacroSpec, cifar_proxy

OPS = ("input", "sep3x3", "conv3x3", "identity", "conv1x1", "maxpool3x3")
SPEC = cifar_proxy(in_channels=1, image_size=8, num_classes=4, width=0.5)


def _trained(cell: Cell, seed: int = 0, spec: MacroSpec = SPEC) -> nn.Module:
    """A float64 network with random weights and random BN statistics (as after training)."""
    torch.manual_seed(seed)
    net = build_network(cell, spec).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _zero_edge(net: nn.Module, cell: Cell, edge: tuple[int, int], spec: MacroSpec = SPEC) -> None:
    """Zero, in every cell, the input columns of node j's mixing conv (its op's last) that read
    node i."""
    i, j = edge
    for c, where in enumerate(plan(cell, spec)):
        width = {p: where.in_channels if p == 0 else where.nodes for p in cell.live_nodes}
        preds = cell.predecessors(j)
        start = sum(width[p] for p in preds[: preds.index(i)])
        op = net.cells[c].ops[str(j)]
        conv = [m for m in op.modules() if isinstance(m, nn.Conv2d)][-1]
        with torch.no_grad():
            conv.weight[:, start : start + width[i]] = 0.0


# edges whose removal leaves every node live and changes no leaf (i keeps a successor)
EXACT = [(0, 2), (0, 5), (1, 3), (2, 4), (1, 5), (3, 5)]


@pytest.mark.parametrize("edge", EXACT)
@pytest.mark.parametrize(
    "ops",
    # and with the separable convolution on node 5, whose depthwise part follows the channels
    # of all five inputs it reads
    [OPS, ("input", "conv1x1", "conv3x3", "identity", "maxpool3x3", "sep3x3")],
    ids=["sep-first", "sep-last"],
)
def test_cut_network_computes_the_same_when_the_edge_carried_nothing(edge, ops):
    parent = Cell.complete("cnn", ops)
    child = parent.remove_edge(edge)
    assert child.live_nodes == parent.live_nodes and child.leaves == parent.leaves
    net = _trained(parent)
    _zero_edge(net, parent, edge)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    cut, _ = inherit_cnn(net, parent, child, SPEC)
    cut.eval()
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in net.parameters())
    torch.testing.assert_close(cut(x), net(x), rtol=1e-12, atol=1e-12)


def test_a_cell_of_two_leaves_keeps_their_channels_in_order():
    """The complete cell above has one leaf; here the parent has two (3 and 4), whose outputs
    the cell concatenates in ascending order, the next cell reading them so. Removing (0, 4)
    after zeroing what it carried keeps every node and both leaves: the cut network computes
    what the trained one does (with the leaves' channels taken in another order, the next
    cell and the shortcut read the wrong ones)."""
    parent = Cell(
        "cnn",
        ("input", "sep3x3", "conv3x3", "conv1x1", "conv1x1"),
        ((0, 1), (0, 2), (1, 3), (2, 3), (0, 4), (1, 4)),
    )
    assert parent.leaves == (3, 4)
    child = parent.remove_edge((0, 4))
    assert child.leaves == parent.leaves and child.live_nodes == parent.live_nodes
    net = _trained(parent)
    _zero_edge(net, parent, (0, 4))
    cut, _ = inherit_cnn(net, parent, child, SPEC)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(cut.eval()(x), net(x), rtol=1e-12, atol=1e-12)


def test_a_copy_along_a_channel_map_keeps_the_new_channels_values():
    """_Copier.take: dst[i] = src[map[i]], and a channel mapped to None keeps dst's value
    (here 7), by hand: rows src[2], 7, src[0]."""
    from autoshrink.nn.inherit import _Copier

    src = torch.arange(8.0).view(4, 2)
    dst = torch.full((3, 2), 7.0)
    _Copier().take(dst, src, {0: [2, None, 0]})
    assert torch.equal(dst, torch.tensor([[4.0, 5.0], [7.0, 7.0], [0.0, 1.0]]))


def test_a_depthwise_convolution_of_one_channel_follows_its_input_channel():
    """At width 0.1 the first cell's nodes are one channel wide, so a sep3x3 that reads one of
    them has a depthwise convolution with ``groups == 1``; it was taken for the mixing one (an
    IndexError, or a shape error journalled as a failed one-shot candidate)."""
    narrow = cifar_proxy(in_channels=1, image_size=8, num_classes=4, width=0.1)
    assert plan(Cell.complete("cnn", OPS), narrow)[0].nodes == 1
    parent = Cell(
        "cnn", ("input", "conv3x3", "conv3x3", "sep3x3"), ((0, 1), (1, 2), (1, 3), (2, 3))
    )
    child = parent.remove_edge((1, 3))  # node 3 reads node 2 alone; the leaves are kept
    net = _trained(parent, spec=narrow)
    _zero_edge(net, parent, (1, 3), narrow)
    cut, _ = inherit_cnn(net, parent, child, narrow)
    assert cut.cells[0].ops["3"][0].groups == 1 and cut.cells[0].ops["3"][0].in_channels == 1
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(cut.eval()(x), net(x), rtol=1e-12, atol=1e-12)


def test_without_zeroing_the_outputs_differ():
    """The exactness above is not vacuous: the removed edge matters when it carries weights."""
    parent = Cell.complete("cnn", OPS)
    net = _trained(parent)
    cut, _ = inherit_cnn(net, parent, parent.remove_edge((1, 3)), SPEC)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    assert (cut.eval()(x) - net(x)).abs().max() > 1e-3


def test_bn_statistics_and_slices_are_copied():
    parent = Cell.complete("cnn", OPS)
    net = _trained(parent)
    child = parent.remove_edge((1, 4))  # node 4 (conv1x1) reads [0, 2, 3] instead of [0, 1, 2, 3]
    cut, _ = inherit_cnn(net, parent, child, SPEC)
    for c, where in enumerate(plan(parent, SPEC)):
        f, c_in = where.nodes, where.in_channels
        old = net.cells[c].ops["4"][0].weight  # [f, c_in + 3f, 1, 1]
        new = cut.cells[c].ops["4"][0].weight  # [f, c_in + 2f, 1, 1]
        keep = list(range(c_in)) + list(range(c_in + f, c_in + 3 * f))
        torch.testing.assert_close(new, old[:, keep], rtol=0, atol=0)
        bn_old, bn_new = net.cells[c].ops["1"][1], cut.cells[c].ops["1"][1]  # sep3x3's BN(c_in)
        torch.testing.assert_close(bn_new.running_var, bn_old.running_var, rtol=0, atol=0)
    torch.testing.assert_close(cut.classifier.weight, net.classifier.weight, rtol=0, atol=0)


def test_unreachable_nodes_are_dropped_and_new_leaves_read_as_zero():
    parent = Cell(
        "cnn", ("input", "conv3x3", "sep3x3", "conv1x1"), ((0, 1), (1, 2), (1, 3), (2, 3))
    )
    child = parent.remove_edge((2, 3))  # node 2 becomes a leaf: wider cell output
    assert child.leaves == (2, 3)
    net = _trained(parent)
    cut, report = inherit_cnn(net, parent, child, SPEC)
    assert report.set_new > 0
    # cell 0's output is [node 2 (new), node 3]: the next cell reads node 2's channels with
    # zero weights and node 3's with the trained ones
    f0 = plan(child, SPEC)[0].nodes
    assert plan(child, SPEC)[1].in_channels == 2 * f0 == 2 * plan(parent, SPEC)[1].in_channels
    first = cut.cells[1].ops["1"][0].weight  # conv3x3 of node 1 reads node 0 = cell 0's output
    assert first.shape[1] == 2 * f0
    assert torch.count_nonzero(first[:, :f0]) == 0
    torch.testing.assert_close(first[:, f0:], net.cells[1].ops["1"][0].weight, rtol=0, atol=0)
    # so does cell 1's projection shortcut; its output is [node 2 (new), node 3] as well
    f1 = plan(child, SPEC)[1].nodes
    shortcut, trained = cut.cells[1].shortcut[0].weight, net.cells[1].shortcut[0].weight
    assert shortcut.shape == (2 * f1, 2 * f0, 1, 1) and torch.count_nonzero(shortcut[:, :f0]) == 0
    torch.testing.assert_close(shortcut[f1:, f0:], trained, rtol=0, atol=0)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert cut.eval()(x).shape == (2, 4)
    dead = parent.remove_edge((1, 2))  # node 2 loses its only input: dropped with its weights
    cut2, _ = inherit_cnn(net, parent, dead, SPEC)
    assert "2" not in cut2.cells[0].ops


def test_an_identity_shortcut_that_must_become_a_projection_passes_the_old_channels_through():
    """Cell 0 of the parent maps 8 channels to 8 (an identity shortcut); the child's gains a
    leaf, 8 -> 16, so it needs a projection: set to give the old leaf's channels the input as
    the identity did, exactly, and the new leaf's channels nothing."""
    spec = replace(SPEC, stem_channels=8)
    parent = Cell(
        "cnn", ("input", "conv3x3", "sep3x3", "conv1x1"), ((0, 1), (1, 2), (1, 3), (2, 3))
    )
    child = parent.remove_edge((2, 3))  # cell output: [node 2 (new), node 3]
    torch.manual_seed(0)
    net = build_network(parent, spec).double().eval()
    assert isinstance(net.cells[0].shortcut, nn.Identity)
    cut, _ = inherit_cnn(net, parent, child, spec)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    y = cut.cells[0].shortcut.eval()(x)
    assert y.shape == (2, 16, 8, 8) and torch.count_nonzero(y[:, :8]) == 0
    torch.testing.assert_close(y[:, 8:], x, rtol=0, atol=0)


def test_a_head_conv_reads_a_new_leaf_as_zero_and_the_report_counts_tensors():
    """With a 1x1 head (MobileNet-style macros), a new leaf's channels reach the head: its
    input columns start at zero; an unchanged cell copies every tensor and sets none."""
    spec = replace(SPEC, head_channels=16)
    parent = Cell(
        "cnn", ("input", "conv3x3", "sep3x3", "conv1x1"), ((0, 1), (1, 2), (1, 3), (2, 3))
    )
    child = parent.remove_edge((2, 3))  # the last cell's output: [node 2 (new), node 3]
    torch.manual_seed(0)
    net = build_network(parent, spec).double().eval()
    cut, report = inherit_cnn(net, parent, child, spec)
    f = plan(child, spec)[-1].nodes
    head, trained = cut.head[0].weight, net.head[0].weight  # [16, 2f, 1, 1] and [16, f, 1, 1]
    assert head.shape == (16, 2 * f, 1, 1) and trained.shape == (16, f, 1, 1)
    assert torch.count_nonzero(head[:, :f]) == 0
    torch.testing.assert_close(head[:, f:], trained, rtol=0, atol=0)
    torch.testing.assert_close(cut.classifier.weight, net.classifier.weight, rtol=0, atol=0)
    assert report.set_new > 0
    same, whole = inherit_cnn(net, parent, parent, spec)
    assert whole == Inheritance(copied=len(net.state_dict()), set_new=0)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(same.eval()(x), net(x), rtol=0, atol=0)


def test_only_sub_cells_inherit():
    parent = Cell.complete("cnn", OPS)
    other = Cell.complete("cnn", ("input", "conv1x1", *OPS[2:]))
    with pytest.raises(ConfigError, match="same kind, ops"):
        inherit_cnn(_trained(parent), parent, other, SPEC)
    smaller = parent.remove_edge((0, 1))
    with pytest.raises(ConfigError, match=r"^cell has edge \(0, 1\) that the trained cell lacks$"):
        inherit_cnn(_trained(smaller), smaller, parent, SPEC)
