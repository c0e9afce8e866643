"""K RNN language models of one shrink step stacked into one module (the proxy task, §4).

The K candidates of an RNN shrink step are sub-graphs of one cell with the same node ops.
:class:`StackedRNNModel` holds every candidate's weights along a leading ``K`` axis -- the
tied embedding/decoder ``[K, V, D]``, the decoder bias ``[K, V]``, ``W0 [K, ninp + nhid,
2 nhid]`` and one ``[K, nhid, 2 nhid]`` matrix per edge of the union of the candidates' edges
-- and runs them as batched matmuls with per-candidate edge masks: an edge a candidate lacks
has a zero matrix and mask 0, so it adds nothing to the node it enters and gets no gradient.
Node ``j``'s state is the masked sum of its incoming edges divided by the candidate's own
in-degree, the cell output the masked mean of the candidate's own leaves (as
:class:`~autoshrink.nn.rnn.RNNCell`). Every operation is per slice: slice ``k`` computes
exactly what candidate ``k``'s :class:`~autoshrink.nn.rnn.RNNModel` computes alone, within
floating-point rounding. No dropout (the proxy task trains without).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from autoshrink.devices import own_generators
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nn.rnn import INIT_RANGE, RNNModel, Runs, by_activation, gated_edges


def union_edges(cells: Sequence[Cell]) -> tuple[tuple[int, int], ...]:
    """The edges of any of ``cells`` (same kind, ops and node count), ascending."""
    first = cells[0]
    for c in cells:
        if c.kind != "rnn" or c.ops != first.ops:
            raise ConfigError("stacked RNN candidates must be rnn cells with the same node ops")
    return tuple(sorted({e for c in cells for e in c.edges}))


class _NodeTerms(NamedTuple):
    """Per-node terms of a forward pass, taken from the buffers once, not at every step:
    each node's in-degree ``[K, 1, 1]``, a zero state, the nodes that are part of some edge
    (in order) and their leaf mask ``[K, 1, nodes, 1]``, the leaf counts ``[K, 1, 1]``."""

    indegree: dict[int, torch.Tensor]
    zero: torch.Tensor
    order: list[int]
    leaf_mask: torch.Tensor
    leaf_count: torch.Tensor


class StackedRNNModel(nn.Module):
    """The language models of ``cells`` (one slice each), weights stacked along ``K``.

    ``forward(tokens [T, B], hidden [K, B, nhid])`` returns logits ``[K, T, B, V]`` and the
    new hidden state ``[K, B, nhid]``. Build it with :func:`build_stacked_rnn` to start every
    slice from the weights its candidate gets alone.
    """

    edge_mask: torch.Tensor  # buffers
    indegree: torch.Tensor
    leaf_mask: torch.Tensor
    leaf_count: torch.Tensor
    _node_index: torch.Tensor

    def __init__(self, cells: Sequence[Cell], ntoken: int, *, nhid: int) -> None:
        super().__init__()
        if not cells:
            raise ConfigError("a stacked RNN needs at least one candidate")
        if nhid < 1 or ntoken < 2:
            raise ConfigError(f"nhid must be >= 1 and ntoken >= 2, got {nhid} and {ntoken}")
        k, n = len(cells), cells[0].num_nodes
        self.cells = list(cells)
        self.ntoken, self.nhid, self.ninp = ntoken, nhid, nhid  # tied weights: emsize = nhid
        self.edges = union_edges(cells)
        self._nodes = sorted({0, *(j for e in self.edges for j in e)})  # node 0, nodes of edges
        # ... also as a tensor on the model's device: indexing with a list would copy one
        # from the host at every forward pass, which a CUDA graph capture refuses
        self.register_buffer("_node_index", torch.tensor(self._nodes))
        self.ops = cells[0].ops

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(k, *shape).uniform_(-INIT_RANGE, INIT_RANGE))

        self.encoder = uniform(ntoken, nhid)  # the tied decoder weight
        self.decoder_bias = nn.Parameter(torch.zeros(k, ntoken))
        self.w0 = uniform(2 * nhid, 2 * nhid)
        self.edge_weights = nn.ParameterList(uniform(nhid, 2 * nhid) for _ in self.edges)
        mask = torch.tensor([[float(e in set(c.edges)) for e in self.edges] for c in cells])
        indegree = torch.zeros(k, n)
        leaves = torch.zeros(k, n)
        for row, c in enumerate(cells):
            for j in c.live_nodes[1:]:
                indegree[row, j] = len(c.predecessors(j))
            leaves[row, list(c.leaves)] = 1.0
        self.register_buffer("edge_mask", mask)  # [K, E]
        self.register_buffer("indegree", indegree.clamp(min=1.0))  # [K, n]; dead nodes: 1
        self.register_buffer("leaf_mask", leaves)  # [K, n]
        self.register_buffer("leaf_count", leaves.sum(1))  # [K]
        with torch.no_grad():  # a candidate's missing edges: zero matrices
            for e, w in enumerate(self.edge_weights):
                w.mul_(mask[:, e, None, None])
        # Out-edges grouped by source node (one batched matmul per source and time step), each
        # group ordered by the activation of the target so that one call applies it to a run;
        # per group: its edges, their targets and its runs of one activation.
        self._sources: list[tuple[int, tuple[int, ...], tuple[int, ...], Runs]] = []
        for i in range(n):
            edges = [e for e, (a, _) in enumerate(self.edges) if a == i]
            if not edges:
                continue
            order, runs = by_activation([self.edges[e][1] for e in edges], self.ops)
            out = [edges[p] for p in order]
            targets = tuple(self.edges[e][1] for e in out)
            self._sources.append((i, tuple(out), targets, runs))
            self.register_buffer(f"_edges{i}", torch.tensor(out))

    @property
    def k(self) -> int:
        """The number of stacked candidates."""
        return self.w0.shape[0]

    def load_candidate(self, k: int, model: RNNModel) -> None:
        """Copy candidate ``k``'s weights from its one-by-one ``model``."""
        with torch.no_grad():
            self.encoder[k].copy_(model.encoder.weight)
            self.decoder_bias[k].copy_(model.decoder.bias)
            self.w0[k].copy_(model.rnn.w0)
            for (i, j), w in zip(self.edges, self.edge_weights, strict=True):
                name = f"e{i}_{j}"
                if name in model.rnn.edges:
                    w[k].copy_(model.rnn.edges[name])
                else:
                    w[k].zero_()

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the slices ``keep`` (indices, in the new order)."""
        keep = keep.to(self.w0.device)
        for p in self.parameters():
            p.data = p.data[keep]
        for name in ("edge_mask", "indegree", "leaf_mask", "leaf_count"):
            setattr(self, name, getattr(self, name)[keep])
        self.cells = [self.cells[i] for i in keep.tolist()]

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero hidden states ``[K, B, nhid]``."""
        return self.w0.new_zeros(self.k, batch_size, self.nhid)

    def forward(
        self, tokens: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens [T, B]``, ``hidden [K, B, nhid]`` -> logits ``[K, T, B, V]``, hidden."""
        k, (t_len, b), v, d = self.k, tokens.shape, self.ntoken, self.nhid
        offsets = torch.arange(k, device=tokens.device).view(k, 1, 1) * v
        x = nn.functional.embedding(tokens + offsets, self.encoder.reshape(k * v, d))
        xc = torch.bmm(x.view(k, t_len * b, d), self.w0[:, :d]).view(k, t_len, b, 2 * d)
        w0h = self.w0[:, d:]  # [K, nhid, 2 nhid]
        grouped = [  # per source: [K, nhid, 2 nhid * out-degree], masks [K, 1, m, 1]
            (
                torch.cat([self.edge_weights[e] for e in out], dim=2),
                self.edge_mask[:, getattr(self, f"_edges{i}")][:, None, :, None],
            )
            for i, out, _, _ in self._sources
        ]
        order = self._nodes
        node = _NodeTerms(  # the buffers' per-node terms (select() replaces the buffers)
            indegree={j: self.indegree[:, j, None, None] for j in order},
            zero=hidden.new_zeros(k, b, d),
            order=order,
            leaf_mask=self.leaf_mask.index_select(1, self._node_index)[:, None, :, None],
            leaf_count=self.leaf_count[:, None, None],
        )
        states = []
        for xc_t in xc.unbind(1):  # one op (and one in the backward pass), not T selections
            hidden = self.step(xc_t, hidden, w0h, grouped, node)
            states.append(hidden)
        raw = torch.stack(states, 1).view(k, t_len * b, d)
        logits = torch.baddbmm(self.decoder_bias[:, None, :], raw, self.encoder.transpose(1, 2))
        return logits.view(k, t_len, b, v), hidden

    def step(
        self,
        xc: torch.Tensor,
        h: torch.Tensor,
        w0h: torch.Tensor,
        grouped: list[tuple[torch.Tensor, torch.Tensor]],
        node: _NodeTerms,
    ) -> torch.Tensor:
        """One time step of every slice: ``xc [K, B, 2 nhid]``, ``h [K, B, nhid]`` -> new h.

        Each node's incoming edges are summed in a tensor of its own, added to in ascending
        source order (as the one-by-one cell sums them); a source's out-edges come from one
        batched matmul and are split with one ``unbind``. Few, whole-tensor operations: the
        step is launch-bound on a GPU, and a selection from a shared tensor would cost a full
        zero tensor in the backward pass.
        """
        k, b, d = h.shape
        c0, h0 = (xc + torch.bmm(h, w0h)).split(d, dim=-1)
        states = {0: h + torch.sigmoid(c0) * (torch.tanh(h0) - h)}
        sums: dict[int, torch.Tensor] = {}
        for (i, _, targets, runs), (w, mask) in zip(self._sources, grouped, strict=True):
            if i:  # all of node i's in-edges came from lower nodes: its sum is complete
                summed = sums.pop(i, None)  # None: no in-edge in any slice
                states[i] = node.zero if summed is None else summed / node.indegree[i]
            s = states[i]
            c, hh = torch.bmm(s, w).view(k, b, -1, 2, d).unbind(3)  # [K, B, m, nhid] each
            edges = gated_edges(s, c, hh, runs) * mask  # [K, B, m, nhid]
            for j, e in zip(targets, edges.unbind(2), strict=True):
                sums[j] = sums[j] + e if j in sums else e
        for j, summed in sums.items():  # the nodes without out-edges
            states[j] = summed / node.indegree[j]
        stacked = torch.stack([states[j] for j in node.order], 2)  # [K, B, nodes, nhid]
        return (stacked * node.leaf_mask).sum(2) / node.leaf_count


def build_stacked_rnn(
    cells: Sequence[Cell], seeds: Sequence[int], ntoken: int, *, nhid: int
) -> StackedRNNModel:
    """The stacked model whose slice ``k`` starts as ``RNNModel(cells[k], ...)`` after
    ``torch.manual_seed(seeds[k])`` -- the initial weights of each candidate trained alone;
    the caller's generator state is given back after."""
    if len(cells) != len(seeds):
        raise ValueError(f"{len(cells)} cells but {len(seeds)} seeds")
    with own_generators():  # the stack's own initialisation draws too, then is written over
        model = StackedRNNModel(cells, ntoken, nhid=nhid)
        for k, (cell, seed) in enumerate(zip(cells, seeds, strict=True)):
            torch.manual_seed(seed)
            model.load_candidate(k, RNNModel(cell, ntoken, emsize=nhid, nhid=nhid))
    return model
