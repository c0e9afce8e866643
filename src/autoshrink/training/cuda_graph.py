"""One step captured in a CUDA graph and replayed: no host work per step (GPU only).

The stacked engines' steps are small kernels, hundreds of them; replaying a CUDA graph
launches them all at once, without Python or the dispatcher. :class:`GraphedStep` captures a
step whose inputs and outputs are fixed buffers (the CNN engine's
:class:`~autoshrink.training.batched.TrainStep`, the stacked RNN's BPTT windows in
:mod:`autoshrink.training.stacked_windows`) after a few warm-up runs on a side stream, as CUDA
graphs need (lazy allocations, library handles, the optimizer's state). The warm-up must not
change the training, so everything it touches -- parameters, buffers, optimizer state, the
step's own ``state`` (loss sums, hidden states) -- is put back afterwards: tensors that existed
are restored in place (the graph keeps their addresses), optimizer state the warm-up created
is zeroed, which is what Adam's first step starts from. An optimizer that has a
``capturable`` option (Adam) must be created with it on; plain SGD has none and keeps no
state, but a capture bakes its learning rate in.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

WARMUP = 2


class CapturableStep(Protocol):
    """A step on fixed buffers; ``state``: the tensors besides the model's and the
    optimizer's that it writes (the first one's device is the step's)."""

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        """The tensors the step writes besides the model's and the optimizer's."""
        ...

    def __call__(self) -> None:
        """Run the step once, on its fixed buffers."""
        ...


def _tensors(model: nn.Module, opt: torch.optim.Optimizer | None) -> dict[int, torch.Tensor]:
    """Every tensor the step may change, by identity: parameters, buffers, optimizer state."""
    out = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for state in opt.state.values() if opt is not None else ():
        out.update({id(v): v for v in state.values() if torch.is_tensor(v)})
    return out


def warm_up(
    step: CapturableStep,
    model: nn.Module,
    opt: torch.optim.Optimizer | None,
    runs: int = WARMUP,
) -> None:
    """Run ``step`` ``runs`` times, then undo what the runs did to ``model``, ``opt`` (None: a
    step without one) and ``step.state``: existing tensors are restored in place (their
    addresses stay), optimizer state the runs created is zeroed -- Adam's initial state. (On a
    GPU the caller runs this on a side stream before capturing.)"""
    before = _tensors(model, opt)
    saved = {key: t.detach().clone() for key, t in before.items()}
    saved_state = [t.clone() for t in step.state]
    for _ in range(runs):
        step()
    with torch.no_grad():
        for key, t in _tensors(model, opt).items():
            if key in saved:
                t.copy_(saved[key])
            else:  # optimizer state the warm-up created: back to its initial zeros
                t.zero_()
        for t, value in zip(step.state, saved_state, strict=True):
            t.copy_(value)


class GraphedStep:
    """``step()`` replayed from a CUDA graph (its ``state`` restored after the warm-up too);
    ``opt``: the optimizer the step updates, None for a step without one."""

    def __init__(
        self,
        step: CapturableStep,
        model: nn.Module,
        opt: torch.optim.Optimizer | None,
        *,
        warmup: int = WARMUP,
    ) -> None:
        if opt is not None and not all(g.get("capturable", True) for g in opt.param_groups):
            raise ValueError("a captured optimizer step needs the optimizer's capturable=True")
        self.device = step.state[0].device  # the step's GPU (cuda:N), made current for
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
        """Replay the captured step on its GPU's current stream."""
        with torch.cuda.device(self.device):  # replays on that GPU's current stream
            self.graph.replay()
