"""Training loops for word-level language models: the search proxy (§4) and what the final
training (:mod:`autoshrink.training.final_language`) shares with it.

Both loops read the token stream as parallel columns (``[T, B]``, see
:func:`autoshrink.data.text.batchify`), walk it in BPTT windows carrying the hidden state from
window to window and detaching it in between (:func:`train_epoch`), and clip the gradient norm.

:func:`train_proxy_lm` (method §4): plain SGD, lr 20, batch 128, fixed 35-step windows,
clip 0.25, up to 10 epochs, lr ÷10 after the 7th and the 9th epoch (the method's "epochs 6 and
8", counted from 0), stop after 4 epochs without a better validation perplexity. A training
whose loss turns NaN/inf, or whose validation perplexity exceeds ``divergence_factor`` times
the vocabulary size (10× worse than guessing uniformly), is reported as diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from autoshrink.data.text import batchify
from autoshrink.nn.rnn import detach_hidden
from autoshrink.training.proxy_settings import RNNProxyTraining


class LanguageModel(Protocol):
    """What the loops need of a language model besides ``nn.Module``
    (:class:`~autoshrink.nn.rnn.RNNModel`, :class:`~autoshrink.nn.rnn.LSTMModel`)."""

    ntoken: int

    def init_hidden(self, batch_size: int) -> Any:
        """The initial (zero) hidden state for ``batch_size`` parallel columns."""
        ...


@dataclass
class LMOutcome:
    """What a proxy training found: the best validation perplexity (``nan`` if diverged)."""

    best_perplexity: float
    epochs: int
    diverged: bool
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)


def perplexity(loss: float) -> float:
    """``exp(loss)``, ``inf`` when it overflows or the loss is not finite."""
    try:
        return math.exp(loss) if math.isfinite(loss) else math.inf
    except OverflowError:
        return math.inf


def windows(
    length: int, bptt: int, rng: np.random.Generator | None = None, max_delta: int = 20
) -> Iterator[int]:
    """Window lengths covering ``length - 1`` input positions.

    Fixed ``bptt`` without ``rng``; with it, the AWD-LSTM/DARTS draw: ``bptt`` (or ``bptt / 2``
    with probability 0.05) plus normal noise of sd 5, kept within ``[5, bptt + max_delta]``.
    """
    i = 0
    while i < length - 1:
        n = bptt
        if rng is not None:
            base = bptt if rng.random() < 0.95 else bptt / 2
            n = min(max(5, int(rng.normal(base, 5))), bptt + max_delta)
        n = min(n, length - 1 - i)
        yield n
        i += n


def evaluate_lm(model: nn.Module, data: torch.Tensor, bptt: int) -> float:
    """Mean cross-entropy per token of ``model`` on ``data [T, B]`` (eval mode)."""
    model.eval()
    hidden = cast(LanguageModel, model).init_hidden(data.size(1))
    total, count, i = 0.0, 0, 0
    with torch.no_grad():
        for n in windows(data.size(0), bptt):
            out = model(data[i : i + n], hidden)
            targets = data[i + 1 : i + 1 + n]  # [n, B]
            total += F.cross_entropy(
                out.logits.reshape(-1, out.logits.size(-1)), targets.reshape(-1), reduction="sum"
            ).item()
            count += targets.numel()
            hidden, i = out.hidden, i + n
    return total / count


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: torch.Tensor,
    *,
    bptt: int,
    clip: float,
    rng: np.random.Generator | None = None,
    max_delta: int = 20,
    tar: float = 0.0,
    after_step: Callable[[], None] | None = None,
    progress: str | None = None,
) -> float:
    """One pass over ``data [T, B]``; returns the mean training loss (``nan`` on divergence).

    The hidden state is carried across windows and detached before each one. With ``rng``,
    window lengths vary, at most ``bptt + max_delta`` (:func:`windows`), and the learning rate
    is scaled by ``length / bptt`` (DARTS). With ``progress`` (its label), a bar of the tokens
    trained shows on a terminal.
    """
    model.train()
    hidden = cast(LanguageModel, model).init_hidden(data.size(1))
    total, count, i = 0.0, 0, 0
    tokens = (data.size(0) - 1) * data.size(1)
    with tqdm(
        total=tokens, desc=progress, unit="token", unit_scale=True, leave=False,
        disable=None if progress else True,
    ) as bar:  # fmt: skip
        for n in windows(data.size(0), bptt, rng, max_delta):
            hidden = detach_hidden(hidden)  # truncated BPTT: no gradient into earlier windows
            out = model(data[i : i + n], hidden)
            targets = data[i + 1 : i + 1 + n]
            logits = out.logits.reshape(-1, out.logits.size(-1))
            loss = F.cross_entropy(logits, targets.reshape(-1))
            value = loss.item()
            if not math.isfinite(value):
                return math.nan
            if tar > 0 and n > 1:
                loss = loss + tar * (out.raw[1:] - out.raw[:-1]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            if rng is not None:
                scale = n / bptt
                for g in optimizer.param_groups:
                    g["lr"] *= scale
                optimizer.step()
                for g in optimizer.param_groups:
                    g["lr"] /= scale
            else:
                optimizer.step()
            if after_step is not None:
                after_step()
            total += value * targets.numel()
            count += targets.numel()
            hidden, i = out.hidden, i + n
            bar.update(targets.numel())
    return total / count


def train_proxy_lm(
    model: nn.Module,
    train: np.ndarray,
    valid: np.ndarray,
    settings: RNNProxyTraining,
    *,
    device: str = "cpu",
) -> LMOutcome:
    """Train ``model`` (on ``device``) on the token ids ``train``, tracking validation perplexity.

    The model must offer ``ntoken``, ``init_hidden(batch)`` and return an
    :class:`~autoshrink.nn.rnn.LMOutput`; the training itself draws no random numbers.
    """
    s = settings
    dev = torch.device(device)
    train_data = torch.from_numpy(batchify(train, s.batch_size)).to(dev)  # [T, B]
    valid_data = torch.from_numpy(batchify(valid, s.eval_batch_size)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    stop = LMEarlyStop(s, cast(LanguageModel, model).ntoken)
    for epoch in range(1, s.epochs + 1):
        train_loss = train_epoch(model, opt, train_data, bptt=s.bptt, clip=s.clip)
        val_ppl = math.nan
        if math.isfinite(train_loss):
            val_ppl = perplexity(evaluate_lm(model, valid_data, s.bptt))
        out = stop.after_epoch(epoch, train_loss, val_ppl, opt.param_groups[0]["lr"])
        if out is not None:
            return out
        decay_lr(opt, epoch, s)
    raise AssertionError("LMEarlyStop ends every training by its last epoch")


def decay_lr(opt: torch.optim.Optimizer, epoch: int, settings: RNNProxyTraining) -> None:
    """Divide the learning rate by 10 after the epochs of ``settings.lr_decay_after``."""
    if epoch in settings.lr_decay_after:
        for g in opt.param_groups:
            g["lr"] /= 10.0


class LMEarlyStop:
    """One proxy training's stop rules (method §4), applied after every epoch: divergence
    (non-finite loss or perplexity, or a perplexity above ``divergence_factor`` × vocabulary),
    patience, the last epoch."""

    def __init__(self, settings: RNNProxyTraining, ntoken: int) -> None:
        self.settings = settings
        self.bound = settings.divergence_factor * ntoken
        self.best, self.since_best = math.inf, 0
        self.history: list[dict[str, float]] = []

    def after_epoch(
        self, epoch: int, train_loss: float, val_ppl: float, lr: float
    ) -> LMOutcome | None:
        """Record ``epoch``; the outcome if the training stops after it."""
        self.history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_perplexity": val_ppl, "lr": lr}
        )
        if not math.isfinite(val_ppl) or val_ppl > self.bound:
            return LMOutcome(math.nan, epoch, True, "diverged", self.history)
        if val_ppl < self.best:
            self.best, self.since_best = val_ppl, 0
        else:
            self.since_best += 1
        if self.since_best >= self.settings.patience:
            return LMOutcome(self.best, epoch, False, "patience", self.history)
        if epoch >= self.settings.epochs:
            return LMOutcome(self.best, epoch, False, "epochs", self.history)
        return None
