"""Helpers the gradient-based proxies share: a scratch copy of a network, its weighted layers."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TypeAlias

import torch
from torch import nn

WeightedLayer: TypeAlias = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear


def scratch_copy(model: nn.Module, *, keep_batchnorm: bool = True) -> nn.Module:
    """A deep copy of ``model`` in training mode with zeroed gradients.

    ``keep_batchnorm=False`` replaces every batch-norm layer by the identity, as NASLib's
    ``bn=False`` measures do (synflow: batch statistics of an all-ones input would divide by 0).
    """
    net = copy.deepcopy(model)
    if not keep_batchnorm:
        _drop_batchnorm(net)
    net.train()
    for p in net.parameters():
        p.grad = None
    return net


def _drop_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _drop_batchnorm(child)


def weighted_layers(net: nn.Module) -> Iterator[WeightedLayer]:
    """The convolution and linear layers, the layers every proxy sums over."""
    for m in net.modules():
        if isinstance(m, WeightedLayer):
            yield m


def weight_grad(layer: WeightedLayer) -> torch.Tensor:
    """``layer.weight.grad``, zeros when the weight took no part in the loss."""
    g = layer.weight.grad
    return torch.zeros_like(layer.weight) if g is None else g


def loss_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One cross-entropy forward/backward of ``net`` on ``(x, y)``."""
    out = net(x)  # (B, classes)
    nn.functional.cross_entropy(out, y).backward()
