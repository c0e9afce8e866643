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
is bit-equivalent, float64 is never affected. With ``cuda_graph`` the BPTT windows of
:class:`StackedTrainer` and :class:`StackedValidator` are replayed from CUDA graphs: the same
operations on the same buffers, without the per-operation launch cost that bounds a step of
small matmuls.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import numpy as np
import torch

from autoshrink.data.text import batchify
from autoshrink.nn.stacked_rnn import StackedRNNModel
from autoshrink.training.batched import check_compact_below, require_cuda, tf32_matmuls
from autoshrink.training.cuda_graph import GraphedStep
from autoshrink.training.language import LMEarlyStop, LMOutcome, decay_lr, perplexity
from autoshrink.training.proxy_settings import RNNProxyTraining
from autoshrink.training.stacked_windows import EvalWindow, TrainWindow, WindowPass

log = logging.getLogger(__name__)


class _StackedPass:
    """What training and validation passes share: ``model`` and, in fixed buffers on
    ``data``'s device, the candidates' hidden states and loss sums."""

    def __init__(self, model: StackedRNNModel, data: torch.Tensor, cuda_graph: bool) -> None:
        if cuda_graph:
            require_cuda(data.device)
        self.model = model
        self.hidden = model.init_hidden(data.size(1))
        self.loss_sum = torch.zeros(model.k, dtype=torch.float64, device=data.device)

    def _mean_losses(self, windows: WindowPass) -> list[float]:
        """Run ``windows`` from zero hidden states; each candidate's mean loss per target."""
        self.hidden.zero_()
        self.loss_sum.zero_()
        windows.run()
        return (self.loss_sum / windows.targets).tolist()  # waits for the device


class StackedTrainer(_StackedPass):
    """Training epochs of ``model`` on ``data [T, B]``: each candidate's hidden state (zero at
    the start of an epoch, carried and detached between windows), loss sum and finiteness
    live in fixed buffers, so that with ``cuda_graph`` every full-length window is replayed
    from a CUDA graph (captured again when the learning rate changes). A new trainer is
    needed once the model's stacks or the optimizer change."""

    def __init__(
        self,
        model: StackedRNNModel,
        opt: torch.optim.Optimizer,
        data: torch.Tensor,
        *,
        bptt: int,
        clip: float,
        bf16: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(model, data, cuda_graph)
        self.finite = torch.ones(model.k, dtype=torch.bool, device=data.device)

        def step(tokens: torch.Tensor) -> TrainWindow:
            return TrainWindow(model, opt, tokens, self.hidden, self.loss_sum, self.finite,
                               clip=clip, bf16=bf16, graphed=cuda_graph)  # fmt: skip

        self.windows = WindowPass(
            step,
            data,
            bptt,
            capture=(lambda s: GraphedStep(s, model, opt)) if cuda_graph else None,
            key=lambda: [g["lr"] for g in opt.param_groups],
        )

    def epoch(self) -> list[float]:
        """One pass over the data; every candidate's mean training loss (``nan`` for one whose
        loss turned non-finite). Inside the pass nothing waits for the device."""
        self.model.train()
        self.finite.fill_(True)
        out = self._mean_losses(self.windows)
        return [v if ok else math.nan for v, ok in zip(out, self.finite.tolist(), strict=True)]


class StackedValidator(_StackedPass):
    """Mean cross-entropy per token of every candidate of ``model`` on ``data [T, B]`` (eval
    mode), the windows replayed from one CUDA graph with ``cuda_graph``. A new validator is
    needed once the model's stacks change."""

    def __init__(
        self,
        model: StackedRNNModel,
        data: torch.Tensor,
        *,
        bptt: int,
        bf16: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(model, data, cuda_graph)

        def step(tokens: torch.Tensor) -> EvalWindow:
            return EvalWindow(model, tokens, self.hidden, self.loss_sum, bf16=bf16,
                              graphed=cuda_graph)  # fmt: skip

        capture = (lambda s: GraphedStep(s, model, None)) if cuda_graph else None
        self.windows = WindowPass(step, data, bptt, capture=capture)

    def losses(self) -> list[float]:
        """Every candidate's mean loss per token."""
        self.model.eval()
        return self._mean_losses(self.windows)


def train_stacked_lm(
    model: StackedRNNModel,
    train: np.ndarray,
    valid: np.ndarray,
    settings: RNNProxyTraining,
    *,
    device: str = "cpu",
    tf32: bool = False,
    bf16: bool = False,
    cuda_graph: bool = False,
    compact_below: float = 0.5,
) -> Iterator[tuple[int, LMOutcome]]:
    """Train the ``model.k`` candidates on the token ids ``train``; yield ``(k, outcome)`` as
    each one stops. ``model`` (on ``device``) is consumed: stopped candidates are removed from
    it once at most ``compact_below`` (a fraction in (0, 1]) of its stacked candidates still
    train. ``cuda_graph`` (CUDA only) replays every full-length BPTT window of training and
    validation from a CUDA graph (:mod:`autoshrink.training.stacked_windows`), captured
    again after each compaction and learning-rate change; the same arithmetic as without."""
    check_compact_below(compact_below)
    s = settings
    dev = torch.device(device)
    tf32 = tf32 and dev.type == "cuda"
    train_data = torch.from_numpy(batchify(train, s.batch_size)).to(dev)
    valid_data = torch.from_numpy(batchify(valid, s.eval_batch_size)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)

    def passes() -> tuple[StackedTrainer, StackedValidator]:  # for the model's stacks, opt
        return (
            StackedTrainer(model, opt, train_data, bptt=s.bptt, clip=s.clip, bf16=bf16,
                           cuda_graph=cuda_graph),
            StackedValidator(model, valid_data, bptt=s.bptt, bf16=bf16, cuda_graph=cuda_graph),
        )  # fmt: skip

    trainer, validator = passes()
    stacked = list(range(model.k))  # original index of each stacked slice
    training = set(stacked)
    stops = [LMEarlyStop(s, model.ntoken) for _ in stacked]
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        with tf32_matmuls(tf32):
            train_loss = trainer.epoch()
            t1 = time.perf_counter()
            val_loss = validator.losses()
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
            trainer, validator = passes()
