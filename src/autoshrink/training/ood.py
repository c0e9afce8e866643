"""NAS-OoD's minimax proxy training (Bai et al., ICCV 2021), one candidate at a time.

A small conditional generator ``G(x, source code, target code)`` maps an image of a training
domain to a synthetic image of a *novel* domain. Codes live in ``R^(D + Z)``: training domain
``i`` is the one-hot ``e_i`` (first ``D`` entries), a novel domain is ``[0, z]`` with
``z ~ N(0, I_Z)`` drawn per image. The generator's output is the input plus a bounded residual,
``x' = x + max_shift * tanh(...)``.

Each mini-batch takes **one backward pass** through a gradient-reversal layer (our choice;
the released NAS-OoD code does the same):

- the candidate ``f`` minimises ``CE(f(x), y) + synthetic_weight * CE(f(GRL(x')), y)`` -- its
  loss on real and synthetic images, in one forward pass of the concatenated batch so batch
  norm sees both;
- the generator receives ``-adversarial`` times the gradient of the candidate's whole loss
  (real and synthetic: batch norm's statistics mix the two, so the real images' loss depends
  on ``x'`` too) through the reversal, i.e. it *maximises* the candidate's loss, under two
  constraints it minimises: class consistency ``class_weight * CE(k(x'), y)`` with a small *keeper*
  classifier ``k`` trained on real images only (its weights are held fixed in this term, so
  the generator cannot collude with it) and cycle consistency
  ``cycle_weight * |G(x', [0, z], e_source) - x|_1`` (mapping back to the source domain must
  return the image).

After every epoch the candidate is scored on the validation images (held-out images of the
training domains) and on *fresh* synthetic images: the generator applied to those validation
images with novel codes drawn from a fixed seed. The selected epoch is the one with the best
``(1 - synthetic_mix) * val_accuracy + synthetic_mix * synthetic_accuracy``; early stopping
follows :class:`~autoshrink.training.proxy_settings.ProxyTraining` (patience on that mix,
``min_accuracy`` on the validation accuracy, ``overfit_ratio`` on the validation loss against
the candidate's loss on the real training images, divergence), as an erm candidate's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.training.classification import evaluate
from autoshrink.training.proxy_settings import OodSettings, ProxyTraining


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-scale`` backward."""
    return _Reverse.apply(x, scale)


