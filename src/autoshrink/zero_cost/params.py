"""The number of trainable parameters, the simplest zero-cost baseline."""

from __future__ import annotations

import torch
from torch import nn


def params(model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor) -> float:
    """Trainable parameters of ``model`` (the batch is unused)."""
    del batch_x, batch_y
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))
