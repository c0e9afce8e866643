"""The settings of a Single-Path search (:class:`SearchSettings`, saved as ``settings.json``),
its presets, and the check that a resume runs with the settings the run began with."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from autoshrink.devices import check_threads
from autoshrink.errors import ConfigError, JournalError
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.json_values import as_read_back
from autoshrink.nouns import count
from autoshrink.ranges import check_seed
from autoshrink.settings_diff import differences, first_three
from autoshrink.user_files import fields_type_problem, read_json_file

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """Everything a search depends on (saved as ``settings.json``; a resume must match)."""

    dataset: str = "digits"
    data_dir: str | None = None
    train_images: int | None = None  # seeded training images; None: all but the validation ones
    val_images: int | None = None  # seeded held-out training images; None: a tenth of them
    search_size: int = 32  # the image size the supernet trains at
    deploy_size: int = 224  # the image size the latency is measured and predicted at
    width: float = 1.0
    epochs: int = 8
    warmup_epochs: int = 2  # weights only: no latency term, thresholds frozen
    batch_size: int = 64
    lr_per_256: float = 0.1  # SGD (Nesterov 0.9), scaled to the batch; 1 epoch warm-up, cosine
    weight_decay: float = 4e-5
    flip: bool = True  # random horizontal flips of the training images (off for digits)
    threshold_lr: float = 2e-4  # Adam on the thresholds (per-weight squared-norm units), at
    # the peak of the weights' schedule and decayed with it
    latency_target_ms: float | None = None
    lam: float = 0.5  # λ of the latency term
    calibration_networks: int = 6
    seed: int = 0
    train_threads: int | None = None  # torch threads while training (None: torch's own)
    latency: LatencySettings = field(default_factory=LatencySettings)

    def __post_init__(self) -> None:
        if problem := fields_type_problem(self, skip=("latency",)):  # seed 1.5 got to numpy
            raise ConfigError(f"singlepath: {problem}")
        if not isinstance(self.latency, LatencySettings):
            raise ConfigError(
                f"singlepath: latency must be a LatencySettings, got {self.latency!r}"
            )
        checks = (
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (
                self.warmup_epochs < self.epochs,
                f"the warm-up ({count(self.warmup_epochs, 'epoch')} of weights only) must be "
                f"shorter than the search ({count(self.epochs, 'epoch')}): fewer warmup_epochs "
                "or more epochs",
            ),
            (self.batch_size >= 2, "batch_size must be >= 2 (batch norm needs two images)"),
            (self.search_size >= 32, "search_size must be >= 32 (five stride-2 steps)"),
            (self.deploy_size >= 32, "deploy_size must be >= 32"),
            (
                0 < self.lr_per_256 < math.inf,
                f"lr_per_256 must be finite and > 0, got {self.lr_per_256}",
            ),
            (
                0 < self.threshold_lr < math.inf,
                f"threshold_lr (--threshold-lr) must be finite and > 0, got {self.threshold_lr}",
            ),
            (0 <= self.weight_decay < math.inf, "weight_decay must be finite and >= 0"),
            (0 <= self.lam < math.inf, f"lambda must be finite and >= 0, got {self.lam}"),
            (self.calibration_networks >= 0, "calibration_networks must be >= 0"),
            (
                self.latency_target_ms is None or 0 < self.latency_target_ms < math.inf,
                f"the latency target must be finite and > 0 ms, got {self.latency_target_ms}",
            ),
            (self.train_images is None or self.train_images >= 1, "train_images must be >= 1"),
            (self.val_images is None or self.val_images >= 1, "val_images must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"singlepath: {message}")
        check_seed("singlepath: seed", self.seed)
        if self.train_threads is not None:
            check_threads(self.train_threads, "singlepath: train_threads")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, ``latency`` a dict of its own."""
        return {**asdict(self), "latency": self.latency.to_dict()}


def singlepath_preset(name: str, **overrides: Any) -> SearchSettings:
    """``demo``: a few minutes on two CPU cores (1,000 small images, 6 epochs, quick latency
    measurements); ``paper``: the whole data set, 8 epochs as in Single-Path NAS (2 warm-up),
    the latency settings' full repeat rule. ``overrides`` apply as given, ``None`` included
    (``train_images=None``: all images); ``latency`` is a :class:`LatencySettings`, or a dict
    of the settings to change in the preset's."""
    quick = LatencySettings(min_repeats=10, max_seconds=1.0)
    presets = {
        "demo": SearchSettings(
            train_images=1000,
            val_images=400,
            epochs=6,
            warmup_epochs=2,
            batch_size=32,
            flip=False,  # its data set, digits: a mirrored digit is no digit
            threshold_lr=2e-3,
            latency=quick,
        ),
        "paper": SearchSettings(epochs=8, warmup_epochs=2, batch_size=128),
    }
    if name not in presets:
        raise ConfigError(f"unknown singlepath preset {name!r}; expected one of {sorted(presets)}")
    given = dict(overrides)
    latency = given.get("latency")  # a dict of settings; a LatencySettings is taken whole
    for kind, names, what in (
        (SearchSettings, given, "setting(s)"),
        (LatencySettings, latency if isinstance(latency, dict) else {}, "latency setting(s)"),
    ):
        known = {f.name for f in fields(kind)}
        if unknown := sorted(set(names) - known):
            raise ConfigError(
                f"singlepath preset {name!r}: unknown {what} {unknown}; expected some of "
                f"{sorted(known)}"
            )
    if isinstance(latency, dict):  # keep the preset's repeat rule, take the settings given
        given["latency"] = replace(presets[name].latency, **latency)
    return replace(presets[name], **given)


def check_same_settings(path: Path, s: SearchSettings) -> None:
    """Refuse to resume the run whose ``settings.json`` is ``path`` with other settings than
    ``s``, naming the first that differ; a damaged file is a one-line error naming it."""
    saved = read_json_file(path, JournalError, "settings")
    if not isinstance(saved, dict):
        raise JournalError(f"{path}: not a settings object; start a fresh --out")
    if "train_threads" not in saved:  # written before the settings held the threads
        log.warning("%s does not record the training threads; resuming on the ones given", path)
        saved["train_threads"] = s.train_threads
    if "flip" not in saved:  # flips became a setting with the per-weight norms (5 Dec 2026)
        raise JournalError(
            f"{path}: the run was started before the superkernel's thresholds read per-weight "
            "norms; its learned thresholds are on another scale, so it cannot be resumed: "
            "start a fresh --out"
        )
    changed = differences(saved, as_read_back(s.to_dict()))
    if changed:
        raise JournalError(
            f"{path}: the run was started with other settings ({first_three(changed)}); resume "
            "with the same command line or start a fresh --out"
        )
