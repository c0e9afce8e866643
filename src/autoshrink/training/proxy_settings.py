"""The settings of the search's proxy trainings, apart from their loops so that a config reads
them without torch: :class:`ProxyTraining` (a CNN candidate, method §4),
:class:`RNNProxyTraining` (an RNN candidate, method §4) and :class:`OodSettings` (NAS-OoD's
generator and minimax, ``--objective ood``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoshrink.errors import ConfigError
from autoshrink.ranges import WHOLE, check_fields
from autoshrink.user_files import fields_type_problem


@dataclass(frozen=True, kw_only=True)
class ProxyTraining:
    """Hyper-parameters of a candidate's proxy training (defaults: the paper's)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 4e-3
    weight_decay: float = 1e-5
    patience: int = 5
    min_accuracy: float = 0.2
    min_accuracy_epoch: int = 3
    overfit_ratio: float = 3.0

    def __post_init__(self) -> None:
        if problem := fields_type_problem(self):  # epochs=None got as far as the training loop
            raise ConfigError(f"training: {problem}")
        check_fields(
            "training",
            self,
            {
                ">= 1": ("epochs", "batch_size", "patience"),
                "finite and > 0": ("lr",),
                "finite and >= 0": ("weight_decay",),
            },
        )
        if not math.isfinite(self.min_accuracy):  # JSON holds no NaN: config.json must load back
            raise ConfigError(f"training: min_accuracy must be finite, got {self.min_accuracy}")
        if not 0 < self.overfit_ratio < math.inf:
            raise ConfigError(
                "training: overfit_ratio must be finite and > 0 (a large number turns the "
                f"overfit stop off), got {self.overfit_ratio}"
            )


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
        if problem := fields_type_problem(self):
            raise ConfigError(f"training: {problem}")
        object.__setattr__(self, "lr_decay_after", tuple(self.lr_decay_after))
        check_fields(
            "training",
            self,
            {
                ">= 1": ("nhid", "epochs", "batch_size", "bptt", "patience", "eval_batch_size"),
                "finite and > 0": ("lr", "clip", "divergence_factor"),
                "finite and >= 0": ("weight_decay",),
            },
        )


@dataclass(frozen=True, kw_only=True)
class OodSettings:
    """The generator and minimax settings of ``--objective ood``."""

    synthetic_mix: float = 0.5  # weight of the synthetic accuracy in the scored accuracy
    synthetic_weight: float = 1.0  # weight of the synthetic loss in the candidate's loss
    adversarial: float = 10.0  # gradient-reversal coefficient (generator's ascent strength)
    class_weight: float = 1.0
    cycle_weight: float = 1.0
    code_dim: int = 4  # Z: dimensions of a novel domain's code
    width: int = 16  # generator and keeper channels
    max_shift: float = 1.5  # bound of the generator's residual (normalised pixel units)
    lr: float = 1e-3  # generator and keeper (Adam)

    def __post_init__(self) -> None:
        if problem := fields_type_problem(self):  # "0.5" was a TypeError, True a max_shift of 1
            raise ConfigError(f"ood: {problem}")
        if not 0.0 <= self.synthetic_mix <= 1.0:
            raise ConfigError(f"ood.synthetic_mix must be in [0, 1], got {self.synthetic_mix}")
        weights = ("synthetic_weight", "adversarial", "class_weight", "cycle_weight")
        rules = {
            WHOLE: ("code_dim", "width"),
            "finite and >= 0": weights,
            "finite and > 0": ("max_shift", "lr"),
        }
        check_fields("ood", self, rules)
