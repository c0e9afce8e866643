"""K candidate CNN networks as one stacked network: one structure, K copies of every weight.

The K candidates of a shrink step are all sub-graphs of one *parent* cell (the current cell,
or the complete cell). :class:`BatchedCNN` builds the parent's network once with a leading
``K`` dimension on every parameter, buffer and table, and turns each slice into exactly the
network :func:`autoshrink.nn.cnn.build_network` builds for that candidate alone:

- Activations use the layout ``[B, H, W, K, C]`` (contiguous): 1x1 convolutions are batched
  matmuls over ``K``, batch norm is one per-channel call on the ``[B*H*W, K*C]`` view (stats
  per candidate and channel over its own batch), depthwise 3x3 and the stem are grouped
  convolutions (``groups = K*C`` and ``K``) on the channels-last ``[B, K*C, H, W]`` view.
- A node's input is *all* its parent predecessors' outputs side by side (slots in ascending
  order: a view of one buffer where they are adjacent, else a concatenation; see
  :mod:`autoshrink.nn.node_states`); per candidate, a column mask on the node's weights
  keeps exactly the candidate's predecessors, so a removed edge contributes nothing and its
  weights get no gradient. The masked weights stay at zero (zero value, zero gradient: Adam
  leaves them alone), as do the batch-norm slices of absent channels, so they can never change
  a result.
- A cell's output is its leaves concatenated per candidate (a gather from the outputs of the
  nodes that are a leaf in some candidate), zero-padded to the widest candidate; the next
  cell reads the zero-padded width, its masks ignoring the padding. The residual is a masked
  1x1 projection + BN, or the identity, per candidate.
- Leaves are per candidate: a node that is a leaf drops its final activation (``where``).

``load_candidate(k, net)`` copies a separately built network's weights into slice ``k``;
``select(keep)`` drops candidates (every tensor has ``K`` first, so it is one index).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.cost.cells import CellPlacement, plan
from autoshrink.devices import own_generators
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell, check_kind
from autoshrink.nn.cnn import CNNCell, CNNNetwork, build_network
from autoshrink.nn.node_states import (
    NodeStates,
    check_node_inputs,
    resolve_node_inputs,
    view_reads,
)
from autoshrink.nn.stacked_ops import (
    BATCHED_OPS,
    OP_MODULES,
    StackedBN,
    StackedOp,
    check_bn,
    check_depthwise,
    conv_and_bn,
    move,
    pointwise,
    to_nchw,
    to_nhwkc,
)
from autoshrink.spaces.macros import MacroSpec


class BatchedCell(nn.Module):
    """One cell position of the macro, for K candidates: ``[B, H, W, K, C_in] -> [.., C_out]``.

    ``parent`` fixes the structure; ``cands`` (cell, placement) pairs fill the per-candidate
    tables. ``c_in``/``c_out`` are the padded widths of the cell input and output;
    ``depthwise`` and ``node_inputs`` as in :class:`BatchedCNN`.
    """

    leaf: torch.Tensor  # buffers
    gather: torch.Tensor
    proj_mask: torch.Tensor
    use_proj: torch.Tensor

    def __init__(
        self,
        parent: Cell,
        cands: Sequence[tuple[Cell, CellPlacement]],
        *,
        c_in: int,
        c_out: int,
        f: int,
        downsample: bool,
        general: bool = False,
        depthwise: str = "auto",
        node_inputs: str = "auto",
    ) -> None:
        super().__init__()
        check_node_inputs(node_inputs)
        k = len(cands)
        act = parent.activation or "relu"
        self.nodes = parent.live_nodes
        self.f, self.c_in, self.c_out, self.downsample = f, c_in, c_out, downsample
        self.pos = {j: i for i, j in enumerate(self.nodes)}  # node -> position in self.nodes
        self.preds = [tuple(self.pos[p] for p in parent.predecessors(j)) for j in self.nodes]
        self.width = [c_in] + [f] * (len(self.nodes) - 1)  # slot width of each node's output
        widths_in = [sum(self.width[p] for p in preds) for preds in self.preds]
        self.ops = nn.ModuleList(
            OP_MODULES[parent.ops[j]](
                k,
                widths_in[i],
                f,
                act,
                **({"depthwise": depthwise} if parent.ops[j] == "sep3x3" else {}),
            )
            for i, j in enumerate(self.nodes[1:], start=1)
        )
        self.columns: list[list[list[int]]] = []  # [candidate][node position] -> input columns
        # the nodes whose outputs the cell output may gather: a leaf in some candidate (all
        # nodes with ``general``, so that the structure does not depend on the candidates)
        self.outputs = (
            list(range(len(self.nodes)))
            if general
            else sorted({self.pos[j] for cell, _ in cands for j in cell.leaves})
        )
        # the slots of the node outputs that are read as views of one buffer (NodeStates)
        self.node_inputs = node_inputs
        reads = [*self.preds[1:], [*self.outputs, len(self.nodes)]]  # the cell output + zero
        self.buffered = view_reads(reads, len(self.nodes))
        masks = [torch.zeros(k, c) for c in widths_in[1:]]
        leaf = torch.zeros(k, len(self.nodes), dtype=torch.bool)
        zero = sum(self.width[p] for p in self.outputs)  # the zero channel after the outputs
        gather = torch.full((k, c_out), zero, dtype=torch.long)
        use_proj = torch.zeros(k, dtype=torch.bool)
        rows, cols = torch.zeros(k, c_out), torch.zeros(k, c_in)
        for c, (cell, where) in enumerate(cands):
            if where.out_channels > c_out or where.in_channels > c_in:
                raise ConfigError(
                    f"candidate {c}: cell widths {where.in_channels}->{where.out_channels} "
                    f"exceed the stacked widths {c_in}->{c_out}"
                )
            columns, out = self._layout(cell, where)
            self.columns.append(columns)
            for i, chosen in enumerate(columns[1:]):
                masks[i][c, chosen] = 1.0
            gather[c, : len(out)] = torch.tensor(out, dtype=torch.long)
            leaf[c, [self.pos[j] for j in cell.leaves]] = True
            use_proj[c] = where.needs_projection
            rows[c, : where.out_channels] = 1.0
            cols[c, : where.in_channels] = 1.0
        for i, m in enumerate(masks, start=1):
            self.register_buffer(f"mask{i}", m)
        self.register_buffer("leaf", leaf)
        # a node that is a leaf in every candidate or in none needs no per-candidate choice;
        # ``general`` keeps the per-candidate code paths so the structure never depends on them
        self.leaf_all = [not general and bool(col.all()) for col in leaf.T]
        self.leaf_none = [not general and not bool(col.any()) for col in leaf.T]
        self.register_buffer("gather", gather)
        self.with_proj = general or bool(use_proj.any())
        self.with_identity = (general and not downsample) or not bool(use_proj.all())
        if self.with_proj:
            self.proj = nn.Parameter(torch.zeros(k, c_out, c_in))
            self.proj_bn = StackedBN(k, c_out)
            self.register_buffer("proj_mask", rows[:, :, None] * cols[:, None, :])
            self.register_buffer("use_proj", use_proj)

    def _layout(self, cell: Cell, where: CellPlacement) -> tuple[list[list[int]], list[int]]:
        """Candidate ``cell``'s input columns of every node (in the concatenation of the node's
        parent predecessors), and where its leaves' channels sit in the concatenation of the
        outputs of ``self.outputs`` (its cell output, in order)."""
        own = [where.in_channels] + [self.f] * (len(self.nodes) - 1)  # its own output widths

        def channels(starts: dict[int, int], nodes: Sequence[int]) -> list[int]:
            return [c for j in nodes for c in range(starts[j], starts[j] + own[self.pos[j]])]

        columns: list[list[int]] = [[]]
        for i, j in enumerate(self.nodes[1:], start=1):
            offsets = _offsets([self.width[p] for p in self.preds[i]])
            starts = {self.nodes[p]: o for p, o in zip(self.preds[i], offsets, strict=True)}
            columns.append(channels(starts, cell.predecessors(j)))
        outputs = [self.nodes[p] for p in self.outputs]
        starts = dict(zip(outputs, _offsets([self.width[p] for p in self.outputs]), strict=True))
        return columns, channels(starts, cell.leaves)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, H, W, K, C_in]`` -> ``[B, H', W', K, C_out]`` (``H', W'`` halved when the cell
        down-samples): each candidate's nodes on their masked inputs, its leaves gathered and
        zero-padded, plus its projected or identity shortcut."""
        k = x.shape[3]
        s0 = x
        if self.downsample:  # node 0 is a 2x2 max-pool
            s0 = to_nhwkc(F.max_pool2d(to_nchw(x), 2, stride=2, ceil_mode=True), k)
        buffer = resolve_node_inputs(self.node_inputs, x.device) == "buffer"
        # (), and start as a positional argument: PyTorch 2.4's compiler broke its graph at
        # frozenset() and at enumerate(start=...)
        states = NodeStates(s0, self.width, self.buffered if buffer else ())
        for i, op in enumerate(self.ops, 1):
            fixed = self.leaf_all[i] or self.leaf_none[i]
            leaf = self.leaf_all[i] if fixed else self.leaf[:, i]
            states.append(op(states.read(self.preds[i]), getattr(self, f"mask{i}"), leaf))
        every = states.read(self.outputs, zero=True)  # [B, H, W, K, sum + 1]
        index = self.gather.expand(*every.shape[:3], *self.gather.shape)  # a view, no copy
        y = torch.gather(every, -1, index)  # [B, H, W, K, C_out]
        shortcut = None
        if self.with_proj:
            xs = x[:, ::2, ::2] if self.downsample else x
            shortcut = self.proj_bn(pointwise(xs, self.proj * self.proj_mask))
        if self.with_identity:
            ident = x[..., : self.c_out] if self.c_in >= self.c_out else _pad(x, self.c_out)
            shortcut = (
                ident
                if shortcut is None
                else torch.where(self.use_proj[:, None], shortcut, ident.to(shortcut.dtype))
            )
        if shortcut is None:
            raise RuntimeError("a cell with no candidate has no shortcut")
        return y + shortcut

    def load(self, k: int, ref: CNNCell, where: CellPlacement, back: bool = False) -> None:
        """Copy the weights of a separately built :class:`~autoshrink.nn.cnn.CNNCell` into
        candidate ``k`` (``back``: candidate ``k``'s into it)."""
        for i, j in enumerate(self.nodes[1:], start=1):
            if str(j) in ref.ops:
                op = cast(StackedOp, self.ops[i - 1])
                op.load(k, ref.ops[str(j)], self.columns[k][i], back)
        if where.needs_projection:
            conv, bn = conv_and_bn(ref.shortcut)
            rows, cols = where.out_channels, where.in_channels
            move(
                self.proj.data[k],
                (slice(0, rows), slice(0, cols)),
                conv.weight.data[:, :, 0, 0],
                back,
            )
            self.proj_bn.load(k, bn, slice(0, rows), back)


