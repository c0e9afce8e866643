"""MobileNetV2 as plain settings, and its parameters and MACs by the published convention.

The comparison baseline of ShrinkCNN (method §6). :class:`MobileNetV2Spec` fixes the width
multiplier, input size and classes; :func:`mobilenetv2_plan` lays out every inverted-residual
block (expand 1x1 -> depthwise 3x3 -> linear project 1x1, a residual add when stride 1 and the
channels match) and :func:`count_mobilenetv2` counts them with the rules of method §5 that
:mod:`autoshrink.cost.cells` uses for ShrinkCNN: a separable pair (depthwise + pointwise) is
``k²·C + C·C_out`` parameters and ``k²·C·H_out·W_out + C·C_out·H_out·W_out`` MACs, a 1x1
conv ``C_in·C_out`` (MACs times the pixels), the linear layer ``(in+1)·out`` / ``in·out``;
batch norm, activations, pooling and adds are free.

Channels follow the reference implementation: ``make_divisible(c · width, 8)`` (round to a
multiple of 8, never below 90% of the target); the last 1x1 layer keeps 1280 channels for
width <= 1 and grows with the width above 1 (1792 at 1.4). The counts match the table of the
released TF-slim checkpoints (e.g. 1.4 at 224: 582M MACs, 6.06M params; 1.0: 300M, 3.47M).
No torch in this module: :mod:`autoshrink.nn.mobilenetv2` builds the network from this plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoshrink.cost.cells import ZERO, Counts, halve
from autoshrink.errors import ConfigError
from autoshrink.ranges import MAX_CLASSES, MAX_COUNT, WHOLE, check_at_most, check_fields
from autoshrink.spaces.macros import check_width

#: (expansion t, output channels c, repeats n, first stride s) of the seven bottleneck stages.
BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible8(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, at least ``divisor``,
    and bumped up one step when rounding lost more than 10% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True, kw_only=True)
class MobileNetV2Spec:
    """A MobileNetV2: width multiplier, square input and classes (1001: ImageNet + background)."""

    width: float = 1.4
    image_size: int = 224
    num_classes: int = 1001
    in_channels: int = 3

    def __post_init__(self) -> None:
        check_width(self.width, "MobileNetV2 width")
        check_fields("MobileNetV2", self, {WHOLE: ("image_size", "num_classes", "in_channels")})
        most = {"image_size": MAX_COUNT, "in_channels": MAX_COUNT, "num_classes": MAX_CLASSES}
        check_at_most("MobileNetV2", self, most)  # an architecture file's
        if self.image_size < 32:
            raise ConfigError(
                f"MobileNetV2 needs images of at least 32px (5 stride-2 steps), "
                f"got {self.image_size}; pass --image-size 32 (or more) to resize the images"
            )

    @property
    def stem_channels(self) -> int:
        """Channels of the stride-2 stem: 32 x ``width``, rounded by :func:`make_divisible8`."""
        return make_divisible8(STEM_CHANNELS * self.width)

    @property
    def last_channels(self) -> int:
        """Channels of the last 1x1 layer: 1280, grown with ``width`` above 1 (1792 at 1.4)."""
        return make_divisible8(LAST_CHANNELS * self.width) if self.width > 1 else LAST_CHANNELS


@dataclass(frozen=True)
class BlockPlacement:
    """One inverted-residual block: channels, expansion width, stride, spatial sizes and the
    depthwise kernel (3 in MobileNetV2; the Single-Path space also has 5)."""

    in_channels: int
    hidden: int
    out_channels: int
    stride: int
    in_size: int
    out_size: int
    kernel: int = 3

    @property
    def expands(self) -> bool:
        """Whether the block starts with a 1x1 expansion (t > 1)."""
        return self.hidden != self.in_channels

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output (stride 1, same channels in and out)."""
        return self.stride == 1 and self.in_channels == self.out_channels


def mobilenetv2_plan(spec: MobileNetV2Spec) -> list[BlockPlacement]:
    """Every bottleneck block of ``spec`` in order (after the stride-2 stem)."""
    size, channels = halve(spec.image_size), spec.stem_channels
    out: list[BlockPlacement] = []
    for t, c, n, s in BLOCKS:
        c_out = make_divisible8(c * spec.width)
        for k in range(n):
            stride = s if k == 0 else 1
            out_size = halve(size) if stride == 2 else size
            out.append(BlockPlacement(channels, channels * t, c_out, stride, size, out_size))
            channels, size = c_out, out_size
    return out


def block_counts(b: BlockPlacement) -> Counts:
    """Counts of one block by the convention (expansion, depthwise + project as a separable)."""
    total = ZERO
    if b.expands:
        total += Counts(b.in_channels * b.hidden, b.in_size**2 * b.in_channels * b.hidden)
    hw, kk = b.out_size**2, b.kernel**2
    return total + Counts(
        kk * b.hidden + b.hidden * b.out_channels,
        kk * b.hidden * hw + b.hidden * b.out_channels * hw,
    )


def count_mobilenetv2(spec: MobileNetV2Spec) -> Counts:
    """Parameters and MACs of the whole MobileNetV2 ``spec`` (stem, blocks, head, classifier)."""
    return count_blocks(spec, mobilenetv2_plan(spec))


def count_blocks(spec: MobileNetV2Spec, blocks: list[BlockPlacement]) -> Counts:
    """Parameters and MACs of ``spec``'s stem, head and classifier around ``blocks`` (its own
    plan for MobileNetV2; another point of the inverted-residual space otherwise)."""
    stem = halve(spec.image_size)
    total = Counts(
        9 * spec.in_channels * spec.stem_channels,
        stem * stem * 9 * spec.in_channels * spec.stem_channels,
    )
    for b in blocks:
        total += block_counts(b)
    last = blocks[-1]
    head = spec.last_channels
    total += Counts(last.out_channels * head, last.out_size**2 * last.out_channels * head)
    return total + Counts((head + 1) * spec.num_classes, head * spec.num_classes)
