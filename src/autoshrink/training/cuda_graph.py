"""One training step captured in a CUDA graph and replayed: no host work per step (GPU only).

The stacked engine's training step is small kernels, hundreds of them; replaying a CUDA graph
launches them all at once, without Python or the dispatcher. :class:`GraphedStep` captures a
:class:`~autoshrink.training.batched.TrainStep` (whose inputs and outputs are fixed buffers)
after a few warm-up runs on a side stream, as CUDA graphs need (lazy allocations, library
handles, the optimizer's state). The warm-up must not change the training, so everything it
touches -- parameters, buffers, optimizer state, the loss sum -- is put back afterwards:
tensors that existed are restored in place (the graph keeps their addresses), optimizer state
the warm-up created is zeroed, which is what Adam's first step starts from. The optimizer must
be created with ``capturable=True``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

WARMUP = 2


class CapturableStep(Protocol):
    """A training step on fixed buffers; ``loss_sum`` is the one it accumulates into."""

    loss_sum: torch.Tensor

    def __call__(self) -> None: ...


def _tensors(model: nn.Module, opt: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
    """Every tensor the step may change, by identity: parameters, buffers, optimizer state."""
    out = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for state in opt.state.values():
        out.update({id(v): v for v in state.values() if torch.is_tensor(v)})
    return out


def warm_up(
    step: CapturableStep, model: nn.Module, opt: torch.optim.Optimizer, runs: int = WARMUP
) -> None:
    """Run ``step`` ``runs`` times, then undo what the runs did to ``model``, ``opt`` and
    ``step.loss_sum``: existing tensors are restored in place (their addresses stay), optimizer
    state the runs created is zeroed -- Adam's initial state. (On a GPU the caller runs this
    on a side stream before capturing.)"""
    before = _tensors(model, opt)
    saved = {key: t.detach().clone() for key, t in before.items()}
    saved_loss = step.loss_sum.clone()
    for _ in range(runs):
        step()
    with torch.no_grad():
        for key, t in _tensors(model, opt).items():
            if key in saved:
                t.copy_(saved[key])
            else:  # optimizer state the warm-up created: back to its initial zeros
                t.zero_()
        step.loss_sum.copy_(saved_loss)


class GraphedStep:
    """``step()`` replayed from a CUDA graph (its ``loss_sum`` restored after the warm-up too)."""

    def __init__(
        self,
        step: CapturableStep,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        *,
        warmup: int = WARMUP,
    ) -> None:
        if not all(g.get("capturable", False) for g in opt.param_groups):
            raise ValueError("a captured optimizer step needs the optimizer's capturable=True")
        self.device = step.loss_sum.device  # the step's GPU (cuda:N), made current for
        with torch.cuda.device(self.device):  # capture and replay
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                warm_up(step, model, opt, warmup)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                step()

    def __call__(self) -> None:
        with torch.cuda.device(self.device):  # replays on that GPU's current stream
            self.graph.replay()
