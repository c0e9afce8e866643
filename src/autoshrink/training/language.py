"""Training loops for word-level language models: the search proxy (§4) and final training (§7).

Both loops read the token stream as parallel columns (``[T, B]``, see
:func:`autoshrink.data.text.batchify`), walk it in BPTT windows carrying the hidden state from
window to window and detaching it in between, and clip the gradient norm.

- :func:`train_proxy_lm` (method §4): plain SGD, lr 20, batch 128, fixed 35-step windows,
  clip 0.25, up to 10 epochs, lr ÷10 after the 7th and the 9th epoch (the method's "epochs 6 and
  8", counted from 0), stop after 4 epochs without a better validation perplexity. A training
  whose loss turns NaN/inf, or whose validation perplexity exceeds ``divergence_factor`` times
  the vocabulary size (10× worse than guessing uniformly), is reported as diverged.
- :func:`train_final_lm` (method §7, DARTS-style): SGD lr 20, batch 64, BPTT lengths drawn
  around 35 with the learning rate scaled by length, weight decay 8e-7, temporal activation
  regularisation, the dropouts of the model, and an optional switch to averaged SGD when the
  validation loss stops improving; the best validation weights give the test perplexity.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.data.text import Corpus, batchify
from autoshrink.errors import ConfigError
from autoshrink.nn.rnn import detach_hidden


class LanguageModel(Protocol):
    """What the loops need of a language model besides ``nn.Module``
    (:class:`~autoshrink.nn.rnn.RNNModel`, :class:`~autoshrink.nn.rnn.LSTMModel`)."""

    ntoken: int

    def init_hidden(self, batch_size: int) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class RNNProxyTraining:
    """The RNN proxy task (defaults: method §4): model size, data cut and training."""

    nhid: int = 100  # = emsize (tied weights)
    train_lines: int | None = 4000
    valid_lines: int | None = 300
    epochs: int = 10
    batch_size: int = 128
    bptt: int = 35
    lr: float = 20.0
    clip: float = 0.25
    weight_decay: float = 0.0
    lr_decay_after: tuple[int, ...] = (7, 9)  # 1-based epochs after which lr ÷ 10
    patience: int = 4
    eval_batch_size: int = 10
    divergence_factor: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_decay_after", tuple(int(e) for e in self.lr_decay_after))
        check_fields(
            "training",
            self,
            {
                ">= 1": ("nhid", "epochs", "batch_size", "bptt", "patience", "eval_batch_size"),
                "finite and > 0": ("lr", "clip", "divergence_factor"),
                "finite and >= 0": ("weight_decay",),
            },
        )


#: The requirements :func:`check_fields` knows, with their tests (NaN fails each).
REQUIREMENTS: dict[str, Callable[[float], bool]] = {
    ">= 1": lambda v: v >= 1,
    ">= 0": lambda v: v >= 0,
    "finite and > 0": lambda v: 0 < v < math.inf,
    "finite and >= 0": lambda v: 0 <= v < math.inf,
}


def check_fields(where: str, settings: object, rules: dict[str, tuple[str, ...]]) -> None:
    """Raise a ConfigError naming the first field of ``settings`` that breaks its rule
    (``{requirement: field names}``, requirements from :data:`REQUIREMENTS`) and its value."""
    for requirement, names in rules.items():
        for name in names:
            value = getattr(settings, name)
            if not REQUIREMENTS[requirement](value):
                raise ConfigError(f"{where}: {name} must be {requirement}, got {value!r}")


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
    tar: float = 0.0,
    after_step: Callable[[], None] | None = None,
) -> float:
    """One pass over ``data [T, B]``; returns the mean training loss (``nan`` on divergence).

    The hidden state is carried across windows and detached before each one. With ``rng``,
    window lengths vary and the learning rate is scaled by ``length / bptt`` (DARTS).
    """
    model.train()
    hidden = cast(LanguageModel, model).init_hidden(data.size(1))
    total, count, i = 0.0, 0, 0
    for n in windows(data.size(0), bptt, rng):
        hidden = detach_hidden(hidden)  # truncated BPTT: no gradient into earlier windows
        out = model(data[i : i + n], hidden)
        targets = data[i + 1 : i + 1 + n]
        loss = F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)), targets.reshape(-1))
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


# --------------------------------------------------------------------------- final training
@dataclass(frozen=True, kw_only=True)
class LMRecipe:
    """The DARTS-style final recipe of method §7 (the model carries the dropouts)."""

    epochs: int = 30  # the paper trains up to 3000
    batch_size: int = 64
    bptt: int = 35
    max_seq_len_delta: int = 20
    lr: float = 20.0
    clip: float = 0.25
    weight_decay: float = 8e-7
    tar: float = 1e-3  # temporal activation regularisation (beta)
    asgd: bool = True  # switch to averaged SGD when validation stops improving
    nonmono: int = 5
    eval_batch_size: int = 10
    test_batch_size: int = 1

    def __post_init__(self) -> None:
        counts = ("epochs", "batch_size", "bptt", "nonmono", "eval_batch_size", "test_batch_size")
        check_fields(
            "training recipe",
            self,
            {
                ">= 1": counts,
                ">= 0": ("max_seq_len_delta",),
                "finite and > 0": ("lr", "clip"),
                "finite and >= 0": ("weight_decay", "tar"),
            },
        )


@dataclass
class FinalLMResult:
    """Best validation perplexity, the test perplexity of those weights, and the history
    (the epoch whose training or validation loss turned NaN/inf, if one did, is its last row)."""

    valid_perplexity: float
    test_perplexity: float
    best_epoch: int
    asgd_epoch: int | None
    diverged_epoch: int | None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        """Whether training stopped at a NaN/inf loss."""
        return self.diverged_epoch is not None


class WeightAverage:
    """Running mean of a model's parameters (averaged SGD with ``t0 = 0``, ``lambd = 0``)."""

    def __init__(self, model: nn.Module) -> None:
        self.params = list(model.parameters())
        self.mean = [p.detach().clone() for p in self.params]
        self.n = 1

    def update(self) -> None:
        self.n += 1
        with torch.no_grad():
            for m, p in zip(self.mean, self.params, strict=True):
                m.add_(p - m, alpha=1.0 / self.n)

    def swap(self) -> None:
        """Exchange the live weights with the averaged ones (call twice to undo)."""
        with torch.no_grad():
            for m, p in zip(self.mean, self.params, strict=True):
                tmp = p.detach().clone()
                p.copy_(m)
                m.copy_(tmp)


