"""NAS-Bench-201 / NATS-Bench networks: the topology network for any cell, the size network.

Layout of both (as the benchmark trained them): a 3x3 conv stem + BN; three stages of cells
separated by two residual reduction blocks (ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN, plus a
2x2 avg-pool + 1x1 conv shortcut); BN-ReLU, global average pool, linear classifier.

- Topology network: ``N = 5`` cells per stage at ``C, 2C, 4C`` channels (``C = 16``).
- Size network: one cell per stage, the fixed cell :data:`~autoshrink.spaces.nb201.SIZE_SPACE_CELL`,
  and the 5 layer widths of an :class:`~autoshrink.spaces.nb201.NB201Size` (cells may change
  the width: their node-0 edges then map ``C_in -> C_out``, a skip becoming 1x1 conv + BN).

Cell ops: ``nor_conv_kxk`` = ReLU-Conv-BN; ``avg_pool_3x3`` = 3x3 average pool (padding not
counted); ``skip_connect`` = identity; ``none`` = zeros. A node is the sum of its incoming
edges; the cell returns node 3. Every edge runs, also those cut off from the output.
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.spaces.nb201 import EDGES, SIZE_SPACE_CELL, NB201Cell, NB201Size


class ReLUConvBN(nn.Sequential):
    """ReLU -> k x k conv (no bias) -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the input (stride 1, same channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` times 0: zeros shaped like the input."""
        return x.mul(0.0)


class Pool(nn.Module):
    """``avg_pool_3x3``: a 1x1 ReLU-Conv-BN first when the channels change."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pre = ReLUConvBN(c_in, c_out, 1, 1) if c_in != c_out else nn.Identity()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, c_in, H, W]`` -> ``[B, c_out, H, W]``: the 1x1 ReLU-Conv-BN when the widths
        differ, then the 3x3 average pool."""
        return self.pool(self.pre(x))


class ChannelMap(nn.Module):
    """``skip_connect`` between different widths: 1x1 conv (no bias) -> BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, c_in, H, W]`` -> ``[B, c_out, H, W]``: the 1x1 conv, then BN."""
        return self.bn(self.conv(x))


def make_op(op: str, c_in: int, c_out: int) -> nn.Module:
    """One edge op at stride 1."""
    if op == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3, 1)
    if op == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1, 1)
    if op == "avg_pool_3x3":
        return Pool(c_in, c_out)
    if op == "skip_connect":
        return nn.Identity() if c_in == c_out else ChannelMap(c_in, c_out)
    if op == "none":
        if c_in != c_out:
            raise ValueError("a 'none' edge cannot change the width")
        return Zero()
    raise ValueError(f"unknown NAS-Bench-201 op {op!r}")


class NB201CellModule(nn.Module):
    """A NAS-Bench-201 cell: node j = sum over edges i -> j of op_ij(node i); returns node 3.

    Edges out of node 0 map ``c_in -> c_out``; all others work at ``c_out``.
    """

    def __init__(self, cell: NB201Cell, c_in: int, c_out: int) -> None:
        super().__init__()
        self.edges = EDGES
        self.ops = nn.ModuleList(
            make_op(op, c_in if i == 0 else c_out, c_out)
            for (i, _), op in zip(EDGES, cell.ops, strict=True)
        )
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, c_in, H, W)
        """``x (B, c_in, H, W)`` -> node 3 ``(B, c_out, H, W)``, each node the sum of the ops of its
        incoming edges on the nodes before it."""
        nodes: list[torch.Tensor] = [x]
        for j in range(1, 4):
            ins = [self.ops[e](nodes[i]) for e, (i, jj) in enumerate(self.edges) if jj == j]
            nodes.append(sum(ins[1:], start=ins[0]))
        return nodes[3]  # (B, c_out, H, W)


class ResidualReduction(nn.Module):
    """The reduction block between stages: halves the size, maps ``c_in -> c_out``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/2, W/2)
        """``x (B, c_in, H, W)`` -> ``(B, c_out, H/2, W/2)``: the two ReLU-Conv-BN plus the
        shortcut (2x2 average pool, 1x1 conv)."""
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """Stem, cells and reductions, head; built by :func:`topology_network` / :func:`size_network`.

    Args:
        cell: the cell every stage repeats.
        widths: the layer widths ``[stage 1, reduction 1, stage 2, reduction 2, stage 3]``; the
            stem has ``widths[0]`` channels.
        cells_per_stage: cells in each stage.
        num_classes: classifier outputs.
    """

    def __init__(
        self, cell: NB201Cell, widths: list[int], cells_per_stage: int, num_classes: int
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0])
        )
        layers: list[nn.Module] = []
        c_prev = widths[0]
        for stage in range(3):
            if stage > 0:
                width = widths[2 * stage - 1]
                layers.append(ResidualReduction(c_prev, width))
                c_prev = width
            for _ in range(cells_per_stage):
                width = widths[2 * stage]
                layers.append(NB201CellModule(cell, c_prev, width))
                c_prev = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes)
        """Images ``x (B, 3, H, W)`` -> logits ``(B, classes)``: stem, stages and reductions,
        BN-ReLU, global average pool, classifier."""
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def topology_network(
    cell: NB201Cell, *, num_classes: int, channels: int = 16, cells_per_stage: int = 5
) -> NB201Network:
    """The NAS-Bench-201 network of ``cell`` (the benchmark's ``C = 16, N = 5``)."""
    widths = [channels, 2 * channels, 2 * channels, 4 * channels, 4 * channels]
    return NB201Network(cell, widths, cells_per_stage, num_classes)


def size_network(size: NB201Size, *, num_classes: int) -> NB201Network:
    """The NATS-Bench size-space network of ``size`` (one fixed cell per stage)."""
    return NB201Network(NB201Cell.from_string(SIZE_SPACE_CELL), list(size.channels), 1, num_classes)
