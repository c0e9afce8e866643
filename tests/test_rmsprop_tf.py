"""TensorFlow 1's RMSProp (``rmsprop-tf``, the published ShrinkCNN recipe's optimiser): its
updates against TensorFlow's formulas computed here in NumPy, the first step by hand, the
recipes that choose it, a checkpoint round trip that continues bit for bit, and a training."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoshrink.data.loaders import array_data
from autoshrink.errors import ConfigError
from autoshrink.training.checkpoint import (
    check_optimizer_state,
    flatten_optimizer,
    load_latest,
    save_checkpoint,
    unflatten_optimizer,
)
from autoshrink.training.final import train_final
from autoshrink.training.optim import build_optimizer
from autoshrink.training.recipes import get_recipe
from autoshrink.training.rmsprop_tf import RMSpropTF


def tf_rmsprop(theta, grads_of, lrs, alpha, eps, momentum, wd):
    """TensorFlow 1's ``ApplyRMSProp`` in NumPy, float64: ``ms`` starts at 1; per step
    ``g += wd·θ``, ``ms = α·ms + (1−α)·g²``, ``mom = μ·mom + lr·g/√(ms + ε)``, ``θ −= mom``."""
    theta = np.array(theta, dtype=np.float64)
    ms, mom = np.ones_like(theta), np.zeros_like(theta)
    for lr in lrs:
        g = grads_of(theta) + wd * theta
        ms = alpha * ms + (1 - alpha) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        theta = theta - mom
    return theta


def quartic_grad(theta: np.ndarray) -> np.ndarray:
    """The gradient of ``Σ θ⁴/4 + Σ θ`` (so every step's gradient differs)."""
    return theta**3 + 1.0


def test_updates_follow_tensorflows_formulas_with_a_changing_rate() -> None:
    start = [0.5, -1.5, 2.0, 0.0]
    lrs = [0.01, 0.05, 0.2, 0.2, 0.1, 0.02]  # a warm-up then a decay: lr inside the momentum
    for momentum, wd in ((0.9, 0.0), (0.9, 4e-2), (0.0, 1e-2)):
        theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        opt = RMSpropTF([theta], lr=lrs[0], alpha=0.9, eps=1e-3, momentum=momentum,
                        weight_decay=wd)  # fmt: skip
        for lr in lrs:
            opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            ((theta**4).sum() / 4 + theta.sum()).backward()
            opt.step()
        want = tf_rmsprop(start, quartic_grad, lrs, 0.9, 1e-3, momentum, wd)
        np.testing.assert_allclose(theta.detach().numpy(), want, rtol=1e-13, atol=1e-15)
        assert ("momentum_buffer" in opt.state[theta]) is (momentum > 0)


def test_the_first_step_by_hand_and_against_torchs_rmsprop() -> None:
    """θ = 1, g = 2, lr 0.1, α 0.9, ε 1e-3: ms = 0.9 + 0.1·4 = 1.3, the step 0.2/√1.301;
    torch's RMSprop (ms from 0, ε 0.0316 on the root) steps 0.2/(√0.4 + 0.0316)."""
    steps = {}
    for name, make in (
        ("tf", lambda p: RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9)),
        ("torch", lambda p: torch.optim.RMSprop([p], lr=0.1, alpha=0.9, eps=0.0316, momentum=0.9)),
    ):
        theta = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        opt = make(theta)
        (2 * theta).sum().backward()
        opt.step()
        steps[name] = 1.0 - theta.item()
    assert steps["tf"] == pytest.approx(0.2 / math.sqrt(1.301), rel=1e-14)  # 0.17534
    assert steps["torch"] == pytest.approx(0.2 / (math.sqrt(0.4) + 0.0316), rel=1e-14)  # 0.30115


