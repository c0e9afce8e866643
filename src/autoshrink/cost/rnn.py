"""Parameter and MAC counts of RNN language models from the genotype alone (no torch).

The standard count of a DARTS-style cell language model with tied weights: the embedding
(``V·emsize``), the node-0 matrix (``(emsize + nhid)·2·nhid``), one ``nhid·2·nhid`` matrix per
edge, and the decoder bias (``V``; its weight is the embedding). Untied, the decoder adds its
own ``nhid·V`` weight. MACs are per token: the cell's matrices and the decoder. For the
released ShrinkRNN cell at ``emsize = nhid = 745`` and PTB's 10k vocabulary this gives
23.0M parameters (the paper rounds it to "about 24M"). The tests check it against
``sum(p.numel())`` of the built :class:`~autoshrink.nn.rnn.RNNModel`.

The search's cost term is ``edge_cost = E·nhid²`` (method §3), from :func:`edge_cost`.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoshrink.cost.cells import Counts
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell, check_kind
from autoshrink.ranges import WHOLE, check_fields


def check_vocabulary(words: int, where: str = "") -> None:
    """A :class:`ConfigError` (its message led by ``where``) unless a vocabulary of ``words``
    can make a language model: one word has nothing to predict from."""
    if words < 2:
        raise ConfigError(f"{where}a language model needs a vocabulary of >= 2 words, got {words}")


@dataclass(frozen=True, kw_only=True)
class RNNSpec:
    """A word-level language model around a cell: vocabulary and sizes."""

    name: str
    vocab: int
    emsize: int
    nhid: int
    tied: bool = True

    def __post_init__(self) -> None:
        check_fields(self.name, self, {WHOLE: ("vocab", "nhid", "emsize")})  # nhid: the flag
        check_vocabulary(self.vocab, f"{self.name}: ")
        if self.tied and self.emsize != self.nhid:
            raise ConfigError(f"{self.name}: tied weights need emsize == nhid")


def shrinkrnn_ptb(*, vocab: int = 10_000, nhid: int = 745) -> RNNSpec:
    """The published ShrinkRNN model (§7): PTB's 10k words, emsize = nhid = 745, tied."""
    return RNNSpec(name="shrinkrnn-ptb", vocab=vocab, emsize=nhid, nhid=nhid, tied=True)


def rnn_proxy(*, vocab: int, nhid: int = 100) -> RNNSpec:
    """The search's proxy model (§4): emsize = nhid = 100, tied."""
    return RNNSpec(name="rnn-proxy", vocab=vocab, emsize=nhid, nhid=nhid, tied=True)


#: Language-model macros by name (``autoshrink count --macro``).
RNN_MACROS = {"shrinkrnn-ptb": shrinkrnn_ptb}


def count_rnn(cell: Cell, spec: RNNSpec) -> Counts:
    """Parameters and per-token MACs of ``spec`` built from the rnn ``cell``."""
    check_kind(cell, "rnn", f"macro {spec.name}")
    v, m, n = spec.vocab, spec.emsize, spec.nhid
    w0 = (m + n) * 2 * n
    edges = cell.num_edges * n * 2 * n
    decoder = Counts(v if spec.tied else (n + 1) * v, n * v)
    return Counts(v * m, 0) + Counts(w0, w0) + Counts(edges, edges) + decoder


def edge_cost(cell: Cell, nhid: int) -> int:
    """The RNN score's cost term ``E·nhid²`` (E = reachable edges)."""
    return cell.num_edges * nhid * nhid
