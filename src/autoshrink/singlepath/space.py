"""The Single-Path search space: MobileNetV2's macro with a choice per inverted-residual layer.

MobileNetV2's stem (3x3 conv, stride 2), first block (expansion 1, 3x3, fixed), head (1x1 conv
to 1280 channels, more above width 1) and classifier stay as they are; each of the other 16
inverted-residual layers picks a depthwise kernel {3, 5} and an expansion {3, 6} (``k3e3``,
``k3e6``, ``k5e3``, ``k5e6``), or ``skip`` where the layer is stride 1 with as many input as
output channels (every layer of a stage but the first). MobileNetV2 is the point with ``k3e6``
everywhere (:func:`mobilenetv2_arch`).

An :class:`MBConvArch` is saved as JSON::

    {"format": "autoshrink.mbconv/1", "width": 1.0, "image_size": 224, "num_classes": 1001,
     "in_channels": 3, "layers": ["k3e6", "skip", ...]}

It is counted (:func:`count_arch`) by the very code that counts MobileNetV2
(:func:`autoshrink.cost.mobilenetv2.count_blocks`) and built (:func:`build_arch`) by the very
module (:class:`autoshrink.nn.mobilenetv2.MobileNetV2`); no torch at import here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.atomic_write import write_json
from autoshrink.cost.cells import Counts
from autoshrink.cost.mobilenetv2 import (
    BlockPlacement,
    MobileNetV2Spec,
    count_blocks,
    mobilenetv2_plan,
)
from autoshrink.errors import ConfigError
from autoshrink.user_files import json_type_problem, read_json_file

if TYPE_CHECKING:
    from autoshrink.nn.mobilenetv2 import MobileNetV2

FORMAT = "autoshrink.mbconv/1"
KERNELS = (3, 5)
EXPANSIONS = (3, 6)
SKIP = "skip"
DROPOUT = 0.2  # before the classifier, as MobileNetV2 trains
CHOICES = tuple(f"k{k}e{e}" for k in KERNELS for e in EXPANSIONS)


def parse_choice(choice: str) -> tuple[int, int]:
    """``"k5e3"`` -> ``(5, 3)``; a ConfigError for anything else but those of :data:`CHOICES`."""
    if choice not in CHOICES:
        raise ConfigError(f"unknown layer choice {choice!r}; expected one of {[*CHOICES, SKIP]}")
    return int(choice[1]), int(choice[3])


@dataclass(frozen=True)
class LayerSlot:
    """A searchable layer's place in the macro: channels, stride, sizes, whether it may skip."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    out_size: int

    @property
    def skippable(self) -> bool:
        """Whether the layer may be ``skip``: stride 1, as many input as output channels."""
        return self.stride == 1 and self.in_channels == self.out_channels

    def placement(self, choice: str) -> BlockPlacement:
        """The inverted-residual block of ``choice`` here (not for ``skip``)."""
        k, e = parse_choice(choice)
        return BlockPlacement(
            self.in_channels,
            self.in_channels * e,
            self.out_channels,
            self.stride,
            self.in_size,
            self.out_size,
            kernel=k,
        )


def macro_slots(spec: MobileNetV2Spec) -> tuple[BlockPlacement, list[LayerSlot]]:
    """The fixed first block and the searchable layers of ``spec``'s macro, in order: the
    places of MobileNetV2's own blocks (:func:`~autoshrink.cost.mobilenetv2.mobilenetv2_plan`)."""
    first, *rest = mobilenetv2_plan(spec)
    slots = [
        LayerSlot(i, b.in_channels, b.out_channels, b.stride, b.in_size, b.out_size)
        for i, b in enumerate(rest)
    ]
    return first, slots


NUM_LAYERS = len(macro_slots(MobileNetV2Spec(width=1.0))[1])


