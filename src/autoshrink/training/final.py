"""Final training of a found cell on a whole data set with a standard small-image recipe.

SGD with Nesterov momentum, a cosine learning-rate schedule with linear warm-up, weight decay,
optional label smoothing, random-crop (reflect padding) and horizontal-flip augmentation.
The learning rate is given per 128 images and scales with the batch size. Reports the test
accuracy after every epoch; the caller saves the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.data.images import ImageData, channel_stats, normalise
from autoshrink.training.classification import evaluate


@dataclass(frozen=True, kw_only=True)
class SmallImageRecipe:
    """A CIFAR-style recipe: SGD + cosine, crop/flip augmentation."""

    epochs: int = 30
    batch_size: int = 128
    lr_per_128: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    crop_padding: int | None = None  # default: image_size // 8
    flip: bool = True


@dataclass
class FinalResult:
    test_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)


def augment(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop after reflect padding and random horizontal flip of ``x [B, C, H, W]``."""
    b, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # [B, H]
        cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # [B, W]
        idx = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def train_final(
    model: nn.Module,
    data: ImageData,
    recipe: SmallImageRecipe,
    *,
    seed: int = 0,
    device: str = "cpu",
    on_epoch: object = None,
) -> FinalResult:
    """Train ``model`` on all of ``data.train``; evaluate on ``data.test`` after each epoch."""
    mean, std = channel_stats(data.train_x)
    dev = torch.device(device)
    x = torch.from_numpy(normalise(data.train_x, mean, std)).to(dev)
    y = torch.from_numpy(data.train_y.astype(np.int64)).to(dev)
    tx = torch.from_numpy(normalise(data.test_x, mean, std)).to(dev)
    ty = torch.from_numpy(data.test_y.astype(np.int64)).to(dev)
    gen = torch.Generator().manual_seed(seed)
    lr = recipe.lr_per_128 * recipe.batch_size / 128
    opt = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
    total, warm = recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    padding = data.image_size // 8 if recipe.crop_padding is None else recipe.crop_padding
    history: list[dict[str, float]] = []
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=gen).to(dev)
        loss_sum = 0.0
        for s in range(0, len(y), recipe.batch_size):
            idx = order[s : s + recipe.batch_size]
            xb = augment(x[idx], padding, recipe.flip, gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * len(idx)
        test_loss, test_acc = evaluate(model, tx, ty, 512)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / len(y),
            "test_loss": test_loss,
            "test_accuracy": test_acc,
        }
        history.append(row)
        if callable(on_epoch):
            on_epoch(row)
    return FinalResult(history[-1]["test_accuracy"], history)
