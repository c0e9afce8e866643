"""What the stacked evaluators share: grouping candidates, trained together, retried in halves.

:class:`StackedEvaluation` is the part of :class:`~autoshrink.evaluators.batched.
BatchedCNNEvaluator` and :class:`~autoshrink.evaluators.stacked_rnn.StackedRNNEvaluator` that
does not depend on the network: candidates that can be stacked together (same group key, e.g.
their node ops) are trained in groups of at most ``max_batch``; ``evaluate_iter`` yields each
evaluation the moment its candidate stops. A candidate that cannot be stacked goes to the
one-by-one evaluator, and so does a group of one unless the evaluator's ``stacks_single`` says
a stack of one is the faster of the two. A group that fails (e.g. out of memory) is retried in
halves, down to single candidates, which the one-by-one evaluator trains (one that fails
becomes ``"failed"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from autoshrink.devices import is_cuda, torch_threads
from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import TRAINING_ERRORS, Evaluation
from autoshrink.graph import Cell

log = logging.getLogger(__name__)


def check_cuda_graph(cuda_graph: bool | None, device: str) -> None:
    """Raise :class:`ConfigError` for ``cuda_graph=True`` off CUDA, at construction: else every
    group would fail and be retried in halves down to the plain loop, hiding the mistake."""
    if cuda_graph and not is_cuda(device):
        raise ConfigError(f"cuda_graph needs a CUDA device, not {device!r}")


class StackedEvaluation:
    """Mixin for an evaluator that trains groups of candidates together.

    The class using it provides ``device``, ``threads``, ``max_batch`` and
    ``_group_key``, ``_alone``, ``_train`` and ``_evaluation``; it may override
    :attr:`stacks_single`.
    """

    device: str
    threads: int | None
    max_batch: int | None

    @property
    def stacks_single(self) -> bool:
        """Whether a group of one trains as a stack of one rather than in the plain loop (by
        default not: the plain loop of a single candidate is the faster of the two)."""
        return False

    def _group_key(self, cell: Cell) -> Hashable | None:
        """Candidates with equal keys train together; ``None``: this one cannot be stacked."""
        raise NotImplementedError

    def _alone(self, cell: Cell, seed: int) -> Evaluation:
        """The one-by-one evaluation of ``cell``."""
        raise NotImplementedError

    def _train(self, cells: list[Cell], seeds: list[int]) -> Iterator[tuple[int, Any]]:
        """Train ``cells`` together; yield ``(position, outcome)`` as each one stops."""
        raise NotImplementedError

    def _evaluation(self, cell: Cell, out: Any, t0: float, batch: int) -> Evaluation:
        """The evaluation of ``cell`` from its training ``out``come."""
        raise NotImplementedError

    def evaluate(self, genotype: Cell, seed: int) -> Evaluation:
        """Evaluate one candidate: :meth:`evaluate_many` of a group of one."""
        return self.evaluate_many([genotype], [seed])[0]

    def evaluate_many(self, genotypes: Sequence[Cell], seeds: Sequence[int]) -> list[Evaluation]:
        """Evaluate every genotype with its seed; the evaluations in input order."""
        done = dict(self.evaluate_iter(genotypes, seeds))
        return [done[i] for i in range(len(genotypes))]

    def evaluate_iter(
        self, genotypes: Sequence[Cell], seeds: Sequence[int]
    ) -> Iterator[tuple[int, Evaluation]]:
        """Yield ``(position, evaluation)`` for every genotype, as each candidate stops."""
        if len(genotypes) != len(seeds):
            raise ValueError(f"{len(genotypes)} genotypes but {len(seeds)} seeds")
        with torch_threads(self.threads):
            groups: dict[Hashable, list[int]] = {}
            for i, cell in enumerate(genotypes):
                key = self._group_key(cell)
                if key is None:
                    yield i, self._alone(cell, seeds[i])  # not stackable: one by one
                else:
                    groups.setdefault(key, []).append(i)
            size = self.max_batch or len(genotypes)
            for members in groups.values():
                for s in range(0, len(members), size):
                    yield from self._train_group(members[s : s + size], genotypes, seeds)

    def _train_group(
        self, members: list[int], genotypes: Sequence[Cell], seeds: Sequence[int]
    ) -> Iterator[tuple[int, Evaluation]]:
        if len(members) == 1 and not self.stacks_single:
            yield from self._one_by_one(members[0], genotypes, seeds)
            return
        t0 = time.perf_counter()
        cells = [genotypes[i] for i in members]
        pending = list(members)
        try:
            for k, out in self._train(cells, [seeds[i] for i in members]):
                pending.remove(members[k])
                yield members[k], self._evaluation(cells[k], out, t0, len(members))
        except TRAINING_ERRORS as err:
            if is_cuda(self.device):
                torch.cuda.empty_cache()
            if len(members) == 1:  # a stack of one failed: the plain loop has the last word
                if pending:
                    log.warning("a stack of one failed (%s); training it one by one", err)
                    yield from self._one_by_one(members[0], genotypes, seeds)
                return
            log.warning(
                "%d candidates together failed (%s); retrying in halves", len(pending), err
            )  # down to single candidates, which the plain loop trains (or reports failed)
            half = max(1, len(pending) // 2)
            yield from self._train_group(pending[:half], genotypes, seeds)
            if pending[half:]:
                yield from self._train_group(pending[half:], genotypes, seeds)

    def _one_by_one(
        self, i: int, genotypes: Sequence[Cell], seeds: Sequence[int]
    ) -> Iterator[tuple[int, Evaluation]]:
        alone = self._alone(genotypes[i], seeds[i])
        yield i, replace(alone, detail={**alone.detail, "batch": 1})
