"""MobileNetV2 (Sandler et al., 2018) with a width multiplier: the baseline ShrinkCNN is
compared with.

Stem 3x3 conv stride 2 + BN + ReLU6; seventeen inverted-residual blocks (1x1 expansion + BN +
ReLU6, depthwise 3x3 + BN + ReLU6, linear 1x1 projection + BN, a residual add when stride 1
and channels match); 1x1 conv to 1280 (more above width 1) + BN + ReLU6; global average
pool; dropout; linear. Layer shapes come from :func:`autoshrink.cost.mobilenetv2.mobilenetv2_plan`,
the same plan the analytic counter reads, so the network and its count cannot drift apart.
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.cost.mobilenetv2 import BlockPlacement, MobileNetV2Spec, mobilenetv2_plan
from autoshrink.nn.ops import conv_bn


class InvertedResidual(nn.Module):
    """``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``."""

    def __init__(self, b: BlockPlacement) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if b.expands:
            layers += [*conv_bn(b.in_channels, b.hidden, 1), nn.ReLU6()]
        layers += [
            *conv_bn(b.hidden, b.hidden, b.kernel, stride=b.stride, groups=b.hidden),
            nn.ReLU6(),
            *conv_bn(b.hidden, b.out_channels, 1),  # linear bottleneck: no activation
        ]
        self.body = nn.Sequential(*layers)
        self.residual = b.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` -> ``[B, C_out, H / stride, W / stride]``: the block's layers, plus
        ``x`` when the block is residual."""
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 for ``spec``: ``[B, in_channels, S, S] -> [B, num_classes]``.

    ``blocks`` replaces MobileNetV2's own plan by another point of the inverted-residual space
    (:mod:`autoshrink.singlepath.space`); stem, head and classifier stay ``spec``'s.
    """

    def __init__(
        self,
        spec: MobileNetV2Spec,
        dropout: float = 0.2,
        blocks: list[BlockPlacement] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential(
            *conv_bn(spec.in_channels, spec.stem_channels, 3, stride=2), nn.ReLU6()
        )
        blocks = mobilenetv2_plan(spec) if blocks is None else blocks
        self.blocks = nn.Sequential(*(InvertedResidual(b) for b in blocks))
        self.head = nn.Sequential(
            *conv_bn(blocks[-1].out_channels, spec.last_channels, 1), nn.ReLU6()
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(spec.last_channels, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``x [B, in_channels, S, S]`` -> logits ``[B, num_classes]``: stem, blocks, head,
        global average pool, dropout, classifier."""
        x = self.head(self.blocks(self.stem(x)))  # [B, C, H/32, W/32]
        return self.classifier(self.dropout(x.mean(dim=(2, 3))))  # [B, classes]


def build_mobilenetv2(
    width: float = 1.4,
    *,
    image_size: int = 224,
    num_classes: int = 1001,
    in_channels: int = 3,
    dropout: float = 0.2,
) -> MobileNetV2:
    """A MobileNetV2 with width multiplier ``width`` (1.4 is the one ShrinkCNN is compared to)."""
    spec = MobileNetV2Spec(
        width=width, image_size=image_size, num_classes=num_classes, in_channels=in_channels
    )
    return MobileNetV2(spec, dropout)
