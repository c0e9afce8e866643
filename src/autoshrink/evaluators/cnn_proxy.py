"""Proxy-task evaluation of CNN cells: build the proxy network, train it, report metrics.

The evaluator holds the normalised proxy split and the macro; ``evaluate`` seeds the weight
initialisation and the data order from the candidate's seed, so a candidate gives the same
result in any process, in any order. A diverged training is reported as such (it scores
``-inf``), and any other exception inside a candidate becomes a ``"failed"`` evaluation
instead of ending the search.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from autoshrink.cost.cells import count
from autoshrink.data.images import ProxySplit
from autoshrink.devices import own_generators, torch_threads
from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import TRAINING_ERRORS, Evaluation, failed, trained
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.nn.layout import to_device
from autoshrink.spaces.macros import MacroSpec
from autoshrink.training.classification import TrainOutcome, train_proxy
from autoshrink.training.proxy_settings import ProxyTraining

Tensors = tuple[torch.Tensor, torch.Tensor]
#: ``(model, train set, validation set, generator) -> outcome``: how :meth:`fit` trains.
TrainFn = Callable[[nn.Module, Tensors, Tensors, torch.Generator], TrainOutcome]


def check_fits(split: ProxySplit, macro: MacroSpec) -> None:
    """Raise :class:`ConfigError` unless ``macro`` takes the images and classes of ``split``:
    other channels failed every candidate, fewer classes raised from inside the loss, another
    image size counted the MACs of a network that never trains."""
    _, channels, size, _ = split.train_x.shape
    if macro.in_channels != channels:
        raise ConfigError(
            f"macro {macro.name} takes {macro.in_channels}-channel images; the proxy split's "
            f"have {channels}"
        )
    if macro.image_size != size:
        raise ConfigError(
            f"macro {macro.name} takes {macro.image_size}px images; the proxy split's are {size}px"
        )
    if macro.num_classes != split.num_classes:
        raise ConfigError(
            f"macro {macro.name} has {macro.num_classes} classes; the proxy split has "
            f"{split.num_classes}"
        )


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
        check_fits(split, macro)
        self.split = split
        self.macro = macro
        self.training = training
        self.device = device
        self.threads = threads

    def profile(self, genotype: Cell) -> dict[str, float]:
        """The cell's ``macs`` and ``params`` on the proxy macro, counted without training."""
        c = count(genotype, self.macro)
        return {"macs": float(c.macs), "params": float(c.params)}

    @property
    def num_classes(self) -> int:
        """The number of classes of the proxy task."""
        return self.split.num_classes

    def screening_stage(self, classes: Sequence[int], epochs: int) -> CNNProxyEvaluator:
        """This evaluator for a progressive screening stage (:mod:`autoshrink.screening`): the
        proxy images of ``classes`` only, at most ``epochs`` epochs, the other settings kept."""
        stage = copy.copy(self)
        stage.split = self.split.restricted(classes)
        stage.training = replace(self.training, epochs=epochs)
        return stage

    def images_trained(self, epochs: int) -> int:
        """Images a candidate saw in ``epochs`` epochs (every epoch is the whole proxy split)."""
        return epochs * len(self.split.train_y)

    def _tensors(self) -> tuple[Tensors, Tensors]:
        s, dev = self.split, torch.device(self.device)
        cl = torch.channels_last  # 1.5-2x faster for these small convolutions on the CPU

        def images(x: object) -> torch.Tensor:
            return torch.from_numpy(x).to(dev).contiguous(memory_format=cl)

        train = (images(s.train_x), torch.from_numpy(s.train_y).to(dev))
        val = (images(s.val_x), torch.from_numpy(s.val_y).to(dev))
        return train, val

    def evaluate(self, genotype: Cell, seed: int) -> Evaluation:
        """Train the cell's proxy network from ``seed`` and return its validation accuracy
        with :meth:`profile`'s costs (:meth:`fit`, without the trained network)."""
        return self.fit(genotype, seed)[0]

    def fit(
        self,
        genotype: Cell,
        seed: int,
        build: Callable[[], nn.Module] | None = None,
        train: TrainFn | None = None,
    ) -> tuple[Evaluation, nn.Module | None]:
        """:meth:`evaluate`, also returning the trained network (``None`` when it failed).

        ``build`` makes the network (default: a fresh one of ``genotype``) and ``train`` trains
        it (default: :func:`train_proxy` with this evaluator's settings); both run after the
        global generator is seeded from ``seed`` and get a generator seeded from it too.
        """
        t0 = time.perf_counter()
        with torch_threads(self.threads), own_generators(self.device):
            metrics = self.profile(genotype)
            try:
                torch.manual_seed(seed)
                model = (build or (lambda: build_network(genotype, self.macro)))()
                model = to_device(model, self.device)
                gen = torch.Generator().manual_seed(seed)
                train_set, val = self._tensors()
                if train is None:
                    out = train_proxy(model, train_set, val, self.training, gen)
                else:
                    out = train(model, train_set, val, gen)
            except TRAINING_ERRORS as err:
                return failed(metrics, "accuracy", err, t0, genotype.key), None
            accuracy = float("nan") if out.diverged else out.best_accuracy
            return self._finished(genotype, metrics, accuracy, out, t0), model

    def _finished(
        self,
        genotype: Cell,
        metrics: dict[str, float],
        accuracy: float,
        out: TrainOutcome,
        t0: float,
        **detail: object,
    ) -> Evaluation:
        """The evaluation of a training that ran to its end: ``detail`` gets the images it
        trained on and, unless it diverged, the validation accuracy of each class."""
        if out.class_accuracy is not None:
            detail["class_accuracy"] = [  # None: no validation image of the class
                None if math.isnan(a) else round(a, 4) for a in out.class_accuracy
            ]
        images = self.images_trained(out.epochs)
        return trained(metrics, "accuracy", accuracy, out, t0, images_trained=images, **detail)
