"""Jacobian covariance (Mellor et al. 2020, v1 of "NAS without Training"; NASLib's ``jacov``).

``J`` holds, per image, the gradient of the sum of the network's outputs with respect to the
input; with ``C`` the correlation matrix of the rows of ``J`` and ``v`` its eigenvalues,
``score = -sum(log(v + k) + 1 / (v + k))``, ``k = 1e-5``. Networks whose input gradients are
less correlated across images score higher.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from autoshrink.zero_cost.layers import scratch_copy

_K = 1e-5


def jacov(model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor) -> float:
    """The jacov score of ``model`` on the batch (``batch_y`` unused)."""
    del batch_y
    net = scratch_copy(model)
    x = batch_x.detach().clone().requires_grad_(True)
    out = net(x)  # (B, classes)
    out.backward(torch.ones_like(out))
    if x.grad is None:  # the output does not depend on the input: a constant (zero) gradient
        return float("-inf")
    jac = x.grad.reshape(x.shape[0], -1).double().cpu().numpy()  # (B, pixels)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jac)
    if not np.all(np.isfinite(corr)):  # an image with a constant input gradient
        return float("-inf")
    v = np.linalg.eigvalsh(corr)
    return float(-np.sum(np.log(v + _K) + 1.0 / (v + _K)))
