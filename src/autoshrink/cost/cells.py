"""Parameter and MAC counts by the published convention (method §5), from the genotype alone.

Counted: convolutions (k²·Cin·Cout params; H_out·W_out·k²·Cin·Cout MACs), separable
convolutions (k²·Cin + Cin·Cout params; k²·Cin·H·W + Cin·Cout·H·W MACs), residual projections
and 1x1 channel adapters (Cin·Cout), linear layers ((in+1)·out params; in·out MACs). Not counted:
batch norm, activations, pooling, concatenations and adds. This is the convention behind the
published ShrinkCNN figures (3.6M params, 384M MACs); the network builder lays its layers out
from the same :func:`plan`, and the tests check the MACs against torch's flop counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoshrink.errors import ConfigError
from autoshrink.graph import Cell, check_kind
from autoshrink.spaces.macros import MacroSpec


@dataclass(frozen=True)
class Counts:
    """Parameters and multiply-accumulates of a network (or a part of it)."""

    params: int
    macs: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.params + other.params, self.macs + other.macs)


ZERO = Counts(0, 0)


@dataclass(frozen=True)
class CellPlacement:
    """Where one cell sits in a macro network: its input and output shapes."""

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    nodes: int  # channels of each op node (F)
    downsample: bool

    @property
    def needs_projection(self) -> bool:
        """Whether the residual add needs a 1x1 conv + BN projection of the cell input."""
        return self.downsample or self.in_channels != self.out_channels


def halve(size: int) -> int:
    """Spatial size after a stride-2 step (ceil, as pooling with ceil_mode and padded convs)."""
    return (size + 1) // 2


def node_channels(cell: Cell, in_channels: int, f: int) -> dict[int, int]:
    """Output channels of each live node: ``in_channels`` for node 0, ``f`` otherwise."""
    return {k: (in_channels if k == 0 else f) for k in cell.live_nodes}


def node_input_channels(cell: Cell, node: int, channels: dict[int, int]) -> int:
    """Channels of the concatenation feeding ``node``."""
    return sum(channels[p] for p in cell.predecessors(node))


def plan(cell: Cell, spec: MacroSpec) -> list[CellPlacement]:
    """The shapes of every cell of ``spec`` built from ``cell``, in order."""
    check_kind(cell, "cnn", f"macro {spec.name}")
    size = spec.image_size if spec.stem_stride == 1 else halve(spec.image_size)
    channels = spec.stem_channels
    out: list[CellPlacement] = []
    for stage in spec.stages:
        for c in range(stage.cells):
            down = stage.downsample and c == 0
            out_size = halve(size) if down else size
            ch = node_channels(cell, channels, stage.channels)
            out_ch = sum(ch[k] for k in cell.leaves)
            out.append(CellPlacement(channels, out_ch, size, out_size, stage.channels, down))
            channels, size = out_ch, out_size
    return out


def op_counts(op: str, c_in: int, c_out: int, size: int) -> Counts:
    """Counts of one op node at spatial ``size`` (stride 1), by the convention."""
    hw = size * size
    if op == "sep3x3":
        return Counts(9 * c_in + c_in * c_out, 9 * c_in * hw + c_in * c_out * hw)
    if op == "conv1x1":
        return Counts(c_in * c_out, hw * c_in * c_out)
    if op == "conv3x3":
        return Counts(9 * c_in * c_out, hw * 9 * c_in * c_out)
    if op in ("maxpool3x3", "identity"):  # a 1x1 adapter only when channels differ
        return ZERO if c_in == c_out else Counts(c_in * c_out, hw * c_in * c_out)
    raise ConfigError(f"no count rule for op {op!r}")


def cell_counts(cell: Cell, where: CellPlacement) -> Counts:
    """Counts of one cell, including its residual projection."""
    ch = node_channels(cell, where.in_channels, where.nodes)
    total = ZERO
    for k in cell.live_nodes[1:]:
        total += op_counts(
            cell.ops[k], node_input_channels(cell, k, ch), where.nodes, where.out_size
        )
    if where.needs_projection:
        hw = where.out_size * where.out_size
        total += Counts(
            where.in_channels * where.out_channels, hw * where.in_channels * where.out_channels
        )
    return total


def count(cell: Cell, spec: MacroSpec) -> Counts:
    """Parameters and MACs of the whole network ``spec`` built from ``cell``."""
    stem_size = spec.image_size if spec.stem_stride == 1 else halve(spec.image_size)
    total = Counts(
        9 * spec.in_channels * spec.stem_channels,
        stem_size * stem_size * 9 * spec.in_channels * spec.stem_channels,
    )
    placements = plan(cell, spec)
    for where in placements:
        total += cell_counts(cell, where)
    last = placements[-1]
    features = last.out_channels
    if spec.head_channels is not None:
        hw = last.out_size * last.out_size
        total += Counts(features * spec.head_channels, hw * features * spec.head_channels)
        features = spec.head_channels
    return total + Counts((features + 1) * spec.num_classes, features * spec.num_classes)
