"""SynFlow (Tanaka et al. 2020; as a NAS proxy, Abdelfattah et al. 2021).

In float64, with every parameter replaced by its absolute value and batch norm removed, one
all-ones input (the batch's shape, batch size 1) is pushed through the network; the score is
``sum |w * dR/dw|`` over convolution and linear weights, ``R`` the sum of the outputs. The
data of the batch is not used, only its shape.
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.zero_cost.layers import scratch_copy, weight_grad, weighted_layers


def synflow(model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor) -> float:
    """The SynFlow score of ``model`` (``batch_y`` unused)."""
    del batch_y
    net = scratch_copy(model, keep_batchnorm=False).double()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    ones = torch.ones((1, *batch_x.shape[1:]), dtype=torch.float64, device=batch_x.device)
    net(ones).sum().backward()
    total = torch.zeros((), dtype=torch.float64)
    for layer in weighted_layers(net):
        total += (layer.weight * weight_grad(layer)).abs().sum().detach().cpu()
    return float(total)
