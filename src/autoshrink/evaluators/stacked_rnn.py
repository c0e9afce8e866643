"""Proxy-task evaluation of many RNN cells at once: one stacked language model per group.

:class:`StackedRNNEvaluator` gives the same results as :class:`RNNProxyEvaluator` (same initial
weights per seed, same windows, within floating-point tolerance) but trains the candidates that
share their node ops -- all K single-edge removals of a shrink step -- together in one
:class:`~autoshrink.nn.stacked_rnn.StackedRNNModel` with
:func:`~autoshrink.training.stacked_language.train_stacked_lm`. Grouping, ``evaluate_iter`` and
the retries in halves come from :class:`~autoshrink.evaluators.stacking.StackedEvaluation`.
With CUDA graphs a group of one (the complete cell at step 0) also trains as a stack, of one:
its windows are then replayed from graphs, which the plain loop does not do.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

from autoshrink.data.text import Corpus
from autoshrink.devices import is_cuda
from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluation, trained
from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
from autoshrink.evaluators.stacking import StackedEvaluation, check_cuda_graph
from autoshrink.graph import Cell
from autoshrink.nn.stacked_rnn import build_stacked_rnn
from autoshrink.training.batched import check_compact_below
from autoshrink.training.language import LMOutcome
from autoshrink.training.proxy_settings import RNNProxyTraining
from autoshrink.training.stacked_language import train_stacked_lm


class StackedRNNEvaluator(StackedEvaluation, RNNProxyEvaluator):
    """Train candidate RNN cells on the proxy task, many at once; metrics as the proxy evaluator.

    Options (besides those of :class:`RNNProxyEvaluator`):
        max_batch: most candidates trained together (``None``: all that share their ops).
        tf32: CUDA float32 matmuls on TF32 tensor cores (no effect on the CPU or in float64).
        bf16: bfloat16 autocast for forward passes (not bit-equivalent).
        cuda_graph: replay the BPTT windows from CUDA graphs (CUDA only; same arithmetic);
            ``None`` (the default): on CUDA devices, where it made the paper-protocol search
            2.4x faster per epoch on an H200 (benchmarks/README.md).
        compact_below: stopped candidates leave the stacks once at most this fraction of
            them still train (see :func:`train_stacked_lm`).
    """

    def __init__(
        self,
        corpus: Corpus,
        training: RNNProxyTraining,
        *,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
        tf32: bool = False,
        bf16: bool = False,
        cuda_graph: bool | None = None,
        compact_below: float = 0.5,
    ) -> None:
        super().__init__(corpus, training, device=device, threads=threads)
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        check_compact_below(compact_below)
        check_cuda_graph(cuda_graph, device)
        self.max_batch = max_batch
        self.tf32, self.bf16 = tf32, bf16
        self.cuda_graph = is_cuda(device) if cuda_graph is None else cuda_graph
        self.compact_below = compact_below

    @classmethod
    def from_proxy(cls, evaluator: RNNProxyEvaluator, **options: Any) -> StackedRNNEvaluator:
        """The stacked twin of a one-by-one proxy evaluator (same corpus and training)."""
        return cls(
            evaluator.corpus,
            evaluator.training,
            device=evaluator.device,
            threads=evaluator.threads,
            **options,
        )

    @property
    def stacks_single(self) -> bool:
        """With CUDA graphs: a single candidate trains faster as a stack of one, replayed from
        graphs, than in the plain loop (benchmarks/README.md, ``rnn single speedup``)."""
        return self.cuda_graph

    def _group_key(self, cell: Cell) -> Hashable | None:
        return cell.ops if cell.kind == "rnn" else None

    def _alone(self, cell: Cell, seed: int) -> Evaluation:
        return RNNProxyEvaluator.evaluate(self, cell, seed)

    def _train(self, cells: list[Cell], seeds: list[int]) -> Iterator[tuple[int, LMOutcome]]:
        n = self.training.nhid
        model = build_stacked_rnn(cells, seeds, self.corpus.ntokens, nhid=n).to(self.device)
        yield from train_stacked_lm(
            model,
            self.corpus.train,
            self.corpus.valid,
            self.training,
            device=self.device,
            tf32=self.tf32,
            bf16=self.bf16,
            cuda_graph=self.cuda_graph,
            compact_below=self.compact_below,
        )

    def _evaluation(self, cell: Cell, out: LMOutcome, t0: float, batch: int) -> Evaluation:
        return trained(self.profile(cell), "perplexity", out.best_perplexity, out, t0, batch=batch)
