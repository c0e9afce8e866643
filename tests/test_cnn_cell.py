"""The CNN cell's forward pass against method section 1, written out with torch's functional ops.

The other tests compare the CNN network with its own counts (which do not see activations,
pooling or the order of a concatenation) or with the batched engine (a second implementation
of the same reading). Here the reading itself is written down once more, independently: node 0
is the input (2x2 max-pooled when the cell down-samples), every other node applies its op to the
channel concatenation of its predecessors in ascending order, leaves drop their last activation
(a leaf sep3x3 keeps the one after its depthwise part), and the cell output is the leaves
concatenated in ascending order plus the input, through a 1x1 conv + BN projection (stride 2
when down-sampling) when the shapes differ. Only the weights are read from the module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import cifar_proxy

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ACT = {"relu": F.relu, "swish": F.silu}


def bn(m: nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
    """Batch norm in eval mode, from the module's statistics and affine weights."""
    return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def layers(module: nn.Module) -> tuple[list[nn.Conv2d], list[nn.BatchNorm2d]]:
    """The convolutions and batch norms of ``module``, in order: only their weights are read."""
    mods = list(module.modules())
    return (
        [m for m in mods if isinstance(m, nn.Conv2d)],
        [m for m in mods if isinstance(m, nn.BatchNorm2d)],
    )


def op_by_hand(op: str, module: nn.Module, x: torch.Tensor, act, leaf: bool) -> torch.Tensor:
    convs, bns = layers(module)
    if op == "sep3x3":  # depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN (-> act)
        y = act(bn(bns[0], F.conv2d(x, convs[0].weight, padding=1, groups=x.shape[1])))
        y = bn(bns[1], F.conv2d(y, convs[1].weight))
    elif op == "conv1x1":  # 1x1 conv -> BN (-> act)
        y = bn(bns[0], F.conv2d(x, convs[0].weight))
    else:
        raise AssertionError(f"no reference for {op}")
    return y if leaf else act(y)


def cell_by_hand(cell: Cell, module: nn.Module, x: torch.Tensor, down: bool) -> torch.Tensor:
    act = ACT[cell.activation]
    states = {0: F.max_pool2d(x, 2, 2, ceil_mode=True) if down else x}
    leaves = [k for k in cell.live_nodes if not any(i == k for i, _ in cell.edges)]
    for k in cell.live_nodes[1:]:
        preds = sorted(i for i, j in cell.edges if j == k)
        inp = torch.cat([states[p] for p in preds], dim=1)
        states[k] = op_by_hand(cell.ops[k], module.ops[str(k)], inp, act, leaf=k in leaves)
    out = torch.cat([states[k] for k in sorted(leaves)], dim=1)
    if out.shape == x.shape:  # same shape: the input itself
        return out + x
    (conv,), (norm,) = layers(module.shortcut)  # a 1x1 conv + BN projection
    return out + bn(norm, F.conv2d(x, conv.weight, stride=2 if down else 1))


CELLS = {
    "shrinkcnn": published_cell("shrinkcnn"),  # two leaves, a leaf sep3x3 on cat[x, a]
    # an inner conv1x1, an inner sep3x3 on cat[x, node 1], one conv1x1 leaf on cat[x, node 2]:
    # 16 output channels from a 32-channel stem, so even the first cell needs a projection
    "one-leaf": Cell(
        "cnn",
        ("input", "conv1x1", "sep3x3", "conv1x1"),
        ((0, 1), (0, 2), (1, 2), (0, 3), (2, 3)),
        "swish",
    ),
}


@pytest.mark.parametrize("name", CELLS)
def test_the_network_computes_method_section_1_by_hand(name: str) -> None:
    cell = CELLS[name]
    torch.manual_seed(0)
    net = build_network(cell, cifar_proxy(in_channels=3, image_size=9, num_classes=10)).double()
    with torch.no_grad():  # statistics and affine weights that a mix-up would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    net.eval()
    images = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    # the stem: 3x3 conv (stride 1) -> BN -> act
    stem_convs, stem_bns = layers(net.stem)
    x = ACT[cell.activation](bn(stem_bns[0], F.conv2d(images, stem_convs[0].weight, padding=1)))
    downsample = [False, True, True]  # the proxy's stages 2 and 3 down-sample (method section 4)
    with torch.no_grad():
        for module, down in zip(net.cells, downsample, strict=True):
            want = cell_by_hand(cell, module, x, down)
            torch.testing.assert_close(module(x), want, rtol=1e-10, atol=1e-10)
            x = want
        assert x.shape[-2:] == (3, 3)  # 9 -> 5 -> 3 px: pooled with ceil_mode
        logits = F.linear(x.mean(dim=(2, 3)), net.classifier.weight, net.classifier.bias)
        torch.testing.assert_close(net(images), logits, rtol=1e-10, atol=1e-10)
