"""The batched executor: a whole batch of jobs goes to the evaluator at once (the GPU default).

:class:`BatchedExecutor` hands every job of a shrink step to an evaluator's ``evaluate_iter``
(or ``evaluate_many``), which trains them together and reports each one as it stops. A plain
:class:`~autoshrink.evaluators.cnn_proxy.CNNProxyEvaluator` is turned into its batched twin
(:class:`~autoshrink.evaluators.batched.BatchedCNNEvaluator`, same data and settings), a
plain :class:`~autoshrink.evaluators.rnn_proxy.RNNProxyEvaluator` into its stacked twin
(:class:`~autoshrink.evaluators.stacked_rnn.StackedRNNEvaluator`, which takes the precision
options ``bf16`` and ``tf32`` and ``cuda_graph``; depthwise kernels are a CNN-engine option), a
one-shot evaluator of CNN cells that fine-tunes for at least one epoch into
:class:`~autoshrink.evaluators.batched_oneshot.BatchedOneShotEvaluator`; the evaluator inside
a :class:`~autoshrink.evaluators.costed.CostedEvaluator` (a latency cost or constraint) the
same, with the costs added to its evaluations; any other evaluator is run one job after
another. A candidate that still ran out of memory alone
trains again (:func:`~autoshrink.executors.retries.retry_out_of_memory`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.evaluators.batched import BatchedCNNEvaluator
from autoshrink.evaluators.batched_oneshot import BatchedOneShotEvaluator
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.costed import CostedEvaluator
from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
from autoshrink.evaluators.stacked_rnn import StackedRNNEvaluator
from autoshrink.executors.base import InProcessExecutor, Job, RetryListener
from autoshrink.executors.retries import DEFAULT_RETRIES, check_retries, retry_out_of_memory

RNN_OPTIONS = ("bf16", "tf32", "cuda_graph", "max_batch", "compact_below")  # the stacked RNN's


class BatchedExecutor:
    """Evaluate all jobs of a batch together; ``options`` go to the batched evaluator it makes;
    ``max_retries`` bounds the retries of a candidate that ran out of memory."""

    def __init__(self, max_retries: int = DEFAULT_RETRIES, **options: Any) -> None:
        self.max_retries = check_retries(max_retries)
        self.options = options
        self._source: Evaluator | None = None
        self._batched: Any = None

    def _batched_for(self, evaluator: Evaluator) -> Any:
        if hasattr(evaluator, "evaluate_iter") or hasattr(evaluator, "evaluate_many"):
            return evaluator
        if self._source is evaluator:
            return self._batched
        # the plain proxy evaluator's twin only: a subclass trains otherwise (NAS-OoD's
        # minimax), which the twin would replace by plain training
        if type(evaluator) is CNNProxyEvaluator:
            batched: Any = BatchedCNNEvaluator.from_proxy(evaluator, **self.options)
        elif BatchedOneShotEvaluator.applies(evaluator):
            batched = BatchedOneShotEvaluator(evaluator, **self.options)
        elif isinstance(evaluator, RNNProxyEvaluator):
            rnn = {k: v for k, v in self.options.items() if k in RNN_OPTIONS}
            batched = StackedRNNEvaluator.from_proxy(evaluator, **rnn)
        else:
            return None
        self._source, self._batched = evaluator, batched
        return batched

    def run(
        self, evaluator: Evaluator, jobs: Sequence[Job], on_retry: RetryListener | None = None
    ) -> Iterator[tuple[int, Evaluation]]:
        """Yield ``(position, evaluation)`` for ``jobs`` as each candidate stops, trained together
        by ``evaluator``'s batched twin (one after another in this process when it has none); a
        candidate that ran out of memory trains again, up to ``max_retries`` times, after
        ``on_retry``."""
        # a latency cost or constraint wraps the evaluator: its twin trains, the costs are added
        costed = evaluator if isinstance(evaluator, CostedEvaluator) else None
        batched = self._batched_for(evaluator if costed is None else costed.inner)
        genotypes, seeds = [j.genotype for j in jobs], [j.seed for j in jobs]
        if batched is None:
            yield from InProcessExecutor(self.max_retries).run(evaluator, jobs, on_retry)
            return
        if hasattr(batched, "evaluate_iter"):
            results = batched.evaluate_iter(genotypes, seeds)
        else:
            results = enumerate(batched.evaluate_many(genotypes, seeds))
        done = retry_out_of_memory(batched, jobs, results, self.max_retries, on_retry)
        if costed is None:
            yield from done
            return
        for job in jobs:  # measured by the search's constraint check: not measured again
            costed.reuse_metrics(job.genotype, job.known)
        for i, evaluation in done:
            yield i, costed.with_costs(jobs[i].genotype, evaluation)

    def close(self) -> None:
        """Drop the batched evaluator made for the last evaluator (no workers to release)."""
        self._source = self._batched = None
