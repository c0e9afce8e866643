"""The ``--objective ood`` evaluator: NAS-OoD's minimax proxy training of each candidate.

:func:`ood_evaluator` builds it from a search config and the images
:func:`autoshrink.evaluators.factory.build_evaluator` loaded -- the training domains' only
(``load_images`` with the config's ``test_domain`` never builds the held-out domain) -- with
the seeded proxy split of the ERM evaluator with each training
image's and validation image's domain. A data set without domains counts as one domain.

Metrics: ``val_accuracy`` (held-out images of the training domains), ``synthetic_accuracy``
(fresh images from the candidate's generator) and ``accuracy``, their mix
``(1 - synthetic_mix) * val_accuracy + synthetic_mix * synthetic_accuracy`` -- what the score
reads, so the cost term and every strategy work unchanged -- plus ``macs`` and ``params``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from autoshrink.data.images import (
    ImageData,
    ProxySplit,
    proxy_indices,
    split_at,
)
from autoshrink.devices import own_generators, torch_threads
from autoshrink.evaluators.base import TRAINING_ERRORS, Evaluation, failed, trained
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.nn.layout import to_device
from autoshrink.spaces.macros import MacroSpec
from autoshrink.training.ood import train_ood_proxy
from autoshrink.training.proxy_settings import OodSettings, ProxyTraining

if TYPE_CHECKING:
    from autoshrink.config import SearchConfig


@dataclass(frozen=True, eq=False)
class DomainSplit(ProxySplit):
    """The normalised proxy task with the domain index of every image."""

    train_domain: np.ndarray
    val_domain: np.ndarray
    num_domains: int

    def subset(self, train: np.ndarray, val: np.ndarray) -> DomainSplit:
        """As :meth:`ProxySplit.subset`, the images' domains kept with them."""
        return replace(
            super().subset(train, val),
            train_domain=self.train_domain[train],
            val_domain=self.val_domain[val],
        )


def domain_split(data: ImageData, *, per_class: int, val_size: int, seed: int) -> DomainSplit:
    """:func:`~autoshrink.data.images.proxy_split`'s images, with their domains."""
    tr, va = proxy_indices(data, per_class=per_class, val_size=val_size, seed=seed)
    split = split_at(data, tr, va)
    domains = getattr(data, "train_domain", np.zeros(len(data.train_y), dtype=np.int64))
    return DomainSplit(
        **{f.name: getattr(split, f.name) for f in fields(ProxySplit)},
        train_domain=domains[tr].astype(np.int64),
        val_domain=domains[va].astype(np.int64),
        num_domains=len(getattr(data, "domains", ("all",))),
    )


class OodProxyEvaluator(CNNProxyEvaluator):
    """Train a candidate against a domain generator; metrics as in the module docstring;
    ``detail["images_trained"]``: real images seen in training, summed over its epochs (each
    also passes through the generator)."""

    split: DomainSplit

    def __init__(
        self,
        split: DomainSplit,
        macro: MacroSpec,
        training: ProxyTraining,
        ood: OodSettings,
        *,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__(split, macro, training, device=device, threads=threads)
        self.ood = ood

    def _domain_tensors(self, part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = torch.device(self.device)
        x = torch.from_numpy(getattr(self.split, f"{part}_x")).to(dev)
        y = torch.from_numpy(getattr(self.split, f"{part}_y")).to(dev)
        d = torch.from_numpy(getattr(self.split, f"{part}_domain")).to(dev)
        return x.contiguous(memory_format=torch.channels_last), y, d

    def evaluate(self, genotype: Cell, seed: int) -> Evaluation:
        """Train the cell's proxy network from ``seed`` against a domain generator
        (:func:`train_ood_proxy`); ``accuracy`` is the mix of ``val_accuracy`` and
        ``synthetic_accuracy``, both reported beside it, with the costs of
        :meth:`CNNProxyEvaluator.profile`."""
        t0 = time.perf_counter()
        with torch_threads(self.threads), own_generators(self.device):
            metrics = self.profile(genotype)
            try:
                torch.manual_seed(seed)
                model = build_network(genotype, self.macro)
                model = to_device(model, self.device)
                gen = torch.Generator().manual_seed(seed)
                out = train_ood_proxy(
                    model,
                    self._domain_tensors("train"),
                    self._domain_tensors("val"),
                    self.split.num_domains,
                    self.split.num_classes,
                    self.training,
                    self.ood,
                    gen,
                )
            except TRAINING_ERRORS as err:
                return failed(metrics, "accuracy", err, t0, genotype.key)
            images = self.images_trained(out.epochs)
            if out.diverged:
                return trained(metrics, "accuracy", float("nan"), out, t0, images_trained=images)
            metrics |= {
                "val_accuracy": out.val_accuracy,
                "synthetic_accuracy": out.synthetic_accuracy,
            }
            return trained(metrics, "accuracy", out.mixed_accuracy, out, t0, images_trained=images)


def ood_evaluator(config: SearchConfig, data: ImageData, macro: MacroSpec) -> OodProxyEvaluator:
    """The evaluator of a :class:`~autoshrink.config.SearchConfig` with ``objective="ood"``
    on ``data`` (loaded with the config's ``test_domain``) and the proxy ``macro``."""
    split = domain_split(
        data, per_class=config.per_class, val_size=config.val_size, seed=config.seed
    )
    return OodProxyEvaluator(
        split, macro, config.cnn_training, config.ood, device=config.device, threads=config.threads
    )
