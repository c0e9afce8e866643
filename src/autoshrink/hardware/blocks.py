"""A macro network's forward pass cut into blocks: the units a latency table measures.

The blocks run one after another: the stem (3x3 conv + BN + act), per cell the down-sampling
2x2 max-pool, the concatenation feeding each node with several inputs, each node's op, the
concatenation of the leaves, the residual projection (1x1 conv + BN) and the residual add, then
the head (1x1 conv + BN + act) and the classifier (global average pool + linear). Networks of
the inverted-residual space (:mod:`autoshrink.singlepath`) are cut into stem, ``mbconv``
blocks (a whole inverted-residual layer; ``op`` ``k5e6`` = 5x5 depthwise, expansion 6), head
and classifier. A
:class:`Block` is keyed by everything that sets its cost -- kind, op, activation, whether it is
a linear leaf, input channels (each part of a concat), output channels, input size and stride
-- and builds its module from the very op factories of :mod:`autoshrink.nn`, so a table
measures what the network runs. :func:`network_program` gives the blocks with their data flow
(:class:`Step`), :func:`network_blocks` the blocks alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from autoshrink.cost.cells import CellPlacement, halve, node_channels, plan
from autoshrink.cost.mobilenetv2 import BlockPlacement
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nn.mobilenetv2 import InvertedResidual
from autoshrink.nn.ops import activation, build_op, conv_bn
from autoshrink.spaces.macros import MacroSpec

KINDS = ("stem", "pool", "concat", "op", "proj", "add", "head", "classifier", "io", "mbconv")


class _Cat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, 1)


class _Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _Classifier(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes]
        return self.fc(x.mean(dim=(2, 3)))


@dataclass(frozen=True)
class Block:
    """One unit of a network's forward pass, with everything its latency depends on.

    Attributes:
        kind: one of :data:`KINDS`.
        inputs: channels of each input tensor (a concat has several, an add two).
        size: spatial size of the input tensors (square); 0 for a flat ``[B, C]`` tensor.
        out: output channels (conv-like blocks), classes (classifier), else 0.
        op, act, linear: the cell op, the activation, and whether the op is a leaf without
            its final activation (``op`` blocks; ``act`` also for stem and head).
        stride: the stride of the stem or of the residual projection.
    """

    kind: str
    inputs: tuple[int, ...]
    size: int
    out: int = 0
    op: str = ""
    act: str = ""
    linear: bool = False
    stride: int = 1

    @property
    def key(self) -> str:
        """A readable canonical key, e.g. ``op sep3x3 relu linear in=48 out=16 hw=16``."""
        parts = [self.kind, self.op, self.act, "linear" if self.linear else ""]
        parts += ["in=" + "+".join(map(str, self.inputs)), f"out={self.out}" if self.out else ""]
        parts += [f"hw={self.size}", f"s={self.stride}" if self.stride != 1 else ""]
        return " ".join(p for p in parts if p)

    def module(self) -> nn.Module:
        """The torch module of this block, built with the network's own factories."""
        c = self.inputs[0]
        if self.kind == "stem" or self.kind == "head":
            k = 3 if self.kind == "stem" else 1
            return nn.Sequential(*conv_bn(c, self.out, k, stride=self.stride), activation(self.act))
        if self.kind == "pool":
            return nn.MaxPool2d(2, stride=2, ceil_mode=True)
        if self.kind == "concat":
            return _Cat()
        if self.kind == "op":
            return build_op(self.op, c, self.out, self.act, self.linear)
        if self.kind == "proj":
            return nn.Sequential(*conv_bn(c, self.out, 1, stride=self.stride))
        if self.kind == "add":
            return _Add()
        if self.kind == "classifier":
            return _Classifier(c, self.out)
        if self.kind == "io":
            return nn.Identity()
        if self.kind == "mbconv":
            return InvertedResidual(self.placement())
        raise ConfigError(f"unknown block kind {self.kind!r}; expected one of {KINDS}")

    def placement(self) -> BlockPlacement:
        """The inverted-residual block of an ``mbconv`` block (``op`` ``k<kernel>e<expansion>``)."""
        m = re.fullmatch(r"k(\d+)e(\d+)", self.op)
        if self.kind != "mbconv" or m is None:
            raise ConfigError(f"block {self.key!r} is not an mbconv block with op k<K>e<E>")
        k, e = int(m[1]), int(m[2])
        c, out_size = self.inputs[0], self.output()[1]
        return BlockPlacement(c, c * e, self.out, self.stride, self.size, out_size, kernel=k)

    def input_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The shapes of the input tensors for ``batch`` images: ``(batch, C, size, size)`` each,
        ``(batch, C)`` when ``size`` is 0."""
        if self.size == 0:
            return [(batch, c) for c in self.inputs]
        return [(batch, c, self.size, self.size) for c in self.inputs]

    def output(self) -> tuple[int, int]:
        """``(channels, size)`` of the output (size 0: a flat ``[B, classes]`` tensor)."""
        if self.kind == "classifier":
            return self.out, 0
        size = halve(self.size) if self.kind == "pool" or self.stride == 2 else self.size
        if self.kind in ("pool", "add", "io"):
            return self.inputs[0], size
        if self.kind == "concat":
            return sum(self.inputs), size
        return self.out, size

    def io(self) -> Block:
        """The identity block on this block's output: what one call costs beyond its work."""
        channels, size = self.output()
        return Block("io", (channels,), size)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``inputs`` a list): what :meth:`from_dict` reads."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Block:
        """The block of a :meth:`to_dict` dict (``inputs`` back to a tuple of ints)."""
        return cls(**{**d, "inputs": tuple(int(c) for c in d["inputs"])})


