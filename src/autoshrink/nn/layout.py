"""Moving a network to its device in a memory layout, in one place.

Convolutions on a GPU, and their mixed-precision kernels, run fastest on channels-last
tensors, so the networks that train convolutions are moved there with their 4-D weights in
that layout. ``Module.to`` accepts ``memory_format``, but PyTorch's type stubs do not say so.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

Network = TypeVar("Network", bound=nn.Module)


def to_device(
    model: Network,
    device: torch.device | str,
    layout: torch.memory_format = torch.channels_last,
) -> Network:
    """``model`` on ``device``, its 4-D parameters and buffers in ``layout`` (in place, as
    ``Module.to``; returned for chaining)."""
    return model.to(device, memory_format=layout)  # type: ignore[call-overload]
