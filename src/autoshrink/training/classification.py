"""The proxy training loop for image classifiers (method §4).

Adam at a constant learning rate, mini-batches drawn in a seeded order, up to ``epochs``
epochs with three early stops: ``patience`` epochs without a better validation accuracy,
validation accuracy below ``min_accuracy`` after ``min_accuracy_epoch`` epochs, or a
validation loss above ``overfit_ratio`` times the training loss. A non-finite loss ends the
training as diverged. Returns the best validation accuracy and the per-epoch history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.training.proxy_settings import ProxyTraining


@dataclass
class TrainOutcome:
    """What a proxy training found."""

    best_accuracy: float
    epochs: int
    diverged: bool
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)
    # validation accuracy of each class at the epoch the training stopped (None: not measured;
    # a class without validation images is nan); what progressive screening ranks classes by
    class_accuracy: list[float] | None = None


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``x [N, C, H, W]``, ``y [N]`` (eval mode)."""
    loss, accuracy, _ = evaluate_classes(model, x, y, batch_size)
    return loss, accuracy


def evaluate_classes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float, list[float]]:
    """:func:`evaluate` with, from the same pass, the accuracy on the images of each class of
    the model's outputs (``nan`` for a class without images)."""
    model.eval()
    loss_sum, hits = 0.0, None
    with torch.no_grad():
        for s in range(0, len(y), batch_size):
            yb = y[s : s + batch_size]
            logits = model(x[s : s + batch_size])
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            if hits is None:
                hits = torch.zeros(logits.shape[1], dtype=torch.long, device=y.device)
            hits.index_add_(0, yb, (logits.argmax(1) == yb).long())
    assert hits is not None, "evaluation needs images"
    totals = torch.bincount(y, minlength=len(hits))
    return loss_sum / len(y), int(hits.sum()) / len(y), per_class(hits, totals)


def per_class(hits: torch.Tensor, totals: torch.Tensor) -> list[float]:
    """``hits / totals`` per class as floats, ``nan`` where a class has no images."""
    return [h / n if n else math.nan for h, n in zip(hits.tolist(), totals.tolist(), strict=True)]


def train_proxy(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: ProxyTraining,
    generator: torch.Generator,
) -> TrainOutcome:
    """Train ``model`` on ``train``, tracking validation accuracy (tensors on its device)."""
    x, y = train
    # foreach: one multi-tensor update instead of a Python loop over the parameters, the same
    # numbers to the bit (torch picks it on CUDA, not on the CPU: 1.03-1.04x per step there,
    # benchmarks/bench_proxy_optimizer.py)
    opt = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, foreach=True
    )
    best, since_best = 0.0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=generator).to(y.device)
        loss_sum = torch.zeros((), device=y.device)
        for s in range(0, len(y), settings.batch_size):
            idx = order[s : s + settings.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
        train_loss = float(loss_sum) / len(y)
        if not math.isfinite(train_loss):
            return TrainOutcome(best, epoch, True, "diverged", history)
        val_loss, val_acc, classes = evaluate_classes(model, *val, settings.batch_size)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if not math.isfinite(val_loss):
            return TrainOutcome(best, epoch, True, "diverged", history)
        if val_acc > best:
            best, since_best = val_acc, 0
        else:
            since_best += 1
        if since_best >= settings.patience:
            return TrainOutcome(best, epoch, False, "patience", history, classes)
        if epoch >= settings.min_accuracy_epoch and val_acc < settings.min_accuracy:
            return TrainOutcome(best, epoch, False, "low_accuracy", history, classes)
        if val_loss > settings.overfit_ratio * train_loss:
            return TrainOutcome(best, epoch, False, "overfit", history, classes)
    return TrainOutcome(best, settings.epochs, False, "epochs", history, classes)
