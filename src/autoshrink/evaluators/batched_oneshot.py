"""One-shot evaluation on the batched engine: a step's candidates fine-tuned together.

:class:`BatchedOneShotEvaluator` is to :class:`~autoshrink.evaluators.oneshot.OneShotEvaluator`
what :class:`~autoshrink.evaluators.batched.BatchedCNNEvaluator` is to the one-by-one proxy
evaluator. Every candidate of a step starts from the current cell's weights cut down to it
(:func:`~autoshrink.nn.inherit.inherit_cnn`, as one by one). The cut networks are loaded into
one stacked network and fine-tuned together for the one-shot epochs with the same seeds,
data order and early stops. Each candidate's weights are copied back out of the stack the
moment it stops and saved where the one-by-one evaluator saves them (``oneshot/candidates``),
so the search's :class:`~autoshrink.evaluators.oneshot.WeightTrail` works unchanged.

Step 0 (the complete cell, trained from scratch) and a group of one go to the one-by-one
one-shot evaluator. So does ``--oneshot-epochs 0``, which recomputes batch-norm statistics
and trains nothing: there is nothing to stack.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import replace
from typing import Any, TypeGuard

import torch
from torch import nn

from autoshrink.devices import own_generators
from autoshrink.evaluators.base import Evaluation
from autoshrink.evaluators.batched import BatchedCNNEvaluator
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.oneshot import (
    CANDIDATES,
    CURRENT,
    OneShotEvaluator,
    read_cell_weights,
    save_cell_weights,
)
from autoshrink.graph import Cell
from autoshrink.nn.batched import BatchedCNN, union_cell
from autoshrink.nn.cnn import build_network
from autoshrink.nn.inherit import check_subcell, inherit_cnn
from autoshrink.training.classification import TrainOutcome


class BatchedOneShotEvaluator(BatchedCNNEvaluator):
    """Fine-tune a step's one-shot candidates stacked (see the module docstring); ``options``
    are those of :class:`~autoshrink.evaluators.batched.BatchedCNNEvaluator`."""

    def __init__(self, oneshot: OneShotEvaluator, **options: Any) -> None:
        inner = oneshot.inner
        if not isinstance(inner, CNNProxyEvaluator) or oneshot.epochs < 1:
            raise ValueError("stacked one-shot fine-tuning needs CNN cells and >= 1 epoch")
        training = replace(inner.training, epochs=oneshot.epochs)
        super().__init__(
            inner.split,
            inner.macro,
            training,
            device=inner.device,
            threads=inner.threads,
            **options,
        )
        self.oneshot = oneshot
        self._parent: Cell | None = None

    @staticmethod
    def applies(evaluator: Any) -> TypeGuard[OneShotEvaluator]:
        """Whether ``evaluator`` is a one-shot evaluator this class can stack."""
        return (
            isinstance(evaluator, OneShotEvaluator)
            and isinstance(evaluator.inner, CNNProxyEvaluator)
            and evaluator.epochs >= 1
        )

    @property
    def stacks_single(self) -> bool:
        """Never: a group of one goes to the one-by-one one-shot evaluator (step 0 trains from
        scratch there)."""
        return False

    def _group_key(self, cell: Cell) -> Hashable | None:
        """None (one by one) while the search has no weights yet: the one-shot evaluator then
        trains from scratch (see :meth:`OneShotEvaluator.evaluate`); else the engine's key."""
        if not (self.oneshot.weights_folder() / CURRENT).is_file():
            return None
        return super()._group_key(cell)

    def _alone(self, cell: Cell, seed: int) -> Evaluation:
        return self.oneshot.evaluate(cell, seed)

    def _train(self, cells: list[Cell], seeds: list[int]) -> Iterator[tuple[int, TrainOutcome]]:
        folder = self.oneshot.weights_folder()
        parent, tensors = read_cell_weights(folder / CURRENT)
        self._parent = parent
        nets = []
        # per candidate, the random draws of OneShotEvaluator: seed, parent built, then cut
        for cell, seed in zip(cells, seeds, strict=True):
            check_subcell(parent, cell)
            with own_generators():  # the CPU's: the networks are built there
                torch.manual_seed(seed)
                trained = build_network(parent, self.macro)
                trained.load_state_dict(tensors)
                nets.append(inherit_cnn(trained, parent, cell, self.macro)[0])
        engine = BatchedCNN(
            union_cell(cells),
            self.macro,
            cells,
            depthwise=self.depthwise,
            bn=self.bn,
            node_inputs=self.node_inputs,
        )
        for k, net in enumerate(nets):
            engine.load_candidate(k, net)
        engine.to(self.device)

        def stopped(k: int, position: int) -> None:  # its weights, out of the stack
            engine.load_candidate(position, nets[k], back=True)

        n = len(self.split.train_y)
        for k, out in self._fit(engine, seeds, on_stop=stopped):
            if not out.diverged:
                steps = out.epochs * math.ceil(n / self.training.batch_size)
                for bn in nets[k].modules():  # what one-by-one training counts in them
                    if isinstance(bn, nn.BatchNorm2d) and bn.num_batches_tracked is not None:
                        bn.num_batches_tracked += steps
                path = folder / CANDIDATES / f"{cells[k].key}.safetensors"
                save_cell_weights(path, cells[k], nets[k])
            yield k, out

    def _evaluation(self, cell: Cell, out: TrainOutcome, t0: float, batch: int) -> Evaluation:
        evaluation = super()._evaluation(cell, out, t0, batch)
        assert self._parent is not None
        detail = {**evaluation.detail, "inherited": True, "parent": self._parent.key}
        return replace(evaluation, detail=detail)
