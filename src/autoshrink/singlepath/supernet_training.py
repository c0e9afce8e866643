"""One epoch of the Single-Path supernet's training: SGD on its weights and, after the warm-up,
Adam on its thresholds against cross-entropy plus the latency term; its checkpoint state."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from autoshrink.cost.mobilenetv2 import MobileNetV2Spec
from autoshrink.nn.state_fit import misfit
from autoshrink.singlepath.data import SearchData
from autoshrink.singlepath.latency_model import LatencyModel
from autoshrink.singlepath.settings import SearchSettings
from autoshrink.singlepath.superkernel import SuperNet
from autoshrink.training.checkpoint import (
    DamagedState,
    check_optimizer_state,
    flatten_optimizer,
    unflatten_optimizer,
)
from autoshrink.training.optim import warmup_cosine


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s draws (data order, flips, dropout): ``seed * 100003 +
    epoch``, wrapped into torch's 64 bits (a seed above about 1.8e14 overflowed them)."""
    return (seed * 100_003 + epoch) % 2**64


def latency_term(lat: torch.Tensor, s: SearchSettings) -> torch.Tensor:
    """``λ·log(lat)``, or with a target ``λ·max(0, log(lat / target))``."""
    if s.latency_target_ms is None:
        return s.lam * torch.log(lat)
    return s.lam * F.relu(torch.log(lat / s.latency_target_ms))


def supernet_state(net: SuperNet, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The supernet's state dict among a checkpoint's ``tensors`` (:meth:`SupernetTraining.
    snapshot`'s); a :class:`DamagedState` where it does not fit ``net``, nothing loaded."""
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    what = misfit(net, model)
    if what is not None:  # the settings are this run's: the file is damaged
        raise DamagedState(f"its supernet does not fit this one ({what})")
    return model


class SupernetTraining:
    """The supernet, its two optimisers and the schedule."""

    def __init__(self, s: SearchSettings, data: SearchData, model: LatencyModel) -> None:
        self.s, self.data, self.model = s, data, model
        torch.manual_seed(s.seed)
        spec = MobileNetV2Spec(
            width=s.width,
            image_size=s.search_size,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
        )
        self.net = SuperNet(spec)
        self.opt_w = torch.optim.SGD(
            self.net.weight_parameters(),
            lr=self.peak_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=s.weight_decay,
        )
        self.opt_t = torch.optim.Adam(self.net.threshold_parameters(), lr=s.threshold_lr)
        # a last batch of one image is left out: batch norm over the 1x1 maps of the last
        # stages cannot train on it (a ValueError at the end of epoch 1)
        full, rest = divmod(len(data.train_y), s.batch_size)
        self.steps_per_epoch = full + (rest > 1)

    @property
    def peak_lr(self) -> float:
        """The weights' learning rate at the top of the schedule (``lr_per_256`` scaled to the
        batch)."""
        return self.s.lr_per_256 * self.s.batch_size / 256

    def lr_at(self, step: int) -> float:
        """Linear warm-up over the first epoch, then cosine to 0 at the last step."""
        spe = self.steps_per_epoch
        return warmup_cosine(step, self.peak_lr, spe, spe * self.s.epochs)

    def train_epoch(self, epoch: int) -> dict[str, float | None]:
        """Train epoch ``epoch`` (from 1; its data order, flips and dropout from the seed and
        the epoch alone, so a resumed run draws the same); the mean training loss, the mean
        blended latency (``None`` in the warm-up), the images and whether it searched."""
        s, d = self.s, self.data
        searching = epoch > s.warmup_epochs
        gen = torch.Generator().manual_seed(epoch_seed(s.seed, epoch))
        torch.manual_seed(epoch_seed(s.seed, epoch))  # dropout: the same after a resume
        order = torch.randperm(len(d.train_y), generator=gen)
        self.net.train()
        ce_sum = lat_sum = 0.0
        n = 0
        for i in range(self.steps_per_epoch):
            idx = order[i * s.batch_size : (i + 1) * s.batch_size]
            x, y = d.train_x[idx], d.train_y[idx]
            if s.flip:
                flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flips
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            lr = self.lr_at((epoch - 1) * self.steps_per_epoch + i)
            for g in self.opt_w.param_groups:
                g["lr"] = lr
            for g in self.opt_t.param_groups:  # the same decay: the decisions settle
                g["lr"] = s.threshold_lr * lr / self.peak_lr
            ce = F.cross_entropy(self.net(x), y)
            loss = ce
            if searching:
                lat = self.model.blended(self.net)
                loss = ce + latency_term(lat, s)
                lat_sum += float(lat.detach()) * len(idx)
            self.opt_w.zero_grad(set_to_none=True)
            self.opt_t.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_w.step()
            if searching:
                self.opt_t.step()
            ce_sum += float(ce.detach()) * len(idx)
            n += len(idx)
        return {
            "train_loss": ce_sum / n,
            "blended_ms": lat_sum / n if searching else None,
            "images": n,
            "searching": searching,
        }

    def decisions_row(self) -> list[dict[str, Any]]:
        """Every searchable layer's choice, thresholds and weight norms now (a row of
        ``decisions.jsonl``)."""
        return [
            {"choice": layer.decision().choice, **layer.thresholds(), **layer.norms()}
            for layer in self.net.super_layers
        ]

    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The checkpoint's tensors, and the optimisers' JSON rest."""
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        rests = {}
        for name, opt in (("opt_w", self.opt_w), ("opt_t", self.opt_t)):
            t, rests[name] = flatten_optimizer(opt.state_dict(), name)
            tensors.update(t)
        return tensors, rests

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Load what :meth:`snapshot` gave (and a checkpoint kept) back into the supernet and
        both optimisers; one that does not fit them (:func:`check_optimizer_state`) is a
        :class:`DamagedState`, and nothing is loaded."""
        model = supernet_state(self.net, tensors)
        saved = [
            (name, opt, unflatten_optimizer(tensors, state["optimizers"][name], name))
            for name, opt in (("opt_w", self.opt_w), ("opt_t", self.opt_t))
        ]
        for name, opt, opt_state in saved:  # all checked before anything is loaded
            check_optimizer_state(opt, opt_state, name, stepped=False)
        self.net.load_state_dict(model)
        for _, opt, opt_state in saved:
            opt.load_state_dict(opt_state)
