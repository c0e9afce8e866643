"""Final-training recipes as typed, saved values.

A :class:`Recipe` holds every hyper-parameter of a final training: optimiser, learning rate per
256 images (the rate used is scaled linearly with the *global* batch, summed over all
processes), cosine schedule with linear warm-up, weight decay, label smoothing, weight EMA,
augmentation, precision. Two presets are registered:

- ``shrinkcnn-imagenet``: the ShrinkCNN ImageNet recipe of method §6 -- RMSProp as TensorFlow
  computes it (``rmsprop-tf``: decay 0.9, momentum 0.9, ε 1e-3), lr 0.1 per 256 images,
  cosine over 300 epochs after 10 warm-up epochs, weight EMA 0.999, weight decay 4e-5 (not on
  batch-norm and bias), label smoothing 0.1, random erasing (p = 0.25), standard ImageNet
  augmentation (random-resized crop, scale 0.08-1, flip) at 224 with an 87.5% centre crop for
  evaluation, batch 512.
- ``cifar``: the CIFAR-10-style small-image recipe -- SGD with Nesterov momentum 0.9, lr 0.1
  per 256 images, cosine after 1 warm-up epoch, weight decay 5e-4, random crop after reflect
  padding of size/8 and horizontal flip, batch 128, 200 epochs.

Recipes round-trip through JSON (``autoshrink.recipe/1``); the resolved recipe is saved next to
every training run. No torch in this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autoshrink.atomic_write import write_json
from autoshrink.errors import ConfigError
from autoshrink.user_files import fields_type_problem, json_type_problem, read_json_file

FORMAT = "autoshrink.recipe/1"
OPTIMIZERS = ("sgd", "rmsprop", "rmsprop-tf")
#: Each RMSProp's ε where a recipe gives none: TensorFlow's 1e-3 under the square root for
#: ``rmsprop-tf``, and for torch's ``rmsprop`` (ε added to the root) its square root.
RMSPROP_EPS = MappingProxyType({"rmsprop": 0.0316, "rmsprop-tf": 1e-3})
AUGMENTS = ("imagenet", "crop-flip", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Every hyper-parameter of a final training (see the module docstring for the presets).

    Attributes:
        name: the preset it came from, or a user's label.
        epochs, batch_size: training length and the global batch (all processes together).
        image_size: the square training resolution; ``None`` keeps an in-memory data set's
            own size (folders then default to 224 for ``imagenet`` augmentation, 32 otherwise).
        optimizer: ``sgd`` (momentum, optional Nesterov), ``rmsprop`` (``torch.optim.RMSprop``)
            or ``rmsprop-tf`` (TensorFlow 1's RMSProp, the published recipe's:
            :mod:`autoshrink.training.rmsprop_tf`). ``rmsprop_alpha`` is the squared-gradient
            decay; ``rmsprop_eps`` is added to the root by ``rmsprop`` and under it by
            ``rmsprop-tf`` (``None``: :data:`RMSPROP_EPS`, 0.0316 and 1e-3).
        lr_per_256: the learning rate for a global batch of 256 (scaled linearly).
        warmup_epochs: linear warm-up from ~0, then cosine decay to 0 at the last step (a
            run shorter than its warm-up only warms up).
        decay_norm_and_bias: whether weight decay also applies to batch-norm and bias tensors.
        ema_decay: weight EMA of the parameters and batch-norm statistics (``None``: off);
            with ``ema_warmup`` the decay used at update ``n`` is ``min(d, (1+n)/(10+n))``.
            Evaluation and the saved weights use the EMA when it is on.
        augment: ``imagenet`` (random-resized crop + flip; resize + centre crop to evaluate),
            ``crop-flip`` (random crop after reflect padding ``crop_padding``, default size/8,
            and a flip) or ``none``; ``flip`` turns the horizontal flip off (e.g. digits).
        random_erasing: probability of erasing one random rectangle (noise fill) per image.
        precision: ``auto`` is bf16 autocast on a GPU that has it (fp16 with loss scaling on
            one that does not) and fp32 on the CPU.
    """

    name: str = "custom"
    epochs: int = 200
    batch_size: int = 128
    image_size: int | None = None
    optimizer: str = "sgd"
    lr_per_256: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float | None = None
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    ema_warmup: bool = True
    augment: str = "crop-flip"
    flip: bool = True
    crop_padding: int | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    eval_crop: float = 0.875
    random_erasing: float = 0.0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if problem := fields_type_problem(self):  # an epochs of 1.5 got to training
            raise ConfigError(f"recipe {self.name}: {problem}")
        object.__setattr__(self, "crop_scale", tuple(float(s) for s in self.crop_scale))
        checks = (  # (holds, field, what it must be); NaN fails every comparison
            (self.epochs >= 1, "epochs", "be >= 1"),
            (self.batch_size >= 1, "batch_size", "be >= 1"),
            (self.image_size is None or self.image_size >= 1, "image_size", "be >= 1"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"be one of {list(OPTIMIZERS)}"),
            (0 < self.lr_per_256 < math.inf, "lr_per_256", "be finite and > 0"),
            (0 <= self.momentum < 1, "momentum", "lie in [0, 1)"),
            (0 < self.rmsprop_alpha < 1, "rmsprop_alpha", "lie in (0, 1)"),
            (
                self.rmsprop_eps is None or 0 < self.rmsprop_eps < math.inf,
                "rmsprop_eps",
                "be finite and > 0 or null",
            ),
            (0 <= self.weight_decay < math.inf, "weight_decay", "be finite and >= 0"),
            (0 <= self.warmup_epochs < math.inf, "warmup_epochs", "be finite and >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "lie in [0, 1)"),
            (
                self.ema_decay is None or 0 < self.ema_decay <= 1,
                "ema_decay",
                "lie in (0, 1] or be null",
            ),
            (self.augment in AUGMENTS, "augment", f"be one of {list(AUGMENTS)}"),
            (self.crop_padding is None or self.crop_padding >= 0, "crop_padding", "be >= 0"),
            (
                len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
                "crop_scale",
                "be [low, high] with 0 < low <= high <= 1",
            ),
            (0 < self.eval_crop <= 1, "eval_crop", "lie in (0, 1]"),
            (0 <= self.random_erasing <= 1, "random_erasing", "lie in [0, 1]"),
            (self.precision in PRECISIONS, "precision", f"be one of {list(PRECISIONS)}"),
        )
        for ok, name, requirement in checks:
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f"recipe {self.name}: {name} must {requirement}, got {value!r}")

    def rmsprop_epsilon(self) -> float:
        """The ε of an RMSProp recipe's optimiser: ``rmsprop_eps``, else that optimiser's own
        (:data:`RMSPROP_EPS`)."""
        return RMSPROP_EPS[self.optimizer] if self.rmsprop_eps is None else self.rmsprop_eps

    def lr(self, global_batch: int | None = None) -> float:
        """The peak learning rate for ``global_batch`` images per step (default: the recipe's)."""
        return self.lr_per_256 * (global_batch or self.batch_size) / 256

    def with_overrides(self, **settings: Any) -> Recipe:
        """A copy with the given settings changed, as given: ``ema_decay=None`` turns the EMA
        off, ``image_size=None`` keeps the data's own size."""
        _check_known(settings, f"recipe {self.name}")
        return replace(self, **settings)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON: ``format`` and every setting, as :meth:`from_dict` reads it (tuples
        as lists: a tuple was refused as no list)."""
        return {"format": FORMAT, **json.loads(json.dumps(asdict(self)))}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> Recipe:
        """Read a recipe written by :meth:`to_dict`; unknown keys, and values of the wrong JSON
        type (``null`` only where a setting may be off), are an error."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{source}: not an {FORMAT} recipe (missing 'format': '{FORMAT}')")
        settings = {k: v for k, v in data.items() if k != "format"}
        _check_known(settings, source)
        problem = json_type_problem(cls, settings)
        if problem:
            raise ConfigError(f"{source}: {problem}")
        try:
            return cls().with_overrides(**settings)
        except ConfigError as err:  # a value out of range: say which file holds it
            raise ConfigError(f"{source}: {err}") from None

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """The recipe in the JSON file ``path`` (:meth:`from_dict`); a :class:`ConfigError` naming
        it when it is unreadable or not a recipe."""
        path = Path(path)
        return cls.from_dict(read_json_file(path, ConfigError, "recipe"), str(path))


