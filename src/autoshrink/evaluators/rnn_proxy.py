"""Proxy-task evaluation of RNN cells: build the language model, train it, report perplexity.

The evaluator holds the tokenised proxy corpus (method §4: the first 4,000 training and 300
validation lines of PTB). ``profile`` needs no training: ``edges`` (E), ``edge_cost``
(``E·nhid²``, the cost term of the RNN score), ``params`` and per-token ``macs``.
``evaluate`` seeds the weight initialisation from the candidate's seed, trains with
:func:`~autoshrink.training.language.train_proxy_lm` and adds ``perplexity``, the best
validation perplexity. A diverged training is reported as ``"diverged"`` (it scores ``-inf``);
any other exception inside a candidate becomes a ``"failed"`` evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoshrink.cost.rnn import RNNSpec, count_rnn, edge_cost, rnn_proxy
from autoshrink.data.text import Corpus, batchify, load_text
from autoshrink.devices import own_generators, torch_threads
from autoshrink.evaluators.base import TRAINING_ERRORS, Evaluation, failed, trained
from autoshrink.graph import Cell
from autoshrink.journal import CONFIG_HASH_DIGITS
from autoshrink.nn.rnn import RNNModel
from autoshrink.training.language import LMOutcome, train_proxy_lm
from autoshrink.training.proxy_settings import RNNProxyTraining

if TYPE_CHECKING:
    from autoshrink.config import SearchConfig


class RNNProxyEvaluator:
    """Train a candidate RNN cell's language model on the proxy corpus.

    Metrics: ``perplexity`` (best validation), ``edges``, ``edge_cost``, ``params``, ``macs``.
    """

    def __init__(
        self,
        corpus: Corpus,
        training: RNNProxyTraining,
        *,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.corpus = corpus
        self.training = training
        self.device = device
        self.threads = threads

    @property
    def data_hash(self) -> str:
        """The first digits of the proxy text's digest (:meth:`Corpus.sha256`): what the
        journal's records carry as ``data_hash``."""
        return self.corpus.sha256()[:CONFIG_HASH_DIGITS]

    @property
    def macro(self) -> RNNSpec:
        """The proxy language model the cells are counted and trained in: the corpus's
        vocabulary, the training's ``nhid``."""
        return rnn_proxy(vocab=self.corpus.ntokens, nhid=self.training.nhid)

    def profile(self, genotype: Cell) -> dict[str, float]:
        """``edges`` (E), ``edge_cost`` (``E·nhid²``), ``params`` and per-token ``macs`` of the
        cell's proxy language model, counted without training."""
        nhid = self.training.nhid
        c = count_rnn(genotype, self.macro)
        return {
            "edges": float(genotype.num_edges),
            "edge_cost": float(edge_cost(genotype, nhid)),
            "params": float(c.params),
            "macs": float(c.macs),
        }

    def build(self, genotype: Cell, seed: int) -> RNNModel:
        """The candidate's language model, initialised from ``seed``."""
        torch.manual_seed(seed)
        return self.network(genotype).to(self.device)

    def network(self, genotype: Cell) -> RNNModel:
        """The candidate's language model as torch initialises it (on the current device)."""
        n = self.training.nhid
        return RNNModel(genotype, self.corpus.ntokens, emsize=n, nhid=n)

    def evaluate(self, genotype: Cell, seed: int) -> Evaluation:
        """Train the cell's language model from ``seed`` and return its best validation
        ``perplexity`` with :meth:`profile`'s costs (:meth:`fit`, without the model)."""
        return self.fit(genotype, seed)[0]

    def fit(
        self,
        genotype: Cell,
        seed: int,
        build: Callable[[], nn.Module] | None = None,
        train: Callable[[nn.Module], LMOutcome] | None = None,
    ) -> tuple[Evaluation, nn.Module | None]:
        """:meth:`evaluate`, also returning the trained model (``None`` when it failed).

        ``build`` makes the model after the global generator is seeded from ``seed`` (default:
        :meth:`build`); ``train`` trains it (default: :func:`train_proxy_lm` with this
        evaluator's settings and corpus).
        """
        t0 = time.perf_counter()
        with torch_threads(self.threads), own_generators(self.device):
            metrics = self.profile(genotype)
            try:
                if build is None:
                    model: nn.Module = self.build(genotype, seed)
                else:
                    torch.manual_seed(seed)
                    model = build().to(self.device)
                if train is None:
                    corpus = self.corpus
                    out = train_proxy_lm(
                        model, corpus.train, corpus.valid, self.training, device=self.device
                    )
                else:
                    out = train(model)
            except TRAINING_ERRORS as err:
                return failed(metrics, "perplexity", err, t0, genotype.key), None
            return trained(metrics, "perplexity", out.best_perplexity, out, t0), model


def rnn_evaluator(config: SearchConfig) -> RNNProxyEvaluator:
    """The evaluator of a ``task="rnn"`` search: reads the text data in ``config.data_dir``."""
    t = config.rnn_training
    corpus = load_text(
        config.data_dir, train_lines=t.train_lines, valid_lines=t.valid_lines, with_test=False
    )
    # too little text for the batch: say so now, once
    batchify(corpus.train, t.batch_size, f"{corpus.name}: the train split")
    batchify(corpus.valid, t.eval_batch_size, f"{corpus.name}: the valid split (evaluation)")
    return RNNProxyEvaluator(corpus, t, device=config.device, threads=config.threads)
