"""Training a network that inherited its weights: fine-tuning, or batch-norm recalibration only.

A one-shot candidate (:mod:`autoshrink.evaluators.oneshot`) starts from weights cut from its
parent's trained network. :func:`finetune` trains it for a few epochs with the proxy protocol's
optimiser settings; with ``epochs == 0`` it is not trained at all: its batch-norm statistics
are recomputed on the training images (the cut changed what each layer sees) and it is
validated as it is.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import cast

import numpy as np
import torch
from torch import nn

from autoshrink.data.text import batchify
from autoshrink.training.classification import TrainOutcome, evaluate_classes, train_proxy
from autoshrink.training.language import (
    LanguageModel,
    LMOutcome,
    evaluate_lm,
    perplexity,
    train_proxy_lm,
)
from autoshrink.training.proxy_settings import ProxyTraining, RNNProxyTraining


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Replace every batch norm's running statistics by their exact average over ``x``
    (a forward pass in training mode, cumulative averaging; no weight changes)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: equal weight per batch
    model.train()
    for s in range(0, len(x), batch_size):
        model(x[s : s + batch_size])
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    model.eval()


def finetune(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: ProxyTraining,
    epochs: int,
    generator: torch.Generator,
) -> TrainOutcome:
    """Fine-tune ``model`` for ``epochs`` epochs with ``settings`` (its early stops included);
    ``epochs == 0``: recompute batch-norm statistics, then validate (stop reason
    ``"inherited"``)."""
    if epochs > 0:
        return train_proxy(model, train, val, replace(settings, epochs=epochs), generator)
    recompute_bn_statistics(model, train[0], settings.batch_size)
    loss, accuracy, classes = evaluate_classes(model, *val, settings.batch_size)
    diverged = not math.isfinite(loss)
    history = [{"epoch": 0, "val_loss": loss, "val_accuracy": accuracy}]
    reason = "diverged" if diverged else "inherited"
    return TrainOutcome(accuracy, 0, diverged, reason, history, None if diverged else classes)


def finetune_lm(
    model: nn.Module,
    train: np.ndarray,
    valid: np.ndarray,
    settings: RNNProxyTraining,
    epochs: int,
    device: str = "cpu",
) -> LMOutcome:
    """:func:`finetune` for language models (token ids ``train`` / ``valid``): ``epochs``
    epochs of :func:`train_proxy_lm`, or with 0 the validation perplexity as inherited."""
    if epochs > 0:
        return train_proxy_lm(model, train, valid, replace(settings, epochs=epochs), device=device)
    data = torch.from_numpy(batchify(valid, settings.eval_batch_size)).to(torch.device(device))
    ppl = perplexity(evaluate_lm(model, data, settings.bptt))
    bound = settings.divergence_factor * cast(LanguageModel, model).ntoken
    diverged = not math.isfinite(ppl) or ppl > bound
    history = [{"epoch": 0, "val_perplexity": ppl}]
    if diverged:
        return LMOutcome(math.nan, 0, True, "diverged", history)
    return LMOutcome(ppl, 0, False, "inherited", history)
