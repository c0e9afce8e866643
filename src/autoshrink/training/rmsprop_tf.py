"""RMSProp as TensorFlow 1's ``tf.train.RMSPropOptimizer`` computes it (the published recipe's).

The ShrinkCNN ImageNet recipe (method §6) comes from TensorFlow's MnasNet/EfficientNet code,
whose RMSProp differs from ``torch.optim.RMSprop`` in three ways that matter at the start of a
training and whenever the learning rate changes:

- the squared-gradient average starts at **1**, not 0 (torch's first step divides by
  ``√(1-α)·|g|`` and so moves every weight by about ``lr/√(1-α)``, 3.2·lr at α = 0.9);
- ε is added **under** the square root: ``g / √(v + ε)``;
- the learning rate is applied **inside** the momentum: ``m ← μ·m + lr·g/√(v + ε)``,
  ``θ ← θ − m``, so a step taken at a small warm-up rate keeps its small size in the momentum
  after the rate grows (torch scales the whole accumulated momentum by the current rate).

Weight decay adds ``wd·θ`` to the gradient first, as an L2 term in the loss does (the
reference code adds ``wd·Σ‖θ‖²/2`` to its loss). The state of a parameter is its
``square_avg`` and, with momentum, its ``momentum_buffer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow 1's update (see the module docstring).

    Args:
        params: parameters or parameter groups, as every ``torch.optim`` optimiser takes them.
        lr: the learning rate (a schedule may change ``param_groups[i]["lr"]`` between steps).
        alpha: the decay of the squared-gradient average (TensorFlow's ``decay``).
        eps: added to the squared-gradient average under the square root.
        momentum: the momentum μ (0: none, and no ``momentum_buffer`` is kept).
        weight_decay: the L2 coefficient added to each gradient as ``wd·θ``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        alpha: float = 0.9,
        eps: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not 0.0 <= lr < math.inf:  # NaN fails every comparison
            raise ValueError(f"lr must be finite and >= 0, got {lr}")
        if not 0.0 <= weight_decay < math.inf:
            raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "momentum": momentum,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; ``closure`` re-evaluates the
        loss first when given (as in ``torch.optim``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update(group)
        return loss

    def _update(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("RMSpropTF does not take sparse gradients")
            state = self.state[p]
            if not state:
                state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
        grads = [p.grad for p in params]
        if group["weight_decay"] != 0:
            grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
        alpha = group["alpha"]
        square_avgs = [self.state[p]["square_avg"] for p in params]
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        roots = torch._foreach_add(square_avgs, group["eps"])
        torch._foreach_sqrt_(roots)
        if group["momentum"] > 0:
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_addcdiv_(buffers, grads, roots, value=group["lr"])
            torch._foreach_sub_(params, buffers)
        else:
            torch._foreach_addcdiv_(params, grads, roots, value=-group["lr"])
