"""The RNN proxy training loop for K stacked candidates at once (method §4, as ``train_proxy_lm``).

:func:`train_stacked_lm` trains a :class:`~autoshrink.nn.stacked_rnn.StackedRNNModel` so that
candidate ``k`` follows the trajectory :func:`~autoshrink.training.language.train_proxy_lm`
gives it alone: the same BPTT windows over the same token columns, its own hidden state
carried and detached between windows, plain SGD on its own weight slice (SGD without momentum
is element-wise: one optimizer over stacked weights is K independent ones), its gradient norm
clipped on its own (the norm over its slices only), the learning rate divided after the same
epochs, and its own early stops and divergence (:class:`~autoshrink.training.language.
LMEarlyStop`). The summed loss gives each slice the gradient of its candidate's own loss; no
operation mixes slices. A candidate whose training loss turns non-finite is diverged at the
end of that epoch (alone it would stop at once; its slice, computed on and ignored, cannot
reach the others). Inside an epoch nothing waits for the host. Stopped candidates leave the
stacks once no more than ``compact_below`` of them still train (as the CNN engine,
:func:`autoshrink.training.batched.train_batched`). On CUDA, float32 matmuls may use TF32
tensor cores (``tf32``) and forward passes may run under bfloat16 autocast (``bf16``); neither
is bit-equivalent, float64 is never affected.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from autoshrink.data.text import batchify
from autoshrink.nn.stacked_rnn import StackedRNNModel
from autoshrink.training.batched import check_compact_below, tf32_matmuls
from autoshrink.training.language import (
    LMEarlyStop,
    LMOutcome,
    RNNProxyTraining,
    decay_lr,
    perplexity,
    windows,
)

log = logging.getLogger(__name__)


def _losses(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-candidate cross-entropy of ``logits [K, T, B, V]`` on ``targets [T, B]`` -> ``[K]``."""
    k, v = logits.shape[0], logits.shape[-1]
    flat = logits.reshape(-1, v)
    if flat.dtype == torch.bfloat16:
        flat = flat.float()
    each = F.cross_entropy(flat, targets.reshape(1, -1).expand(k, -1).reshape(-1), reduction="none")
    each = each.view(k, -1)
    return each.mean(1) if reduction == "mean" else each.sum(1)


def clip_per_candidate(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """Scale each candidate's gradient (slice ``k`` of every parameter) to a norm of at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_`` does for one model."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # [K]
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))


def evaluate_stacked(
    model: StackedRNNModel, data: torch.Tensor, bptt: int, *, bf16: bool = False
) -> list[float]:
    """Mean cross-entropy per token of every candidate on ``data [T, B]`` (eval mode)."""
    model.eval()
    hidden = model.init_hidden(data.size(1))
    total = torch.zeros(model.k, dtype=torch.float64, device=data.device)
    count, i = 0, 0
    dev = data.device.type
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
        for n in windows(data.size(0), bptt):
            logits, hidden = model(data[i : i + n], hidden)
            targets = data[i + 1 : i + 1 + n]
            total += _losses(logits, targets, "sum").double()
            count += targets.numel()
            i += n
    return (total / count).tolist()


def train_stacked_epoch(
    model: StackedRNNModel,
    opt: torch.optim.Optimizer,
    data: torch.Tensor,
    *,
    bptt: int,
    clip: float,
    bf16: bool = False,
) -> list[float]:
    """One pass over ``data [T, B]``; every candidate's mean training loss (``nan`` for one
    whose loss turned non-finite)."""
    model.train()
    hidden = model.init_hidden(data.size(1))
    total = torch.zeros(model.k, dtype=torch.float64, device=data.device)
    finite = torch.ones(model.k, dtype=torch.bool, device=data.device)
    params = list(model.parameters())
    count, i = 0, 0
    for n in windows(data.size(0), bptt):
        hidden = hidden.detach()
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, hidden = model(data[i : i + n], hidden)
        targets = data[i + 1 : i + 1 + n]
        losses = _losses(logits, targets, "mean")  # [K]
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # slice k's gradient is that of candidate k's own loss
        clip_per_candidate(params, clip)
        opt.step()
        value = losses.detach().double()
        finite &= torch.isfinite(value)
        total += value * targets.numel()
        count += targets.numel()
        i += n
    out = (total / count).tolist()  # waits for the device
    return [v if ok else math.nan for v, ok in zip(out, finite.tolist(), strict=True)]


def train_stacked_lm(
    model: StackedRNNModel,
    train: np.ndarray,
    valid: np.ndarray,
    settings: RNNProxyTraining,
    *,
    device: str = "cpu",
    tf32: bool = False,
    bf16: bool = False,
    compact_below: float = 0.5,
) -> Iterator[tuple[int, LMOutcome]]:
    """Train the ``model.k`` candidates on the token ids ``train``; yield ``(k, outcome)`` as
    each one stops. ``model`` (on ``device``) is consumed: stopped candidates are removed from
    it once at most ``compact_below`` (a fraction in (0, 1]) of its stacked candidates still
    train."""
    check_compact_below(compact_below)
    s = settings
    dev = torch.device(device)
    tf32 = tf32 and dev.type == "cuda"
    train_data = torch.from_numpy(batchify(train, s.batch_size)).to(dev)
    valid_data = torch.from_numpy(batchify(valid, s.eval_batch_size)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    stacked = list(range(model.k))  # original index of each stacked slice
    training = set(stacked)
    stops = [LMEarlyStop(s, model.ntoken) for _ in stacked]
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        with tf32_matmuls(tf32):
            train_loss = train_stacked_epoch(
                model, opt, train_data, bptt=s.bptt, clip=s.clip, bf16=bf16
            )
            t1 = time.perf_counter()
            val_loss = evaluate_stacked(model, valid_data, s.bptt, bf16=bf16)
        k = len(stacked)
        log.debug(
            "epoch %d, %d stacked candidates (%d training): training %.3f s (%.0f tokens/s), "
            "validation %.3f s",
            epoch, k, len(training), t1 - t0, k * train_data.numel() / (t1 - t0),
            time.perf_counter() - t1,
        )  # fmt: skip
        lr = opt.param_groups[0]["lr"]
        for pos, i in enumerate(stacked):
            if i not in training:
                continue  # stopped earlier, still stacked
            ppl = perplexity(val_loss[pos]) if math.isfinite(train_loss[pos]) else math.nan
            out = stops[i].after_epoch(epoch, train_loss[pos], ppl, lr)
            if out is not None:
                training.discard(i)
                yield i, out
        if not training:
            return
        decay_lr(opt, epoch, s)
        if len(training) < k and len(training) <= compact_below * k:
            keep = [pos for pos, i in enumerate(stacked) if i in training]
            model.select(torch.tensor(keep))
            stacked = [stacked[pos] for pos in keep]
            # SGD without momentum keeps no state: a new optimizer over the kept slices
            opt = torch.optim.SGD(
                model.parameters(), lr=opt.param_groups[0]["lr"], weight_decay=s.weight_decay
            )
