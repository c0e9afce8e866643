"""What a weights file of ``autoshrink train``, ``singlepath`` or ``export`` says about itself.

The file's metadata (safetensors keeps a string-to-string header) records the network the
weights are for -- the cell and its macro settings (image size, width, channels, classes), or
the mbconv architecture -- and the input normalisation of its training (per-channel mean and
std of images scaled to [0, 1]; ``null`` in an export of weights that did not say it).
:func:`weights_metadata` writes it; :func:`read_trained_for` reads it back, so ``export`` and
``latency`` need not be told the image size again and an exported bundle can say how to
prepare an image. A file without it (from before, or from elsewhere) reads as ``None``; one
whose ``format`` says it is this metadata but whose entries are malformed, or of another version,
is a one-line :class:`~autoshrink.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoshrink.errors import ConfigError
from autoshrink.ranges import check_value
from autoshrink.user_files import check_schema, parse_json

#: The format of the metadata, and its family: another version of it is refused, not ignored.
FORMAT = "autoshrink.weights/1"
FAMILY = FORMAT.rsplit("/", 1)[0] + "/"


def weights_metadata(
    network: dict[str, Any],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, str]:
    """The metadata of a network's weights: ``network`` (``{"cell": ..., "macro": {"name":
    ..., settings}}`` or ``{"architecture": ...}``) and the normalisation of its inputs
    (``null`` without ``mean`` and ``std``: a random init, or weights from elsewhere)."""
    normalisation = None
    if mean is not None and std is not None:
        normalisation = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return {
        "format": FORMAT,
        "network": json.dumps(network, sort_keys=True),
        "normalisation": json.dumps(normalisation),
    }


@dataclass(frozen=True)
class TrainedFor:
    """What a weights file was trained for: the macro settings of a cell's network (empty for
    an mbconv architecture), the normalisation of its inputs, and the network: ``cell`` (a cell
    JSON object) or ``architecture`` (an mbconv architecture's), the other ``None``."""

    macro: dict[str, Any]
    normalisation: dict[str, list[float]] | None
    cell: dict[str, Any] | None = None
    architecture: dict[str, Any] | None = None


def read_trained_for(path: str | Path) -> TrainedFor | None:
    """The :class:`TrainedFor` in the metadata of the safetensors file ``path``; ``None`` when
    the file says it is not autoshrink's weights (no ``format``, or another program's or another
    autoshrink file's: weights from elsewhere, a checkpoint) or cannot be read (the caller's
    loader names a damaged file). Metadata that says it is (``format`` ``autoshrink.weights/N``)
    but is not what :func:`weights_metadata` writes -- another version, ``network`` or
    ``normalisation`` missing, not JSON, or malformed (:func:`check_normalisation`) -- is a
    one-line :class:`ConfigError` naming ``path`` and the key: read as none, the export lost
    the image size and the normalisation the weights were trained with."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    form = meta.get("format")
    if form is None or not form.startswith(FAMILY):
        return None
    if form != FORMAT:
        raise ConfigError(
            f"{path}: metadata 'format' is {form!r}, a version this autoshrink does not read "
            f"(it reads {FORMAT!r})"
        )
    network = _entry(path, meta, "network")
    check_schema(f"{path}: metadata 'network'", network, _Network, ConfigError)
    if network.get("cell") is None and network.get("architecture") is None:
        raise ConfigError(f"{path}: metadata 'network' names neither a cell nor an architecture")
    normalisation = _entry(path, meta, "normalisation")
    if normalisation is not None:
        normalisation = check_normalisation(f"{path}: metadata 'normalisation'", normalisation)
    macro = network.get("macro") or {}
    return TrainedFor(macro, normalisation, network.get("cell"), network.get("architecture"))


@dataclass(frozen=True)
class _Network:
    """The JSON types of the ``network`` entry (a cell with its macro, or an architecture)."""

    cell: dict[str, Any] | None = None
    macro: dict[str, Any] | None = None
    architecture: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Normalisation:
    """The JSON types of a ``normalisation`` that is not ``null``."""

    mean: list[float]
    std: list[float]


def _entry(path: str | Path, meta: dict[str, str], key: str) -> Any:
    """The JSON value of the metadata entry ``key``; missing or not JSON is a ConfigError."""
    if key not in meta:
        raise ConfigError(f"{path}: metadata {key!r} is missing (format {FORMAT!r} has it)")
    return parse_json(meta[key], f"{path}: metadata {key!r}", ConfigError)


def check_normalisation(source: str, value: Any) -> dict[str, list[float]]:
    """``value`` as a normalisation (``{"mean": [...], "std": [...]}``, floats); anything else
    -- other keys, lists of other lengths, a mean that is not finite, a std that is not > 0
    and finite -- is a one-line :class:`ConfigError` naming ``source``. (That it has as many
    channels as the network's input is the network's caller's to check.)"""
    check_schema(source, value, _Normalisation, ConfigError)
    unknown = sorted(set(value) - {"mean", "std"})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; expected mean and std")
    mean, std = value["mean"], value["std"]
    if len(mean) != len(std) or not mean:
        raise ConfigError(
            f"{source}: mean and std must have one value per channel, got {len(mean)} and "
            f"{len(std)}"
        )
    for i, m in enumerate(mean):
        if not math.isfinite(m):
            raise ConfigError(f'{source}: "mean[{i}]" must be finite, got {m}')
    for i, s in enumerate(std):
        check_value(f'{source}: "std[{i}]"', s, "finite and > 0")
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
