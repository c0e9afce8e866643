"""Passes of a stacked language model over BPTT windows, as steps on fixed buffers.

A window step (:class:`TrainWindow`, :class:`EvalWindow`) reads the window's tokens from one
fixed buffer ``tokens [n + 1, B]`` (the inputs, and shifted by one the targets) and the
candidates' hidden states from ``hidden [K, B, nhid]``; it writes the new hidden states back
and adds each candidate's summed loss into ``loss_sum [K]``. Nothing it touches is allocated
per call and nothing waits for the host, so on CUDA
:class:`~autoshrink.training.cuda_graph.GraphedStep` can capture the full-length window once
and replay it for every window of a pass: the ShrinkRNN step is hundreds of small operations
per time step, bound by launch overhead rather than arithmetic. :class:`WindowPass` runs a
pass over ``data [T, B]``: each window's tokens copied into its buffer, the full-length step
replayed from its graph when one is asked for, a shorter last window eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch.nn import functional as F

from autoshrink.nn.stacked_rnn import StackedRNNModel
from autoshrink.training.batched import bf16_autocast
from autoshrink.training.language import windows


class WindowStep(Protocol):
    """A step reading its window from the fixed buffer ``tokens``; ``state``: the tensors
    besides the model and optimizer it writes."""

    tokens: torch.Tensor

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        """The tensors the step writes besides the model and optimizer."""
        ...

    def __call__(self) -> None:
        """Run the step on the window now in ``tokens``."""
        ...


def window_losses(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
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


class TrainWindow:
    """One SGD step of every candidate on the window in ``tokens``: forward from ``hidden``,
    the mean loss of each candidate (summed, so slice ``k`` gets candidate ``k``'s own
    gradient), per-candidate clipping, the optimizer step; then ``hidden`` holds the new
    (detached) states, ``loss_sum`` gains each loss times the window's targets and ``finite``
    turns false for a candidate whose loss is not finite."""

    def __init__(
        self,
        model: StackedRNNModel,
        opt: torch.optim.Optimizer,
        tokens: torch.Tensor,
        hidden: torch.Tensor,
        loss_sum: torch.Tensor,
        finite: torch.Tensor,
        *,
        clip: float,
        bf16: bool = False,
        graphed: bool = False,
    ) -> None:
        self.model, self.opt, self.tokens = model, opt, tokens
        self.hidden, self.loss_sum, self.finite = hidden, loss_sum, finite
        self.params = list(model.parameters())
        self.clip, self.bf16, self.graphed = clip, bf16, graphed

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        """What it writes besides model and optimizer: ``hidden``, ``loss_sum`` and ``finite``."""
        return self.hidden, self.loss_sum, self.finite

    def __call__(self) -> None:
        """One SGD step of every candidate on the window in ``tokens``: ``hidden`` then holds the
        new states, ``loss_sum`` gains each mean loss times the targets, ``finite`` turns false
        for a loss that is not finite."""
        inputs, targets = self.tokens[:-1], self.tokens[1:]
        with bf16_autocast(self.tokens.device, self.bf16, cache=not self.graphed):
            logits, hidden = self.model(inputs, self.hidden)
        losses = window_losses(logits, targets, "mean")  # [K]
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_per_candidate(self.params, self.clip)
        self.opt.step()
        value = losses.detach().double()
        self.finite &= torch.isfinite(value)
        self.loss_sum += value * targets.numel()
        self.hidden.copy_(hidden.detach())


class EvalWindow:
    """The summed loss of every candidate on the window in ``tokens`` (no gradients), added
    into ``loss_sum``; ``hidden`` carries the states to the next window."""

    def __init__(
        self,
        model: StackedRNNModel,
        tokens: torch.Tensor,
        hidden: torch.Tensor,
        loss_sum: torch.Tensor,
        *,
        bf16: bool = False,
        graphed: bool = False,
    ) -> None:
        self.model, self.tokens, self.hidden, self.loss_sum = model, tokens, hidden, loss_sum
        self.bf16, self.graphed = bf16, graphed

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        """What the step writes besides the model: ``hidden`` and ``loss_sum``."""
        return self.hidden, self.loss_sum

    def __call__(self) -> None:
        """Add every candidate's summed loss on the window in ``tokens`` to ``loss_sum`` (no
        gradients) and keep the new states in ``hidden`` for the next window."""
        with torch.no_grad():
            with bf16_autocast(self.tokens.device, self.bf16, cache=not self.graphed):
                logits, hidden = self.model(self.tokens[:-1], self.hidden)
            self.loss_sum += window_losses(logits, self.tokens[1:], "sum").double()
            self.hidden.copy_(hidden)


class WindowPass:
    """A step run over every BPTT window of ``data [T, B]``.

    ``make_step(tokens)`` builds the step that reads the fixed buffer ``tokens``; the pass
    builds one per window length (the full ``bptt`` and a shorter last one). With ``capture``
    (a step -> its replay; CUDA graphs) the longest step is captured on first use and replayed
    after, and captured again whenever ``key()`` -- what a capture bakes in beyond the
    buffers, such as the learning rate -- has changed; other lengths run eagerly.
    """

    def __init__(
        self,
        make_step: Callable[[torch.Tensor], WindowStep],
        data: torch.Tensor,
        bptt: int,
        *,
        capture: Callable[[WindowStep], Callable[[], None]] | None = None,
        key: Callable[[], object] = lambda: None,
    ) -> None:
        self.data = data
        self.spans: list[tuple[int, int]] = []
        start = 0
        for n in windows(data.size(0), bptt):
            self.spans.append((start, n))
            start += n
        self.targets = sum(n for _, n in self.spans) * data.size(1)
        self.steps = {
            n: make_step(data.new_zeros(n + 1, data.size(1))) for n in {n for _, n in self.spans}
        }
        self.longest = max(self.steps, default=0)
        self.capture, self.key = capture, key
        self._replay: Callable[[], None] | None = None
        self._replay_key: object = None

    def run(self) -> None:
        """One pass over every window, in order."""
        for start, n in self.spans:
            step = self.steps[n]
            step.tokens.copy_(self.data[start : start + n + 1])
            if self.capture is None or n != self.longest:
                step()
                continue
            if self._replay is None or self._replay_key != self.key():
                self._replay = None  # the old graph's memory goes before the new capture
                self._replay, self._replay_key = self.capture(step), self.key()
            self._replay()
