"""The CNN operations: one factory per op name, in the read-only :data:`OP_FACTORIES`.

Every factory has the signature ``(c_in, c_out, act, linear) -> nn.Module`` and maps
``[B, c_in, H, W] -> [B, c_out, H, W]`` at stride 1. ``linear=True`` is used for leaf nodes,
whose final activation is dropped (the "linear bottleneck" of the method); a leaf ``sep3x3``
keeps the activation after its depthwise part. Convolutions have no bias (batch norm follows).
The registered names are exactly the cnn vocabulary of :data:`autoshrink.graph.OPS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import nn

from autoshrink.errors import ConfigError

OpFactory = Callable[[int, int, str, bool], nn.Module]


def registered_ops() -> tuple[str, ...]:
    """The names of the CNN ops :func:`build_op` can build, sorted."""
    return tuple(sorted(OP_FACTORIES))


def build_op(name: str, c_in: int, c_out: int, act: str, linear: bool) -> nn.Module:
    """Instantiate the op ``name``."""
    try:
        factory = OP_FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown op {name!r}; expected one of {registered_ops()}") from None
    return factory(c_in, c_out, act, linear)


def activation(name: str) -> nn.Module:
    """``relu``, ``swish`` (SiLU) or ``relu6`` (MobileNetV2's)."""
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "relu6":
        return nn.ReLU6()
    if name == "swish":
        return nn.SiLU()
    raise ConfigError(f"unknown activation {name!r}; expected 'relu', 'swish' or 'relu6'")


class StridedPointwiseConv(nn.Conv2d):
    """A 1x1 convolution at ``stride`` s, computed as a stride-1 one on every s-th pixel.

    The same numbers as ``nn.Conv2d(c_in, c_out, 1, stride=s)`` (same weight and state dict),
    but it never reaches oneDNN's strided 1x1 kernels: their weight gradient on a channels-last
    input with fewer than 8 input channels writes past a workspace (oneDNN issue #6035), which
    aborts with heap corruption or silently returns wrong gradients on AVX2 CPUs.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(c_in, c_out, 1, bias=False)
        self.subsample = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, c_in, H, W]`` -> ``[B, c_out, ceil(H/s), ceil(W/s)]``: the stride-1 1x1
        convolution of every s-th pixel of every s-th row."""
        s = self.subsample
        return super().forward(x[:, :, ::s, ::s])


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A bias-free convolution (``same`` padding) and its batch norm."""
    conv = (
        StridedPointwiseConv(c_in, c_out, stride)
        if k == 1 and stride > 1 and groups == 1
        else nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False)
    )
    return [conv, nn.BatchNorm2d(c_out)]


def _adapter(c_in: int, c_out: int) -> list[nn.Module]:
    """A 1x1 conv + BN that fits the channel count, or nothing when it already fits."""
    return [] if c_in == c_out else conv_bn(c_in, c_out, 1)


def sep3x3(c_in: int, c_out: int, act: str, linear: bool) -> nn.Module:
    """Depthwise 3x3 + BN + activation, then pointwise 1x1 + BN (+ activation unless ``linear``)."""
    layers = [*conv_bn(c_in, c_in, 3, groups=c_in), activation(act), *conv_bn(c_in, c_out, 1)]
    return nn.Sequential(*layers, *([] if linear else [activation(act)]))


def conv1x1(c_in: int, c_out: int, act: str, linear: bool) -> nn.Module:
    """Pointwise 1x1 convolution + BN (+ activation unless ``linear``)."""
    return nn.Sequential(*conv_bn(c_in, c_out, 1), *([] if linear else [activation(act)]))


def conv3x3(c_in: int, c_out: int, act: str, linear: bool) -> nn.Module:
    """Full 3x3 convolution + BN (+ activation unless ``linear``)."""
    return nn.Sequential(*conv_bn(c_in, c_out, 3), *([] if linear else [activation(act)]))


def maxpool3x3(c_in: int, c_out: int, act: str, linear: bool) -> nn.Module:
    """3x3 max pooling, stride 1, after a 1x1 adapter when the widths differ."""
    return nn.Sequential(*_adapter(c_in, c_out), nn.MaxPool2d(3, stride=1, padding=1))


def identity(c_in: int, c_out: int, act: str, linear: bool) -> nn.Module:
    """The input, through a 1x1 adapter when the widths differ."""
    return nn.Sequential(*_adapter(c_in, c_out))


#: The factory of each CNN op name (read-only).
OP_FACTORIES: Mapping[str, OpFactory] = MappingProxyType(
    {
        "sep3x3": sep3x3,
        "conv1x1": conv1x1,
        "conv3x3": conv3x3,
        "maxpool3x3": maxpool3x3,
        "identity": identity,
    }
)
