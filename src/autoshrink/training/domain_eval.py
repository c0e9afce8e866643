"""Final evaluation on a multi-domain data set: accuracy per domain, the held-out one apart.

After ``autoshrink train --test-domain NAME`` has trained a network on the training domains
(:func:`autoshrink.data.domains.load_training_domains`), :func:`domain_report` scores it on
each training domain's test part and on every image of the held-out domain, which is built
here, by final evaluation code, and nowhere on the search's path. All images go through the
run's evaluation transform (normalised with the training images' statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoshrink.data.domains import DomainImageData, load_held_out_domain
from autoshrink.data.loaders import ArrayImages, GlobalBatchSampler, TrainingData, make_loader


@dataclass(frozen=True)
class DomainScore:
    """Accuracy of a network on one domain's images."""

    domain: str
    accuracy: float
    images: int
    held_out: bool


@torch.no_grad()
def accuracy_on(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    data: TrainingData,
    device: torch.device,
    batch_size: int = 256,
) -> float:
    """Accuracy on ``x [N, C, H, W]`` in [0, 1] through ``data``'s evaluation transform."""
    images = ArrayImages(x, y, data.val.transform, data.val.seed)
    loader = make_loader(images, GlobalBatchSampler(len(y), batch_size, shuffle=False))
    model.eval()
    correct = 0
    for xb, yb in loader:
        correct += int((model(xb.to(device)).argmax(1).cpu() == yb).sum())
    return correct / len(y)


def domain_report(
    model: nn.Module,
    data: TrainingData,
    images: DomainImageData,
    test_domain: str | None,
    root: str | Path | None,
    device: torch.device,
) -> list[DomainScore]:
    """Per-domain accuracies: each training domain's test part, then the held-out domain."""
    scores = []
    for i, name in enumerate(images.domains):
        part = images.test_domain == i
        acc = accuracy_on(model, images.test_x[part], images.test_y[part], data, device)
        scores.append(DomainScore(name, acc, int(part.sum()), False))
    if test_domain is not None:
        held = load_held_out_domain(images.name, test_domain, root)
        acc = accuracy_on(model, held.x, held.y, data, device)
        scores.append(DomainScore(test_domain, acc, len(held.y), True))
    return scores


def report_metrics(scores: list[DomainScore]) -> dict[str, Any]:
    """The ``metrics.json`` entries of a domain report."""
    train = [s for s in scores if not s.held_out]
    held = [s for s in scores if s.held_out]
    n = sum(s.images for s in train)
    out: dict[str, Any] = {
        "domains": {
            s.domain: {"accuracy": s.accuracy, "images": s.images, "held_out": s.held_out}
            for s in scores
        },
        "training_domains_accuracy": sum(s.accuracy * s.images for s in train) / n,
    }
    if held:
        out |= {"test_domain": held[0].domain, "test_domain_accuracy": held[0].accuracy}
    return out
