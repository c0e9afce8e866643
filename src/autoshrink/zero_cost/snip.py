"""SNIP (Lee et al. 2019; as a NAS proxy, Abdelfattah et al. 2021).

The saliency of a weight is ``|dL/dm|`` for a multiplicative mask ``m = 1`` on it, which is
``|w * dL/dw|``; the score sums it over convolution and linear weights, ``L`` the
cross-entropy of the batch (network in training mode, batch norm on).
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.zero_cost.layers import loss_backward, scratch_copy, weight_grad, weighted_layers


def snip(model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor) -> float:
    """The SNIP score of ``model`` on the batch."""
    net = scratch_copy(model)
    loss_backward(net, batch_x, batch_y)
    total = 0.0
    for layer in weighted_layers(net):
        total += float((layer.weight * weight_grad(layer)).detach().abs().sum())
    return total
