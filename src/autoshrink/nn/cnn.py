"""CNN cells and macro networks built from a genotype and a :class:`MacroSpec`.

A cell computes its live nodes in topological order: node 0 is the input (after a 2x2
max-pool when the cell down-samples), every other node applies its op to the channel
concatenation of its predecessors (ascending index). The cell output is the concatenation of
the leaves plus a residual of the cell input, projected by 1x1 conv + BN when shapes differ.
Layer shapes come from :func:`autoshrink.cost.cells.plan`, the same plan the analytic counter reads.
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.cost.cells import CellPlacement, node_channels, node_input_channels, plan
from autoshrink.graph import Cell
from autoshrink.nn.ops import activation, build_op, conv_bn
from autoshrink.spaces.macros import MacroSpec


class CNNCell(nn.Module):
    """One cell: ``[B, C_in, H, W] -> [B, C_out, H', W']`` with shapes from ``where``."""

    def __init__(self, cell: Cell, where: CellPlacement) -> None:
        super().__init__()
        self.live = cell.live_nodes
        self.preds = {k: cell.predecessors(k) for k in self.live}
        self.leaves = cell.leaves
        leaves = set(self.leaves)
        ch = node_channels(cell, where.in_channels, where.nodes)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True) if where.downsample else None
        self.ops = nn.ModuleDict(
            {
                str(k): build_op(
                    cell.ops[k],
                    node_input_channels(cell, k, ch),
                    where.nodes,
                    cell.activation or "relu",
                    linear=k in leaves,
                )
                for k in self.live[1:]
            }
        )
        stride = 2 if where.downsample else 1
        self.shortcut = (
            nn.Sequential(*conv_bn(where.in_channels, where.out_channels, 1, stride=stride))
            if where.needs_projection
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` -> ``[B, C_out, H', W']``: the live nodes in order (node 0 pooled
        when the cell down-samples), the leaves concatenated, plus the shortcut of ``x``."""
        states = {0: self.pool(x) if self.pool is not None else x}
        for k in self.live[1:]:
            inputs = [states[p] for p in self.preds[k]]
            states[k] = self.ops[str(k)](inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1))
        out = [states[k] for k in self.leaves]
        y = out[0] if len(out) == 1 else torch.cat(out, 1)  # [B, C_out, H', W']
        return y + self.shortcut(x)


class CNNNetwork(nn.Module):
    """Stem, stages of cells, optional 1x1 head, global average pool, linear classifier."""

    def __init__(self, cell: Cell, spec: MacroSpec) -> None:
        super().__init__()
        act = cell.activation or "relu"
        self.stem = nn.Sequential(
            *conv_bn(spec.in_channels, spec.stem_channels, 3, stride=spec.stem_stride),
            activation(act),
        )
        placements = plan(cell, spec)
        self.cells = nn.Sequential(*(CNNCell(cell, where) for where in placements))
        features = placements[-1].out_channels
        if spec.head_channels is not None:
            self.head: nn.Module = nn.Sequential(
                *conv_bn(features, spec.head_channels, 1), activation(act)
            )
            features = spec.head_channels
        else:
            self.head = nn.Identity()
        self.classifier = nn.Linear(features, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``x [B, C_in, H, W]`` -> logits ``[B, classes]``: stem, cells, head, global
        average pool, classifier."""
        x = self.head(self.cells(self.stem(x)))  # [B, C, H, W]
        return self.classifier(x.mean(dim=(2, 3)))  # [B, classes]


def build_network(cell: Cell, spec: MacroSpec) -> CNNNetwork:
    """The network ``spec`` with every cell built from ``cell``."""
    return CNNNetwork(cell, spec)
