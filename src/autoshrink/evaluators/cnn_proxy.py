"""Proxy-task evaluation of CNN cells: build the proxy network, train it, report metrics.

The evaluator holds the normalised proxy split and the macro; ``evaluate`` seeds the weight
initialisation and the data order from the candidate's seed, so a candidate gives the same
result in any process, in any order. A diverged training is reported as such (it scores
``-inf``), and any other exception inside a candidate becomes a ``"failed"`` evaluation
instead of ending the search.
"""

from __future__ import annotations

import time

import torch

from autoshrink.cost.cells import count
from autoshrink.data.images import ProxySplit
from autoshrink.evaluators.base import Evaluation, failed, trained
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.macros import MacroSpec
from autoshrink.training.classification import ProxyTraining, train_proxy


class CNNProxyEvaluator:
    """Train a candidate CNN cell on the proxy task; metrics ``accuracy``, ``macs``, ``params``;
    ``detail["images_trained"]``: images seen in training, summed over its epochs."""

    def __init__(
        self,
        split: ProxySplit,
        macro: MacroSpec,
        training: ProxyTraining,
        *,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.split = split
        self.macro = macro
        self.training = training
        self.device = device
        self.threads = threads

    def profile(self, genotype: Cell) -> dict[str, float]:
        c = count(genotype, self.macro)
        return {"macs": float(c.macs), "params": float(c.params)}

    def images_trained(self, epochs: int) -> int:
        """Images a candidate saw in ``epochs`` epochs (every epoch is the whole proxy split)."""
        return epochs * len(self.split.train_y)

    def _tensors(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        s, dev = self.split, torch.device(self.device)
        cl = torch.channels_last  # 1.5-2x faster for these small convolutions on the CPU

        def images(x: object) -> torch.Tensor:
            return torch.from_numpy(x).to(dev).contiguous(memory_format=cl)

        train = (images(s.train_x), torch.from_numpy(s.train_y).to(dev))
        val = (images(s.val_x), torch.from_numpy(s.val_y).to(dev))
        return train, val

    def evaluate(self, genotype: Cell, seed: int) -> Evaluation:
        t0 = time.perf_counter()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        metrics = self.profile(genotype)
        try:
            torch.manual_seed(seed)
            model = build_network(genotype, self.macro).to(
                self.device, memory_format=torch.channels_last
            )
            gen = torch.Generator().manual_seed(seed)
            train, val = self._tensors()
            out = train_proxy(model, train, val, self.training, gen)
        except (RuntimeError, ValueError) as err:
            return failed(metrics, "accuracy", err, t0, genotype.key)
        accuracy = float("nan") if out.diverged else out.best_accuracy
        return trained(
            metrics, "accuracy", accuracy, out, t0, images_trained=self.images_trained(out.epochs)
        )