def _check_known(settings: dict[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` and the keys of ``settings`` that are no
    recipe setting."""
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown recipe settings {unknown}; expected some of {sorted(known)}"
        )


def shrinkcnn_imagenet_recipe() -> Recipe:
    """The ShrinkCNN ImageNet recipe of method §6 (see the module docstring)."""
    return Recipe(
        name="shrinkcnn-imagenet",
        epochs=300,
        batch_size=512,
        image_size=224,
        optimizer="rmsprop-tf",  # rmsprop_eps: its own, TensorFlow's 1e-3 (RMSPROP_EPS)
        lr_per_256=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=4e-5,
        decay_norm_and_bias=False,
        warmup_epochs=10,
        label_smoothing=0.1,
        ema_decay=0.999,
        augment="imagenet",
        random_erasing=0.25,
    )


def cifar_recipe() -> Recipe:
    """The CIFAR-10-style small-image recipe (see the module docstring)."""
    return Recipe(name="cifar")


RECIPES = MappingProxyType({"shrinkcnn-imagenet": shrinkcnn_imagenet_recipe, "cifar": cifar_recipe})


def get_recipe(name_or_path: str | Path, **overrides: Any) -> Recipe:
    """A registered recipe by name, or a recipe JSON file, with ``overrides`` applied."""
    key = str(name_or_path)
    if key in RECIPES:
        recipe = RECIPES[key]()
    elif key.endswith(".json") or Path(key).exists():  # a folder: read_json_file names it
        recipe = Recipe.load(key)
    else:
        raise ConfigError(
            f"unknown recipe {key!r}; expected one of {sorted(RECIPES)} or a recipe .json file"
        )
    return recipe.with_overrides(**overrides)