@dataclass(frozen=True)
class Step:
    """One block of a network's forward pass and its data flow: the names of the tensors it
    reads and of the tensor it writes (``"x"`` is the network input)."""

    block: Block
    inputs: tuple[str, ...]
    output: str


def cell_program(cell: Cell, where: CellPlacement, i: int, x: str) -> list[Step]:
    """The steps of cell number ``i`` reading tensor ``x``, in execution order; its output is
    the tensor ``c{i}``."""
    act = cell.activation or "relu"
    ch = node_channels(cell, where.in_channels, where.nodes)
    size, leaves = where.out_size, set(cell.leaves)
    steps: list[Step] = []
    names = {0: x}
    if where.downsample:
        names[0] = f"c{i}n0"
        steps.append(Step(Block("pool", (where.in_channels,), where.in_size), (x,), names[0]))
    for k in cell.live_nodes[1:]:
        preds = cell.predecessors(k)
        parts, src = tuple(ch[p] for p in preds), tuple(names[p] for p in preds)
        if len(parts) > 1:
            steps.append(Step(Block("concat", parts, size), src, f"c{i}in{k}"))
            src = (f"c{i}in{k}",)
        op = Block("op", (sum(parts),), size, where.nodes, cell.ops[k], act, linear=k in leaves)
        names[k] = f"c{i}n{k}"
        steps.append(Step(op, src, names[k]))
    y = names[cell.leaves[0]]
    if len(cell.leaves) > 1:
        y = f"c{i}y"
        parts = tuple(ch[k] for k in cell.leaves)
        steps.append(Step(Block("concat", parts, size), tuple(names[k] for k in cell.leaves), y))
    shortcut = x
    if where.needs_projection:
        shortcut = f"c{i}s"
        stride = 2 if where.downsample else 1
        proj = Block("proj", (where.in_channels,), where.in_size, where.out_channels, stride=stride)
        steps.append(Step(proj, (x,), shortcut))
    add = Block("add", (where.out_channels, where.out_channels), size)
    return [*steps, Step(add, (y, shortcut), f"c{i}")]


def network_program(cell: Cell, spec: MacroSpec) -> list[Step]:
    """Every step of the network ``spec`` built from ``cell``, in execution order."""
    act = cell.activation or "relu"
    placements = plan(cell, spec)
    stem = Block(
        "stem",
        (spec.in_channels,),
        spec.image_size,
        spec.stem_channels,
        act=act,
        stride=spec.stem_stride,
    )
    steps, x = [Step(stem, ("x",), "stem")], "stem"
    for i, where in enumerate(placements):
        steps += cell_program(cell, where, i, x)
        x = f"c{i}"
    last = placements[-1]
    features = last.out_channels
    if spec.head_channels is not None:
        head = Block("head", (features,), last.out_size, spec.head_channels, act=act)
        steps.append(Step(head, (x,), "head"))
        features, x = spec.head_channels, "head"
    classifier = Block("classifier", (features,), last.out_size, spec.num_classes)
    return [*steps, Step(classifier, (x,), "logits")]


def network_blocks(cell: Cell, spec: MacroSpec) -> list[Block]:
    """The blocks of the network ``spec`` built from ``cell``, in execution order (repeated
    blocks repeat)."""
    return [step.block for step in network_program(cell, spec)]
