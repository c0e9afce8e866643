"""Parameters and FLOPs of the NAS-Bench-201 networks, by the benchmark's own convention.

The official records' ``params`` and ``flop`` fields (in millions) count, as the NATS-Bench
tools do:

- ``params``: every trainable parameter -- conv weights (no conv has a bias), the two affine
  parameters per channel of every batch norm, the classifier's weights and biases;
- ``flop``: multiply-accumulates of every convolution (``k^2 * C_in * C_out * H_out * W_out``)
  and of the classifier (``in * out``), *plus the classifier's bias adds* (``out``). Batch norm,
  ReLU, pooling (the avg-pool ops and the 2x2 pool of the reduction shortcut), the zero op and
  the sums are not counted. So ``flop`` is MACs + 10 (or 100, 120) -- and half of what
  ``torch.utils.flop_counter`` reports (2 FLOPs per MAC) plus the bias adds.

This module counts from the genotype alone (no torch) and is checked against the records in
the official sample files, against the parameters of the torch modules of
:mod:`autoshrink.nn.nb201`, and against torch's flop counter. ``Counts.macs`` holds the
``flop`` figure in units (multiply by 1e-6 for the records' M).
"""

from __future__ import annotations

import numpy as np

from autoshrink.cost.cells import ZERO, Counts
from autoshrink.errors import ConfigError
from autoshrink.spaces.nb201 import (
    DATASETS,
    EDGES,
    NUM_CELLS,
    SIZE_SPACE_CELL,
    NB201Cell,
    NB201Size,
    dataset_name,
)


def conv_bn(c_in: int, c_out: int, kernel: int, out_size: int, bn: bool = True) -> Counts:
    """A k x k conv (no bias), optionally followed by BN, producing ``out_size`` squared pixels."""
    params = kernel * kernel * c_in * c_out + (2 * c_out if bn else 0)
    return Counts(params, kernel * kernel * c_in * c_out * out_size * out_size)


def op_counts(op: str, c_in: int, c_out: int, size: int) -> Counts:
    """One edge op at stride 1 on ``size`` x ``size`` inputs."""
    if op == "nor_conv_3x3":
        return conv_bn(c_in, c_out, 3, size)
    if op == "nor_conv_1x1":
        return conv_bn(c_in, c_out, 1, size)
    if op in ("avg_pool_3x3", "skip_connect"):  # a 1x1 conv + BN only when the width changes
        return ZERO if c_in == c_out else conv_bn(c_in, c_out, 1, size)
    if op == "none":
        return ZERO
    raise ConfigError(f"no count rule for NAS-Bench-201 op {op!r}")


def cell_counts(cell: NB201Cell, c_in: int, c_out: int, size: int) -> Counts:
    """A cell: the sum of its six edge ops (every edge runs, connected or not)."""
    total = ZERO
    for (i, _), op in zip(EDGES, cell.ops, strict=True):
        total += op_counts(op, c_in if i == 0 else c_out, c_out, size)
    return total


def reduction_counts(c_in: int, c_out: int, out_size: int) -> Counts:
    """The residual reduction block: two ReLU-Conv3x3-BN and a pool + 1x1 conv shortcut."""
    return (
        conv_bn(c_in, c_out, 3, out_size)
        + conv_bn(c_out, c_out, 3, out_size)
        + conv_bn(c_in, c_out, 1, out_size, bn=False)
    )


def network_counts(
    cell: NB201Cell, widths: list[int], cells_per_stage: int, num_classes: int, image_size: int
) -> Counts:
    """Stem, three stages with reductions between them, head BN and classifier."""
    size = image_size
    total = conv_bn(3, widths[0], 3, size)
    c_prev = widths[0]
    for stage in range(3):
        if stage > 0:
            size = (size + 1) // 2
            total += reduction_counts(c_prev, widths[2 * stage - 1], size)
            c_prev = widths[2 * stage - 1]
        for _ in range(cells_per_stage):
            total += cell_counts(cell, c_prev, widths[2 * stage], size)
            c_prev = widths[2 * stage]
    head_bn = Counts(2 * c_prev, 0)
    classifier = Counts((c_prev + 1) * num_classes, c_prev * num_classes + num_classes)
    return total + head_bn + classifier


def _shape(dataset: str) -> tuple[int, int]:
    return DATASETS[dataset_name(dataset)]


def count_topology(cell: NB201Cell, *, dataset: str) -> Counts:
    """Params and ``flop`` of the NAS-Bench-201 network of ``cell`` (C=16, N=5) on ``dataset``."""
    num_classes, image_size = _shape(dataset)
    return network_counts(cell, [16, 32, 32, 64, 64], 5, num_classes, image_size)


def count_size(size: NB201Size, *, dataset: str) -> Counts:
    """Params and ``flop`` of the size-space network of ``size`` on ``dataset``."""
    num_classes, image_size = _shape(dataset)
    cell = NB201Cell.from_string(SIZE_SPACE_CELL)
    return network_counts(cell, list(size.channels), 1, num_classes, image_size)


def topology_cost_table(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """``(params, flop)`` of all 15,625 cells on ``dataset``, int64 arrays indexed by cell code.

    A cell's counts depend only on how many edges carry each op, so each of the 210 op
    multisets is counted once with :func:`count_topology`.
    """
    params = np.empty(NUM_CELLS, dtype=np.int64)
    flop = np.empty(NUM_CELLS, dtype=np.int64)
    seen: dict[tuple[str, ...], Counts] = {}
    for code in range(NUM_CELLS):
        cell = NB201Cell.from_code(code)
        multiset = tuple(sorted(cell.ops))
        counts = seen.get(multiset)
        if counts is None:
            counts = seen[multiset] = count_topology(NB201Cell(multiset), dataset=dataset)
        params[code], flop[code] = counts.params, counts.macs
    return params, flop
