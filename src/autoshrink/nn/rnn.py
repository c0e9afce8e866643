"""RNN cells as PyTorch modules (method §1), and the word-level language model around them.

:class:`RNNCell` runs a ``kind="rnn"`` :class:`~autoshrink.graph.Cell` over a sequence in the
DARTS style. Per time step, with ``h`` the previous hidden state:

- node 0: ``[c, h~] = [x_t, h]·W0``, ``s0 = h + σ(c)⊙(tanh(h~) − h)``;
- edge ``i→j``: ``[c, h~] = s_i·W_ij``, ``e_ij = s_i + σ(c)⊙(f_j(h~) − s_i)`` with ``f_j`` node
  ``j``'s activation; node ``j``'s state is the MEAN of its incoming ``e_ij``;
- the new hidden state (the cell output) is the mean of the leaf states.

:class:`RNNModel` is the language model: embedding → cell → decoder with tied embedding and
decoder weights, variational ("locked") dropouts on the embedded input, the cell input, the
hidden state and the output (one mask per sequence, shared over time), and embedding dropout
that drops whole words. :class:`LSTMModel` is the same language model around ``nn.LSTM``, the
outside baseline. Both return an :class:`LMOutput`; the trainers detach the hidden state
between BPTT windows with :func:`detach_hidden`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.cost.rnn import check_vocabulary
from autoshrink.errors import ConfigError
from autoshrink.graph import OPS, Cell, check_kind

INIT_RANGE = 0.04  # uniform init of the embedding and the cell matrices (as DARTS)

ACTIVATIONS: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = MappingProxyType(
    {
        "identity": lambda x: x,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }
)
assert set(ACTIVATIONS) == set(OPS["rnn"])

#: Runs of one activation in a source node's out-edges, ordered by the activation of their
#: targets: ``(activation, first, stop)`` positions.
Runs = tuple[tuple[str, int, int], ...]


def by_activation(targets: Sequence[int], ops: Sequence[str]) -> tuple[list[int], Runs]:
    """The positions of ``targets`` ordered by their activation ``ops[target]`` (then by
    target), and the runs of one activation in that order: one call applies each."""
    order = sorted(range(len(targets)), key=lambda p: (ops[targets[p]], targets[p]))
    runs: list[tuple[str, int, int]] = []
    for pos, p in enumerate(order):
        op = ops[targets[p]]
        if runs and runs[-1][0] == op:
            runs[-1] = (op, runs[-1][1], pos + 1)
        else:
            runs.append((op, pos, pos + 1))
    return order, tuple(runs)


def gated_edges(s: torch.Tensor, c: torch.Tensor, hh: torch.Tensor, runs: Runs) -> torch.Tensor:
    """A source's out-edges ``e = s + σ(c)⊙(f(h~) − s)`` from its state ``s [..., nhid]`` and
    ``c``, ``h~ [..., m, nhid]`` (edges along dim -2, ordered by activation as ``runs`` say):
    a few whole-tensor operations instead of five per edge."""
    if len(runs) == 1:
        f = ACTIVATIONS[runs[0][0]](hh)
    else:
        f = torch.cat([ACTIVATIONS[op](hh[..., p:q, :]) for op, p, q in runs], dim=-2)
    s_ = s.unsqueeze(-2)
    return s_ + torch.sigmoid(c) * (f - s_)


@dataclass(frozen=True, kw_only=True)
class Dropouts:
    """Dropout rates of the language model (all 0 for the proxy task).

    Attributes:
        output: locked dropout on the cell output before the decoder.
        hidden: variational dropout on the states entering ``W0`` and every ``W_ij``.
        input: variational dropout on ``x_t`` entering ``W0``.
        embedding: locked dropout on the embedded words.
        word: embedding dropout, dropping whole words (rows of the embedding matrix).
    """

    output: float = 0.0
    hidden: float = 0.0
    input: float = 0.0
    embedding: float = 0.0
    word: float = 0.0

    def __post_init__(self) -> None:
        for name in ("output", "hidden", "input", "embedding", "word"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"dropout {name} must be in [0, 1), got {p}")

    @classmethod
    def darts(cls) -> Dropouts:
        """The final-training rates of method §7 (DARTS): 0.75, 0.25, 0.75, 0.2, word 0.1."""
        return cls(output=0.75, hidden=0.25, input=0.75, embedding=0.2, word=0.1)


class LMOutput(NamedTuple):
    """What a language model returns for one window."""

    logits: torch.Tensor  # [T, B, V]
    hidden: Any  # [B, nhid] for the cell; (h, c) of [1, B, nhid] for the LSTM
    raw: torch.Tensor  # [T, B, nhid] recurrent outputs before output dropout


def detach_hidden(hidden: Any) -> Any:
    """The hidden state cut from its history (tensors, or tuples of them)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return tuple(detach_hidden(h) for h in hidden)