class DomainGenerator(nn.Module):
    """``G(x, source code, target code) = x + max_shift * tanh(net([x, codes]))``."""

    def __init__(self, channels: int, code_size: int, width: int, max_shift: float) -> None:
        super().__init__()
        self.max_shift = max_shift
        self.net = nn.Sequential(
            nn.Conv2d(channels + 2 * code_size, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` -> ``[B, C, H, W]``: ``x`` plus a shift below ``max_shift`` per value,
        computed from ``x`` and the codes ``source`` and ``target [B, D + Z]`` broadcast to maps."""
        # x [B, C, H, W]; source, target [B, D + Z] broadcast to maps
        b, _, h, w = x.shape
        codes = torch.cat([source, target], 1)[:, :, None, None].expand(b, -1, h, w)
        return x + self.max_shift * torch.tanh(self.net(torch.cat([x, codes], 1)))


def keeper_network(channels: int, num_classes: int, width: int) -> nn.Module:
    """The fixed small classifier that checks a synthetic image keeps its class."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


@dataclass
class OodOutcome:
    """What a minimax proxy training found (at the selected epoch)."""

    val_accuracy: float
    synthetic_accuracy: float
    mixed_accuracy: float
    epochs: int
    diverged: bool
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)


def _codes(domains: torch.Tensor, num_domains: int, code_dim: int) -> torch.Tensor:
    return F.pad(F.one_hot(domains, num_domains).float(), (0, code_dim))


def _novel(n: int, num_domains: int, code_dim: int, gen: torch.Generator) -> torch.Tensor:
    return F.pad(torch.randn(n, code_dim, generator=gen), (num_domains, 0))


def synthetic_accuracy(
    model: nn.Module,
    generator: DomainGenerator,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    num_domains: int,
    code_dim: int,
    batch_size: int,
    seed: int,
) -> float:
    """The candidate's accuracy on fresh synthetic images of the validation images (novel
    codes drawn from ``seed``)."""
    x, y, d = val
    gen = torch.Generator().manual_seed(seed)
    generator.eval()
    with torch.no_grad():
        parts = []
        for s in range(0, len(y), batch_size):
            xb, db = x[s : s + batch_size], d[s : s + batch_size]
            z = _novel(len(db), num_domains, code_dim, gen).to(x.device)
            parts.append(generator(xb, _codes(db, num_domains, code_dim), z))
        synthetic = torch.cat(parts).contiguous(memory_format=torch.channels_last)
    return evaluate(model, synthetic, y, batch_size)[1]


def minimax_loss(
    model: nn.Module,
    generator: DomainGenerator,
    keeper: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    source: torch.Tensor,
    novel: torch.Tensor,
    ood: OodSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's total loss (one backward pass trains all three networks) and the
    candidate's loss on the real images."""
    fake = generator(x, source, novel)
    both = torch.cat([x, reverse_gradient(fake, ood.adversarial)])
    logits = model(both.contiguous(memory_format=torch.channels_last))
    real_loss = F.cross_entropy(logits[: len(y)], y)
    fake_loss = F.cross_entropy(logits[len(y) :], y)
    frozen = {k: v.detach() for k, v in keeper.named_parameters()}
    keep_loss = F.cross_entropy(torch.func.functional_call(keeper, frozen, (fake,)), y)
    cycle = (generator(fake, novel, source) - x).abs().mean()
    loss = (
        real_loss
        + ood.synthetic_weight * fake_loss
        + ood.class_weight * keep_loss
        + ood.cycle_weight * cycle
        + F.cross_entropy(keeper(x), y)  # the keeper learns from real images only
    )
    return loss, real_loss


def train_ood_proxy(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    num_domains: int,
    num_classes: int,
    settings: ProxyTraining,
    ood: OodSettings,
    gen: torch.Generator,
) -> OodOutcome:
    """Train ``model`` against a generator; ``train``/``val`` are ``(x, y, domain)`` tensors."""
    x, y, d = train
    channels = x.shape[1]
    code = num_domains + ood.code_dim
    generator = DomainGenerator(channels, code, ood.width, ood.max_shift).to(x.device)
    keeper = keeper_network(channels, num_classes, ood.width).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    opt_g = torch.optim.Adam([*generator.parameters(), *keeper.parameters()], lr=ood.lr)
    eval_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    best: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mixed, val, synthetic
    since_best = 0
    history: list[dict[str, float]] = []

    def outcome(epoch: int, diverged: bool, reason: str) -> OodOutcome:
        return OodOutcome(best[1], best[2], best[0], epoch, diverged, reason, history)

    for epoch in range(1, settings.epochs + 1):
        model.train()
        generator.train()
        keeper.train()
        order = torch.randperm(len(y), generator=gen).to(y.device)
        loss_sum = torch.zeros((), device=y.device)
        for s in range(0, len(y), settings.batch_size):
            idx = order[s : s + settings.batch_size]
            xb, yb, db = x[idx], y[idx], d[idx]
            source = _codes(db, num_domains, ood.code_dim)
            novel = _novel(len(idx), num_domains, ood.code_dim, gen).to(x.device)
            loss, real_loss = minimax_loss(model, generator, keeper, xb, yb, source, novel, ood)
            opt.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            opt_g.step()
            loss_sum += real_loss.detach() * len(idx)
        train_loss = float(loss_sum) / len(y)
        if not math.isfinite(train_loss):
            return outcome(epoch, True, "diverged")
        val_loss, val_acc = evaluate(model, val[0], val[1], settings.batch_size)
        syn_acc = synthetic_accuracy(
            model, generator, val, num_domains, ood.code_dim, settings.batch_size, eval_seed
        )
        mixed = (1 - ood.synthetic_mix) * val_acc + ood.synthetic_mix * syn_acc
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "synthetic_accuracy": syn_acc,
                "mixed_accuracy": mixed,
            }
        )
        if not math.isfinite(val_loss):
            return outcome(epoch, True, "diverged")
        if mixed > best[0]:
            best, since_best = (mixed, val_acc, syn_acc), 0
        else:
            since_best += 1
        if since_best >= settings.patience:
            return outcome(epoch, False, "patience")
        if epoch >= settings.min_accuracy_epoch and val_acc < settings.min_accuracy:
            return outcome(epoch, False, "low_accuracy")
        if val_loss > settings.overfit_ratio * train_loss:  # train_loss: on the real images
            return outcome(epoch, False, "overfit")
    return outcome(settings.epochs, False, "epochs")
