"""The optimiser, learning-rate schedule and weight EMA of a final training.

- :func:`build_optimizer`: SGD (momentum, Nesterov), torch's RMSProp or TensorFlow's
  (:class:`~autoshrink.training.rmsprop_tf.RMSpropTF`) from a recipe, the learning rate
  scaled to the global batch; weight decay on conv/linear weights, and on batch-norm and bias
  tensors only when the recipe says so.
- :class:`WarmupCosine`: a per-step schedule, linear warm-up to the peak then cosine to zero;
  its whole state is the step count.
- :class:`ModelEMA`: an exponential moving average of a model's parameters and batch-norm
  statistics, the weights evaluation and the saved model use.
"""

from __future__ import annotations

import copy
import json
import math

import torch
from torch import nn

from autoshrink.training.checkpoint import DamagedState
from autoshrink.training.recipes import Recipe
from autoshrink.training.rmsprop_tf import RMSpropTF


def build_optimizer(model: nn.Module, recipe: Recipe, global_batch: int) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``model``'s parameters at ``recipe.lr(global_batch)``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 or recipe.decay_norm_and_bias else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    lr = recipe.lr(global_batch)
    if recipe.optimizer in ("rmsprop", "rmsprop-tf"):
        rmsprop = RMSpropTF if recipe.optimizer == "rmsprop-tf" else torch.optim.RMSprop
        return rmsprop(
            groups,
            lr=lr,
            alpha=recipe.rmsprop_alpha,
            eps=recipe.rmsprop_epsilon(),
            momentum=recipe.momentum,
        )
    return torch.optim.SGD(
        groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0
    )


def warmup_cosine(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (from 0): ``peak · (step+1)/warmup_steps`` in the
    warm-up, then ``peak · ½(1 + cos(π · progress))`` down to 0 at ``total_steps`` (and after)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimiser's learning rate for each step: ``peak · (s+1)/warmup`` during the
    warm-up, then ``peak · ½(1 + cos(π · progress))`` down to 0 at ``total_steps``."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, peak: float, warmup_steps: int, total_steps: int
    ) -> None:
        self.optimizer = optimizer
        self.peak = peak
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(max(0, warmup_steps), self.total_steps)
        self.steps = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (from 0): :func:`warmup_cosine`."""
        return warmup_cosine(step, self.peak, self.warmup_steps, self.total_steps)

    def _apply(self) -> None:
        lr = self.lr_at(self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """Advance one optimiser step and set the next step's rate."""
        self.steps += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        """The schedule's whole state: ``{"steps": <steps taken>}``."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the step count :meth:`state_dict` returned, and set its learning rate; a
        count that is not an integer >= 0 (a damaged checkpoint) is a :class:`DamagedState`."""
        steps = state["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise DamagedState(f"schedule.steps must be an integer >= 0, got {json.dumps(steps)}")
        self.steps = steps
        self._apply()


class ModelEMA:
    """``ema ← d·ema + (1−d)·model`` after every step, over parameters and float buffers
    (integer buffers are copied); ``d = min(decay, (1+n)/(10+n))`` at update ``n`` when
    ``warmup`` is on, so early averages are not dominated by the random initialisation."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        """The decay of the next update: ``decay``, or with ``warmup`` ``min(decay, (1+n)/(10+n))``
        after ``n`` updates."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state by :meth:`current_decay` (integer
        buffers copied) and count the update."""
        d = self.current_decay()
        self.updates += 1
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            new = source[name].detach()
            if value.is_floating_point():
                value.lerp_(new.to(value.dtype), 1.0 - d)
            else:
                value.copy_(new)