def train_final_lm(
    model: nn.Module,
    corpus: Corpus,
    recipe: LMRecipe,
    *,
    seed: int = 0,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FinalLMResult:
    """Train ``model`` on ``corpus.train``; keep the best validation weights; report test.

    On return the model holds the best weights (the averaged ones if they were best). A
    training or validation loss that turns NaN/inf ends the training after that epoch
    (``diverged_epoch``); the best weights so far are kept.
    """
    dev = torch.device(device)
    rng = np.random.default_rng(seed)

    def tensor(ids: np.ndarray, b: int) -> torch.Tensor:
        return torch.from_numpy(batchify(ids, b)).to(dev)

    train = tensor(corpus.train, recipe.batch_size)
    valid = tensor(corpus.valid, recipe.eval_batch_size)
    test = tensor(corpus.test, recipe.test_batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    average: WeightAverage | None = None
    asgd_epoch: int | None = None
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    diverged_epoch: int | None = None
    for epoch in range(1, recipe.epochs + 1):
        step = average.update if average is not None else None
        train_loss = train_epoch(
            model,
            opt,
            train,
            bptt=recipe.bptt,
            clip=recipe.clip,
            rng=rng,
            tar=recipe.tar,
            after_step=step,
        )
        val_loss = math.nan
        if math.isfinite(train_loss):
            if average is not None:
                average.swap()
            val_loss = evaluate_lm(model, valid, recipe.bptt)
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
            if average is not None:
                average.swap()
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_perplexity": math.nan if math.isnan(val_loss) else perplexity(val_loss),
            "averaged": average is not None,
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            diverged_epoch = epoch
            break
        if (
            recipe.asgd
            and average is None
            and len(losses) > recipe.nonmono
            and val_loss > min(losses[: -recipe.nonmono])
        ):
            average, asgd_epoch = WeightAverage(model), epoch
        losses.append(val_loss)
    model.load_state_dict(best_state)
    test_ppl = perplexity(evaluate_lm(model, test, recipe.bptt)) if best_epoch else math.nan
    return FinalLMResult(
        perplexity(best_loss), test_ppl, best_epoch, asgd_epoch, diverged_epoch, history
    )