def test_parameters_without_a_gradient_are_left_alone() -> None:
    used, unused = nn.Linear(2, 1), nn.Linear(2, 1)
    before = [p.detach().clone() for p in unused.parameters()]
    opt = RMSpropTF([*used.parameters(), *unused.parameters()], lr=0.1, momentum=0.9)
    used(torch.ones(3, 2)).sum().backward()
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(unused.parameters(), before, strict=True))
    assert len(opt.state) == 2  # the used layer's weight and bias


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"lr": -0.1}, "lr must be finite and >= 0, got -0.1"),
        ({"lr": float("nan")}, "lr must be finite and >= 0, got nan"),
        ({"weight_decay": -1.0}, "weight_decay must be finite and >= 0, got -1.0"),
        ({"alpha": 1.0}, "alpha must lie in (0, 1), got 1.0"),
        ({"eps": 0.0}, "eps must be > 0, got 0.0"),
        ({"eps": float("nan")}, "eps must be > 0, got nan"),
        ({"momentum": 1.0}, "momentum must lie in [0, 1), got 1.0"),
    ],
)
def test_bad_settings_are_named(settings: dict, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        RMSpropTF(nn.Linear(2, 1).parameters(), **{"lr": 0.1, **settings})


def test_recipes_choose_each_rmsprop_and_its_epsilon() -> None:
    model = nn.Linear(2, 2)
    published = build_optimizer(model, get_recipe("shrinkcnn-imagenet"), 512)
    assert isinstance(published, RMSpropTF) and get_recipe("shrinkcnn-imagenet").rmsprop_eps is None
    assert (published.defaults["eps"], published.defaults["alpha"]) == (1e-3, 0.9)
    assert published.defaults["momentum"] == 0.9 and published.param_groups[0]["lr"] == 0.2
    torchs = build_optimizer(model, get_recipe("shrinkcnn-imagenet", optimizer="rmsprop"), 512)
    assert type(torchs) is torch.optim.RMSprop and torchs.defaults["eps"] == 0.0316  # its own
    cases = (  # (optimizer, rmsprop_eps, class, eps used)
        ("rmsprop-tf", None, RMSpropTF, 1e-3),
        ("rmsprop", None, torch.optim.RMSprop, 0.0316),
        ("rmsprop", 1e-8, torch.optim.RMSprop, 1e-8),
        ("rmsprop-tf", 1e-2, RMSpropTF, 1e-2),
    )
    for optimizer, eps, cls, used in cases:
        recipe = get_recipe("cifar", optimizer=optimizer, rmsprop_eps=eps)
        opt = build_optimizer(model, recipe, 256)
        assert type(opt) is cls and opt.defaults["eps"] == used
    with pytest.raises(ConfigError, match="rmsprop_eps must be finite and > 0 or null, got 0"):
        get_recipe("cifar", optimizer="rmsprop-tf", rmsprop_eps=0)


def test_a_checkpoint_round_trip_continues_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16, 2)

    def steps(model: nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    def optimiser(model: nn.Module) -> RMSpropTF:
        return RMSpropTF(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)

    whole = nn.Linear(3, 2)
    half = nn.Linear(3, 2)
    half.load_state_dict(whole.state_dict())
    opt = optimiser(whole)
    steps(whole, opt, 6)
    first = optimiser(half)
    steps(half, first, 3)
    tensors, rest = flatten_optimizer(first.state_dict(), "optim")
    model_tensors = {f"model.{k}": v for k, v in half.state_dict().items()}
    save_checkpoint(tmp_path, 1, {**model_tensors, **tensors}, {"optimizer": rest})
    ckpt = load_latest(tmp_path)
    resumed = nn.Linear(3, 2)
    resumed.load_state_dict({k[6:]: v for k, v in ckpt.tensors.items() if k.startswith("model.")})
    again = optimiser(resumed)
    state = unflatten_optimizer(ckpt.tensors, ckpt.state["optimizer"], "optim")
    check_optimizer_state(again, state, "optim", stepped=True)
    assert sorted(state["state"][0]) == ["momentum_buffer", "square_avg"]
    again.load_state_dict(state)
    steps(resumed, again, 3)
    for a, b in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_final_training_learns_with_it(tmp_path: Path) -> None:
    from test_training import Tiny, toy_data

    # ms starts at 1 and these gradients are small: steps of about lr·g, so a larger rate
    recipe = get_recipe("cifar", optimizer="rmsprop-tf", epochs=4, batch_size=16,
                        lr_per_256=3.2, flip=False, weight_decay=4e-5)  # fmt: skip
    data = array_data(toy_data(), recipe)
    torch.manual_seed(0)
    result = train_final(Tiny(), data, recipe, out=tmp_path)
    losses = [row["train_loss"] for row in result.history]
    assert losses == sorted(losses, reverse=True) and result.test_accuracy > 0.8
    saved = load_latest(tmp_path / "checkpoints").tensors
    assert {"optim.0.square_avg", "optim.0.momentum_buffer"} <= set(saved)