@dataclass(frozen=True, kw_only=True)
class MBConvArch:
    """One network of the space: the macro settings and a choice per searchable layer."""

    width: float = 1.0
    image_size: int = 224
    num_classes: int = 1001
    in_channels: int = 3
    layers: tuple[str, ...] = ("k3e6",) * NUM_LAYERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        spec = self.spec  # validates width, sizes and classes
        if len(self.layers) != NUM_LAYERS:
            raise ConfigError(
                f"an mbconv architecture has {NUM_LAYERS} searchable layers, got {len(self.layers)}"
            )
        for slot, choice in zip(macro_slots(spec)[1], self.layers, strict=True):
            if choice == SKIP:
                if not slot.skippable:
                    raise ConfigError(
                        f"layer {slot.index} cannot be skipped (stride {slot.stride}, "
                        f"{slot.in_channels} -> {slot.out_channels} channels)"
                    )
            else:
                parse_choice(choice)

    @property
    def spec(self) -> MobileNetV2Spec:
        """The macro settings as a :class:`MobileNetV2Spec`."""
        return MobileNetV2Spec(
            width=self.width,
            image_size=self.image_size,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
        )

    def plan(self) -> list[BlockPlacement]:
        """The blocks the network runs, skipped layers left out."""
        first, slots = macro_slots(self.spec)
        return [first] + [
            s.placement(c) for s, c in zip(slots, self.layers, strict=True) if c != SKIP
        ]

    def with_settings(self, **settings: Any) -> MBConvArch:
        """The same layers with other macro settings (width, image_size, num_classes, ...)."""
        return replace(self, **{k: v for k, v in settings.items() if v is not None})

    @property
    def key(self) -> str:
        """The layer choices joined by commas (``k3e6,skip,...``): the network within its macro."""
        return ",".join(self.layers)

    @property
    def name(self) -> str:
        """``mbconv-<width>@<image size>`` (``mbconv-1@224``): the macro, as commands print it."""
        return f"mbconv-{self.width:g}@{self.image_size}"

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the module docstring: ``format``, macro settings and ``layers``."""
        return {
            "format": FORMAT,
            "width": self.width,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "layers": list(self.layers),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "architecture") -> MBConvArch:
        """The architecture of a :meth:`to_dict` object; a ConfigError naming ``source`` when ``d``
        is not one (another format, unknown keys, ill-typed values, a layer choice that is not
        allowed)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{source}: not an mbconv architecture ('format' must be {FORMAT!r})")
        known = {"format", "width", "image_size", "num_classes", "in_channels", "layers"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}")
        settings = {k: v for k, v in d.items() if k != "format"}
        problem = json_type_problem(cls, settings) or (
            None if "layers" in settings else '"layers" is missing'
        )
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
        try:
            return cls(**settings)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, **settings: Any) -> MBConvArch:
        """The architecture in the JSON file ``path``, with the macro ``settings`` given
        (``width``, ``image_size``, ...; ``None``: the file's) in place of the file's before it
        is checked (a file of 28 px with ``image_size=32`` is the network at 32 px); a
        ConfigError naming the file if it is not one."""
        data = read_json_file(Path(path), ConfigError, "architecture")
        given = {k: v for k, v in settings.items() if v is not None}
        return cls.from_dict({**data, **given} if isinstance(data, dict) else data, str(path))


def is_arch_file(path: str | Path) -> bool:
    """Whether ``path`` is a JSON object whose ``format`` is an mbconv architecture's (a cell
    file or anything unreadable is ``False``: its own loader reports it). Only a regular file
    is read here: a pipe (``<(cat cell.json)``) can be read once, by the cell loader."""
    if not Path(path).is_file():
        return False
    try:
        data = read_json_file(path, ConfigError, "architecture")
    except (OSError, ConfigError):
        return False
    family = FORMAT.rsplit("/", 1)[0] + "/"  # any version of the format
    return isinstance(data, dict) and str(data.get("format", "")).startswith(family)


def mobilenetv2_arch(width: float = 1.0, **settings: Any) -> MBConvArch:
    """MobileNetV2 as a point of the space: ``k3e6`` in every searchable layer."""
    return MBConvArch(width=width, **settings)


def count_arch(arch: MBConvArch) -> Counts:
    """Parameters and MACs by the published convention (as :mod:`autoshrink.cost.mobilenetv2`)."""
    return count_blocks(arch.spec, arch.plan())


def build_arch(arch: MBConvArch, dropout: float = DROPOUT) -> MobileNetV2:
    """The torch module of ``arch`` (a :class:`~autoshrink.nn.mobilenetv2.MobileNetV2`)."""
    from autoshrink.nn.mobilenetv2 import MobileNetV2

    return MobileNetV2(arch.spec, dropout, blocks=arch.plan())
