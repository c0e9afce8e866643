"""NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021, v2).

Every ReLU-family activation's input is turned into a binary code per image (1 where the unit is
active); the kernel ``K[i, j]`` counts the units on which images ``i`` and ``j`` agree (both
active or both inactive), summed over activations; the score is ``log |det K|``. A network that
separates the images of a batch into distinct linear regions scores higher. The batch should
hold at least two images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from autoshrink.zero_cost.layers import scratch_copy

#: Activations whose input sign is the unit's on/off code.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish)


def naswot(model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor) -> float:
    """The NASWOT score of ``model`` on the batch (``batch_y`` unused)."""
    del batch_y
    net = scratch_copy(model)
    n = batch_x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def count(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        code = (inputs[0].detach().reshape(n, -1) > 0).double().cpu()  # (B, units)
        kernel.add_(code @ code.T).add_((1.0 - code) @ (1.0 - code).T)

    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, ACTIVATIONS)]
    try:
        with torch.no_grad():
            net(batch_x)
    finally:
        for h in handles:
            h.remove()
    _sign, logdet = np.linalg.slogdet(kernel.numpy())
    return float(logdet)