def dropout_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor | None:
    """A Bernoulli keep-mask scaled by ``1/(1-p)`` (``None`` when ``p == 0``)."""
    if p == 0.0:
        return None
    return _keep_mask(like, shape, p)


def _keep_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    return like.new_empty(shape).bernoulli_(1.0 - p) / (1.0 - p)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout on ``x [T, B, D]`` with one mask per sequence, shared over the ``T`` steps."""
    if not training or p == 0.0:
        return x
    return x * _keep_mask(x, (1, x.size(1), x.size(2)), p)


def embedding_dropout(
    weight: torch.Tensor, tokens: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    """Embed ``tokens [T, B]`` -> ``[T, B, D]``, dropping whole words with probability ``p``."""
    if training and p > 0.0:
        weight = weight * _keep_mask(weight, (weight.size(0), 1), p)
    return F.embedding(tokens, weight)


class RNNCell(nn.Module):
    """A recurrent cell built from a ``kind="rnn"`` genotype (the DARTS-style cell of §1).

    Parameters: ``w0 [ninp + nhid, 2 nhid]`` and one ``[nhid, 2 nhid]`` matrix per edge,
    named ``edges["e{i}_{j}"]``; no biases.
    """

    def __init__(
        self, cell: Cell, ninp: int, nhid: int, *, input_dropout: float, hidden_dropout: float
    ) -> None:
        super().__init__()
        check_kind(cell, "rnn", "an RNN")
        if ninp < 1 or nhid < 1:
            raise ConfigError(f"ninp and nhid must be >= 1, got {ninp} and {nhid}")
        self.genotype = cell
        self.ninp, self.nhid = ninp, nhid
        self.input_dropout, self.hidden_dropout = input_dropout, hidden_dropout
        self.w0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
        self.edges = nn.ParameterDict(
            {
                f"e{i}_{j}": nn.Parameter(
                    torch.empty(nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE)
                )
                for i, j in cell.edges
            }
        )
        live = cell.live_nodes
        # Out-edges grouped by source: one matmul per source node and time step, the targets
        # ordered by their activation (one call per run of the same one).
        self._sources: list[tuple[int, tuple[int, ...], Runs]] = []
        for i in live:
            succ = cell.successors(i)
            if succ:
                order, runs = by_activation(succ, cell.ops)
                self._sources.append((i, tuple(succ[p] for p in order), runs))
        self._indegree = {j: len(cell.predecessors(j)) for j in live[1:]}
        self._leaves = cell.leaves

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the cell over ``x [T, B, ninp]`` from ``h [B, nhid]``.

        Returns the states ``[T, B, nhid]`` and the last state ``[B, nhid]``.
        """
        t_len, b, _ = x.shape
        x_mask = dropout_mask(x, (b, self.ninp), self.input_dropout) if self.training else None
        h_mask = dropout_mask(h, (b, self.nhid), self.hidden_dropout) if self.training else None
        if x_mask is not None:
            x = x * x_mask  # the same mask at every step (variational)
        xc = x @ self.w0[: self.ninp]  # [T, B, 2 nhid]: the input part of node 0, all steps
        w0h = self.w0[self.ninp :]  # [nhid, 2 nhid]
        grouped = [  # [nhid, 2 nhid * out-degree] per source node
            torch.cat([self.edges[f"e{i}_{j}"] for j in succ], dim=1)
            for i, succ, _ in self._sources
        ]
        states = []
        for xc_t in xc.unbind(0):  # one op (and one in the backward pass), not T selections
            h = self.step(xc_t, h, w0h, grouped, h_mask)
            states.append(h)
        return torch.stack(states), h

    def step(
        self,
        xc: torch.Tensor,
        h: torch.Tensor,
        w0h: torch.Tensor,
        grouped: list[torch.Tensor],
        h_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """One step: ``xc [B, 2 nhid]`` (= x_t·W0[:ninp]) and ``h [B, nhid]`` -> ``[B, nhid]``."""
        nhid = self.nhid
        hm = h if h_mask is None else h * h_mask
        c0, h0 = (xc + hm @ w0h).split(nhid, dim=-1)  # [B, nhid] each
        state: dict[int, torch.Tensor] = {0: h + torch.sigmoid(c0) * (torch.tanh(h0) - h)}
        total: dict[int, torch.Tensor] = {}
        for (i, succ, runs), w in zip(self._sources, grouped, strict=True):
            if i:  # all of node i's in-edges came from lower nodes: its sum is complete
                state[i] = total.pop(i) / self._indegree[i]
            s = state[i]  # [B, nhid]
            ch = (s if h_mask is None else s * h_mask) @ w  # [B, 2 nhid * len(succ)]
            c, hh = ch.view(len(s), len(succ), 2, nhid).unbind(2)  # [B, m, nhid] each
            for j, e in zip(succ, gated_edges(s, c, hh, runs).unbind(1), strict=True):
                total[j] = e if j not in total else total[j] + e
        for j, e_sum in total.items():  # the leaves (nodes with no out-edge)
            state[j] = e_sum / self._indegree[j]
        leaves = [state[k] for k in self._leaves]
        return leaves[0] if len(leaves) == 1 else torch.stack(leaves).mean(0)


class _LanguageModel(nn.Module):
    """Embedding and tied decoder shared by the cell and LSTM language models."""

    def __init__(self, ntoken: int, emsize: int, nhid: int, dropouts: Dropouts) -> None:
        super().__init__()
        check_vocabulary(ntoken)
        if emsize != nhid:
            raise ConfigError(f"tied weights need emsize == nhid, got {emsize} and {nhid}")
        self.ntoken, self.emsize, self.nhid, self.dropouts = ntoken, emsize, nhid, dropouts
        self.encoder = nn.Embedding(ntoken, emsize)
        nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        self.decoder = nn.Linear(nhid, ntoken)
        self.decoder.weight = self.encoder.weight  # tied
        nn.init.zeros_(self.decoder.bias)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [T, B]`` -> embedded and dropped-out ``[T, B, emsize]``."""
        d = self.dropouts
        emb = embedding_dropout(self.encoder.weight, tokens, d.word, self.training)
        return locked_dropout(emb, d.embedding, self.training)

    def decode(self, raw: torch.Tensor, hidden: Any) -> LMOutput:
        """Output dropout and the tied decoder: ``raw [T, B, nhid]`` -> logits ``[T, B, V]``."""
        out = locked_dropout(raw, self.dropouts.output, self.training)
        return LMOutput(self.decoder(out), hidden, raw)


class RNNModel(_LanguageModel):
    """Word-level language model around an :class:`RNNCell`; hidden state ``[B, nhid]``."""

    def __init__(
        self,
        cell: Cell,
        ntoken: int,
        *,
        emsize: int,
        nhid: int,
        dropouts: Dropouts | None = None,
    ) -> None:
        dropouts = dropouts or Dropouts()
        super().__init__(ntoken, emsize, nhid, dropouts)
        self.rnn = RNNCell(
            cell, emsize, nhid, input_dropout=dropouts.input, hidden_dropout=dropouts.hidden
        )

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """A zero hidden state ``[B, nhid]`` on the model's device."""
        return self.decoder.bias.new_zeros(batch_size, self.nhid)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor) -> LMOutput:
        """``tokens [T, B]``, ``hidden [B, nhid]`` -> logits ``[T, B, V]`` and the new state."""
        raw, hidden = self.rnn(self.embed(tokens), hidden)  # [T, B, nhid], [B, nhid]
        return self.decode(raw, hidden)


class LSTMModel(_LanguageModel):
    """The same language model around one ``nn.LSTM`` layer (the outside baseline).

    Dropouts: embedding, word and output as :class:`RNNModel`; ``nn.LSTM`` has no
    variational input/hidden dropout, so ``input`` and ``hidden`` must be 0.
    """

    def __init__(
        self, ntoken: int, *, emsize: int, nhid: int, dropouts: Dropouts | None = None
    ) -> None:
        dropouts = dropouts or Dropouts()
        if dropouts.input or dropouts.hidden:
            raise ConfigError("LSTMModel has no variational input/hidden dropout; set them to 0")
        super().__init__(ntoken, emsize, nhid, dropouts)
        self.rnn = nn.LSTM(emsize, nhid)

    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)``, each ``[1, B, nhid]``."""
        z = self.decoder.bias.new_zeros(1, batch_size, self.nhid)
        return z, z.clone()

    def forward(self, tokens: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]) -> LMOutput:
        """``tokens [T, B]``, ``(h, c)`` -> logits ``[T, B, V]`` and the new ``(h, c)``."""
        raw, hidden = self.rnn(self.embed(tokens), hidden)  # [T, B, nhid]
        return self.decode(raw, hidden)
