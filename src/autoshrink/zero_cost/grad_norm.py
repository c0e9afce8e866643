"""Gradient norm (Abdelfattah et al. 2021): the sum over convolution and linear layers of the
Euclidean norm of the layer's weight gradient of the batch's cross-entropy."""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.zero_cost.layers import loss_backward, scratch_copy, weight_grad, weighted_layers


def grad_norm(model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor) -> float:
    """The grad_norm score of ``model`` on the batch."""
    net = scratch_copy(model)
    loss_backward(net, batch_x, batch_y)
    return sum(float(weight_grad(layer).norm()) for layer in weighted_layers(net))
