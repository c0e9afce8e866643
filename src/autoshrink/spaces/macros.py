"""Macro networks: how cells are stacked into a whole CNN, as plain settings (no torch).

A :class:`MacroSpec` names the stem, the stages (cells per stage, channels per node ``F``,
whether the stage starts by down-sampling) and the head. Both the network builder
(:mod:`autoshrink.nn.cnn`) and the analytic counter (:mod:`autoshrink.cost.cells`) read it, so a
network and its count cannot drift apart. Two macros are defined: the CIFAR proxy network of
the search (method §4) and the ShrinkCNN ImageNet network (method §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from autoshrink.errors import ConfigError
from autoshrink.ranges import (
    MAX_CLASSES,
    MAX_COUNT,
    REQUIREMENTS,
    WHOLE,
    check_at_most,
    check_fields,
    is_number,
)

#: The widest width multiplier a network may have: already 64x takes a ShrinkCNN or a
#: MobileNetV2 to over a billion parameters, and a far larger one would overflow the channel
#: counts.
MAX_WIDTH = 64.0


def check_width(width: object, what: str = "width") -> None:
    """Raise :class:`ConfigError` naming ``what`` unless ``width`` is a number in
    ``(0, MAX_WIDTH]``."""
    if not (is_number(width) and 0 < width <= MAX_WIDTH):  # type: ignore[operator]
        raise ConfigError(f"{what} must be a number in (0, {MAX_WIDTH:g}], got {width!r}")


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """One stage: ``cells`` cells whose op nodes output ``channels`` channels each."""

    cells: int
    channels: int
    downsample: bool


@dataclass(frozen=True, kw_only=True)
class MacroSpec:
    """A whole network around a cell.

    Attributes:
        name: the macro's registered name.
        in_channels, image_size: the input images (square).
        num_classes: outputs of the final linear layer.
        stem_channels, stem_stride: the 3x3 stem convolution.
        stages: the cell stages, in order; a down-sampling stage's first cell has a 2x2
            max-pool (stride 2) as node 0.
        head_channels: a 1x1 conv + BN + act before global pooling, or ``None``.
        width: the width multiplier the macro's channels were scaled by (a record of how
            they were made; the channels above are what the network has).
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    stages: tuple[StageSpec, ...]
    head_channels: int | None = None
    width: float = 1.0

    def __post_init__(self) -> None:
        sizes = ("in_channels", "image_size", "num_classes", "stem_channels")  # NaN, 2.5: no
        check_fields(f"macro {self.name}", self, {WHOLE: sizes})
        most = {"image_size": MAX_COUNT, "in_channels": MAX_COUNT, "num_classes": MAX_CLASSES}
        check_at_most(f"macro {self.name}", self, most)  # a file's (10^6 px ran out of memory)
        if self.stem_stride not in (1, 2):
            raise ConfigError(f"macro {self.name}: stem_stride must be 1 or 2")
        if self.head_channels is not None:  # a negative head counted negative parameters
            check_fields(f"macro {self.name}", self, {WHOLE: ("head_channels",)})
            check_at_most(f"macro {self.name}", self, {"head_channels": MAX_COUNT})
        if not self.stages:
            raise ConfigError(f"macro {self.name}: needs at least one stage, got none")
        for i, stage in enumerate(self.stages):
            check_stage(f"macro {self.name}", i, stage)
        if self.image_size < 2 ** sum(s.downsample for s in self.stages):
            raise ConfigError(
                f"macro {self.name}: {self.image_size}px input is too small for "
                f"{sum(s.downsample for s in self.stages)} down-sampling stages"
            )

    def settings(self) -> dict[str, float | int]:
        """The settings a user gives the macro (``--width``, ``--image-size``, ...), as JSON."""
        return {
            "width": self.width,
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
        }


def check_stage(where: str, i: int, stage: object) -> None:
    """Raise :class:`ConfigError` naming stage ``i`` unless it is a :class:`StageSpec` of
    whole numbers >= 1 of cells and channels (1.5 cells met ``range`` deep in a count)."""
    if not isinstance(stage, StageSpec):
        raise ConfigError(f"{where}: stage {i} must be a StageSpec, got {type(stage).__name__}")
    if not all(REQUIREMENTS[WHOLE](n) for n in (stage.cells, stage.channels)):
        raise ConfigError(
            f"{where}: every stage needs >= 1 cell and channel (whole numbers); stage {i} has "
            f"{stage.cells!r} cells of {stage.channels!r} channels"
        )
    check_at_most(f"{where}: stage {i}", stage, {"cells": MAX_COUNT, "channels": MAX_COUNT})


def make_divisible(f: float, divisor: int = 4) -> int:
    """Round a channel count to a multiple of ``divisor`` (at least ``divisor``), as the paper."""
    return max(round(f / divisor), 1) * divisor


def cifar_proxy(
    *, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0
) -> MacroSpec:
    """The search's proxy network (§4): stem 3x3/32, stages F = 16, 32, 64 of one cell each,
    stages 2 and 3 down-sampling, global pool, linear."""
    check_width(width, "macro cifar-proxy: width")
    f = [max(1, int(c * width)) for c in (16, 32, 64)]
    return MacroSpec(
        name="cifar-proxy",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        stem_channels=max(1, int(32 * width)),
        stem_stride=1,
        stages=tuple(StageSpec(cells=1, channels=c, downsample=k > 0) for k, c in enumerate(f)),
        width=width,
    )


SHRINKCNN_DEPTHS = (1, 3, 4, 6, 4)


def shrinkcnn_imagenet(
    *,
    width: float = 1.4,
    depths: tuple[int, ...] = SHRINKCNN_DEPTHS,
    image_size: int = 224,
    num_classes: int = 1001,
    in_channels: int = 3,
) -> MacroSpec:
    """The ShrinkCNN ImageNet network (§6): stem 3x3 stride 2, five stages with
    F = make_divisible(int(16 * scale * width)), scale = 0.5, 1, 2, 4, 8 (more stages double
    on), stages 2.. down-sampling, head 1x1 conv to 1280."""
    check_width(width, "macro shrinkcnn-imagenet: width")
    scales = [0.5 * 2**k for k in range(len(depths))]
    return MacroSpec(
        name="shrinkcnn-imagenet",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        stem_channels=make_divisible(int(32 * width)),
        stem_stride=2,
        stages=tuple(
            StageSpec(cells=d, channels=make_divisible(int(16 * s * width)), downsample=k > 0)
            for k, (d, s) in enumerate(zip(depths, scales, strict=True))
        ),
        head_channels=1280,
        width=width,
    )


MACROS = MappingProxyType({"cifar-proxy": cifar_proxy, "shrinkcnn-imagenet": shrinkcnn_imagenet})
#: The network a cell is built into when no macro is named: the one a search scores.
DEFAULT_MACRO = "cifar-proxy"


def get_macro(name: str, **settings: object) -> MacroSpec:
    """A registered macro by name, with keyword settings (width, image_size, ...)."""
    try:
        factory = MACROS[name]
    except KeyError:
        raise ConfigError(f"unknown macro {name!r}; expected one of {sorted(MACROS)}") from None
    try:
        return factory(**settings)  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"macro {name}: {err}") from None