def _offsets(widths: Sequence[int]) -> list[int]:
    return [sum(widths[:i]) for i in range(len(widths))]


def _pad(x: torch.Tensor, c: int) -> torch.Tensor:
    return F.pad(x, (0, c - x.shape[-1]))


class BatchedCNN(nn.Module):
    """K candidate networks of ``spec``, stacked: ``[B, H, W, K, C_in]`` -> ``[B, K, classes]``.

    Args:
        parent: the cell whose structure is built; every candidate must be a sub-graph of it
            (same ops and activation, edges a subset).
        spec: the macro network.
        cells: the K candidates, in order.
        widths: padded output channels of each cell position (default: the widest candidate;
            :func:`widest_widths` gives widths that fit any sub-graph of ``parent``).
        general: build every per-candidate code path (leaf choice, projection or identity)
            even where these candidates do not need it, so that the module's structure depends
            on ``parent`` and ``widths`` only (for graph capture or compilation).
        depthwise: the CUDA kernels of the depthwise 3x3 convolutions, one of
            :data:`~autoshrink.nn.stacked_ops.DEPTHWISE_BACKENDS` (see
            :func:`~autoshrink.nn.stacked_ops.depthwise3x3`).
        bn: the batch norm + activation kernels, one of
            :data:`~autoshrink.nn.stacked_ops.BN_BACKENDS` (default ``torch``: unfused, the
            faster on an H200).
        node_inputs: how a node reads its predecessors' outputs, one of
            :data:`~autoshrink.nn.node_states.NODE_INPUTS` (default ``auto``: views of one
            buffer where they are adjacent, :class:`~autoshrink.nn.node_states.NodeStates`).
    """

    def __init__(
        self,
        parent: Cell,
        spec: MacroSpec,
        cells: Sequence[Cell],
        *,
        widths: Sequence[int] | None = None,
        general: bool = False,
        depthwise: str = "auto",
        bn: str = "torch",
        node_inputs: str = "auto",
    ) -> None:
        super().__init__()
        check_candidates(parent, cells)
        check_depthwise(depthwise)
        check_bn(bn)
        k = len(cells)
        self.act = parent.activation or "relu"
        self.stem_stride = spec.stem_stride
        self.placements = [plan(c, spec) for c in cells]  # [candidate][cell position]
        positions = range(len(self.placements[0]))
        widths = list(
            widths or (max(p[i].out_channels for p in self.placements) for i in positions)
        )
        self.stem = nn.Parameter(torch.zeros(k, spec.stem_channels, spec.in_channels, 3, 3))
        self.stem_bn = StackedBN(k, spec.stem_channels)
        cells_, c_in = [], spec.stem_channels
        for i in positions:
            where = self.placements[0][i]
            cands = [(cell, p[i]) for cell, p in zip(cells, self.placements, strict=True)]
            cell_mod = BatchedCell(
                parent,
                cands,
                c_in=c_in,
                c_out=widths[i],
                f=where.nodes,
                downsample=where.downsample,
                general=general,
                depthwise=depthwise,
                node_inputs=node_inputs,
            )
            cells_.append(cell_mod)
            c_in = widths[i]
        self.cells = nn.ModuleList(cells_)
        self.head: nn.Parameter | None = None
        if spec.head_channels is not None:
            self.head = nn.Parameter(torch.zeros(k, spec.head_channels, c_in))
            self.head_bn = StackedBN(k, spec.head_channels)
            c_in = spec.head_channels
        self.classifier = nn.Parameter(torch.zeros(k, spec.num_classes, c_in))
        self.classifier_bias = nn.Parameter(torch.zeros(k, spec.num_classes))
        for m in self.modules():
            if isinstance(m, StackedBN):
                m.backend = bn

    @property
    def k(self) -> int:
        """Number of stacked candidates."""
        return self.stem.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``x [B, H, W, K, C_in]`` (one copy per candidate) -> logits ``[B, K, classes]``:
        stem, cells, head if any, global average pool and each candidate's classifier."""
        k = self.k
        stem = self.stem.reshape(-1, *self.stem.shape[2:])  # [K*C_stem, C_in, 3, 3]
        y = F.conv2d(to_nchw(x), stem, stride=self.stem_stride, padding=1, groups=k)
        y = self.stem_bn(to_nhwkc(y, k), self.act)  # [B, H, W, K, C_stem]
        for cell in self.cells:
            y = cell(y)
        if self.head is not None:
            y = self.head_bn(pointwise(y, self.head), self.act)
        pooled = y.mean(dim=(1, 2))  # [B, K, C]
        return torch.einsum("bkc,koc->bko", pooled, self.classifier) + self.classifier_bias

    def load_candidate(self, k: int, net: CNNNetwork, back: bool = False) -> None:
        """Copy the weights and BN statistics of candidate ``k``'s own network into slice ``k``
        (``back``: slice ``k``'s into the network, e.g. to save a candidate trained here)."""
        conv, bn = conv_and_bn(net.stem)
        move(self.stem.data[k], ..., conv.weight.data, back)
        self.stem_bn.load(k, bn, slice(None), back)
        cells = cast(Iterable[BatchedCell], self.cells)
        refs = cast(Iterable[CNNCell], net.cells)
        for cell, ref, where in zip(cells, refs, self.placements[k], strict=True):
            cell.load(k, ref, where, back)
        features = slice(0, self.placements[k][-1].out_channels)
        if self.head is not None:
            conv, bn = conv_and_bn(net.head)
            move(self.head.data[k], (slice(None), features), conv.weight.data[:, :, 0, 0], back)
            self.head_bn.load(k, bn, slice(None), back)
            features = slice(None)
        move(self.classifier.data[k], (slice(None), features), net.classifier.weight.data, back)
        move(self.classifier_bias.data[k], ..., net.classifier.bias.data, back)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the candidates at positions ``keep`` (a 1-D index), dropping the others.

        Parameters are replaced by new ones (in :meth:`torch.nn.Module.parameters` order): an
        optimizer over the old ones must be rebuilt.
        """
        keep_list = [int(i) for i in keep.tolist()]
        for mod in self.modules():
            for name, p in mod._parameters.items():  # new Parameters: autograd caches shapes
                if p is not None:
                    mod._parameters[name] = nn.Parameter(p.detach()[keep.to(p.device)])
            for name, buf in mod._buffers.items():
                if buf is not None:
                    mod._buffers[name] = buf[keep.to(buf.device)]
            if isinstance(mod, BatchedCell):
                mod.columns = [mod.columns[i] for i in keep_list]
        self.placements = [self.placements[i] for i in keep_list]


def check_candidates(parent: Cell, cells: Sequence[Cell]) -> None:
    """Raise :class:`ConfigError` unless every cell is a sub-graph the stacked net can build."""
    check_kind(parent, "cnn", "the batched engine")
    if not cells:
        raise ConfigError("the batched engine needs at least one candidate")
    bad = sorted({parent.ops[j] for j in parent.live_nodes[1:]} - set(BATCHED_OPS))
    if bad:
        raise ConfigError(f"the batched engine supports ops {BATCHED_OPS}, not {bad}")
    edges = set(parent.edges)
    for i, cell in enumerate(cells):
        if cell.ops != parent.ops or cell.activation != parent.activation:
            raise ConfigError(f"candidate {i}: ops or activation differ from the parent cell's")
        if not set(cell.edges) <= edges:
            raise ConfigError(f"candidate {i}: has edges the parent cell lacks")


def union_cell(cells: Sequence[Cell]) -> Cell:
    """The smallest parent of ``cells`` (same ops): the union of their edges."""
    first = cells[0]
    return Cell(first.kind, first.ops, tuple({e for c in cells for e in c.edges}), first.activation)


def widest_widths(parent: Cell, spec: MacroSpec) -> list[int]:
    """Padded cell widths that fit every sub-graph of ``parent``: the structure stays fixed."""
    n_ops = len(parent.live_nodes) - 1
    widths, c_in = [], spec.stem_channels
    for where in plan(parent, spec):
        c_in = max(n_ops * where.nodes, c_in)  # all op nodes leaves, or only node 0 left
        widths.append(c_in)
    return widths


def build_batched(
    parent: Cell,
    spec: MacroSpec,
    cells: Sequence[Cell],
    seeds: Sequence[int],
    *,
    widths: Sequence[int] | None = None,
    general: bool = False,
    depthwise: str = "auto",
    bn: str = "torch",
    node_inputs: str = "auto",
) -> BatchedCNN:
    """The stacked network whose slice ``k`` starts as ``build_network(cells[k], spec)`` after
    ``torch.manual_seed(seeds[k])`` -- the initial weights of each candidate trained alone;
    the caller's generator state is given back after."""
    with own_generators():  # the CPU's: the networks are built there
        engine = BatchedCNN(  # its own initialisation draws too, then is written over
            parent,
            spec,
            cells,
            widths=widths,
            general=general,
            depthwise=depthwise,
            bn=bn,
            node_inputs=node_inputs,
        )
        for k, (cell, seed) in enumerate(zip(cells, seeds, strict=True)):
            torch.manual_seed(seed)
            engine.load_candidate(k, build_network(cell, spec))
    return engine
