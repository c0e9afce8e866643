"""The found network's files in a Single-Path run folder, ``architecture.json`` and
``weights.safetensors``: written at the end of a search (:func:`save_found`), and by a resume
of the ended search written again where they are gone or damaged (:func:`restore_found`),
from the checkpoint of the last epoch, which holds the supernet they are derived from."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from autoshrink.atomic_write import save_tensors
from autoshrink.cost.mobilenetv2 import MobileNetV2Spec
from autoshrink.errors import ConfigError, JournalError
from autoshrink.nn.state_fit import misfit, non_finite
from autoshrink.singlepath.data import load_search_data
from autoshrink.singlepath.result import ARCH, WEIGHTS
from autoshrink.singlepath.settings import SearchSettings
from autoshrink.singlepath.space import MBConvArch, build_arch
from autoshrink.singlepath.superkernel import SuperNet
from autoshrink.singlepath.supernet_training import supernet_state
from autoshrink.training.checkpoint import CHECKPOINTS, load_latest, restoring
from autoshrink.training.weights_file import read_trained_for, weights_metadata

log = logging.getLogger(__name__)


def save_found(
    out: Path, s: SearchSettings, net: SuperNet, mean: Sequence[float], std: Sequence[float]
) -> MBConvArch:
    """Write the network of ``net``'s decisions at the deployment size (``architecture.json``)
    and its weights (``weights.safetensors``, with the inputs' normalisation ``mean`` and
    ``std``); the architecture."""
    arch = net.derive().with_settings(image_size=s.deploy_size)
    arch.save(out / ARCH)
    _save_weights(out, net, arch, mean, std)
    return arch


def _save_weights(
    out: Path, net: SuperNet, arch: MBConvArch, mean: Sequence[float], std: Sequence[float]
) -> None:
    meta = weights_metadata({"architecture": arch.to_dict()}, mean, std)
    save_tensors(out / WEIGHTS, net.derived_network().eval().state_dict(), meta)


def restore_found(out: Path, s: SearchSettings, summary: dict[str, Any]) -> None:
    """Write the found network's files of the ended search in ``out`` (its ``result.json``
    ``summary``) again where they are gone or do not hold its network; a
    :class:`JournalError` when the checkpoint of the last epoch is gone too."""
    normalisation = summary.get("normalisation")
    arch = _found_arch(out / ARCH, s, summary)
    if arch is None:
        lost = ARCH
    elif not _weights_fit(out / WEIGHTS, arch, normalisation):
        lost = WEIGHTS
    else:
        return
    net, mean, std = _last_supernet(out, s, lost)
    found = net.derive().with_settings(image_size=s.deploy_size)
    if found != arch:
        found.save(out / ARCH)
        log.warning("%s did not hold the found network: written again from the checkpoint", ARCH)
    if not _weights_fit(out / WEIGHTS, found, normalisation):
        _save_weights(out, net, found, mean, std)
        log.warning("%s did not hold the found weights: written again from the checkpoint", WEIGHTS)


def _found_arch(path: Path, s: SearchSettings, summary: dict[str, Any]) -> MBConvArch | None:
    """The architecture in ``path`` when it is the one ``summary`` found, else ``None``."""
    try:
        arch = MBConvArch.load(path)
    except ConfigError:
        return None
    same = list(arch.layers) == summary["layers"] and arch.width == s.width
    return arch if same and arch.image_size == summary["deploy_size"] else None


def _weights_fit(path: Path, arch: MBConvArch, normalisation: Any) -> bool:
    """Whether ``path`` holds finite weights of ``arch`` that say so, and the inputs'
    ``normalisation`` (where ``result.json`` records it)."""
    try:
        trained = read_trained_for(path)
        state = load_file(str(path))
    except (ConfigError, SafetensorError, OSError, ValueError):
        return False
    if trained is None or trained.architecture != arch.to_dict():
        return False
    if normalisation is not None and trained.normalisation != normalisation:
        return False
    return misfit(build_arch(arch), state) is None and non_finite(state) is None


def _last_supernet(
    out: Path, s: SearchSettings, lost: str
) -> tuple[SuperNet, tuple[float, ...], tuple[float, ...]]:
    """The supernet of the checkpoint of the last epoch, and the normalisation of the search's
    inputs; a :class:`JournalError` naming the ``lost`` file when that checkpoint is gone."""
    ckpt = load_latest(out / CHECKPOINTS)
    if ckpt is None or ckpt.epoch != s.epochs:
        raise JournalError(
            f"{out}: {lost} is gone or damaged, and the checkpoint of the last epoch "
            f"({s.epochs}) it is written from is gone: it cannot be rebuilt without training "
            "again; start a fresh --out"
        )
    data = load_search_data(s)
    net = SuperNet(
        MobileNetV2Spec(
            width=s.width,
            image_size=s.search_size,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
        )
    )
    with restoring(ckpt, out / CHECKPOINTS):
        net.load_state_dict(supernet_state(net, ckpt.tensors))
    return net, data.mean, data.std
