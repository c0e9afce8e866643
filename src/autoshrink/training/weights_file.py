"""What a weights file of ``autoshrink train``, ``singlepath`` or ``export`` says about itself.

The file's metadata (safetensors keeps a string-to-string header) records the network the
weights are for -- the cell and its macro settings (image size, width, channels, classes), or
the mbconv architecture -- and the input normalisation of its training (per-channel mean and
std of images scaled to [0, 1]; ``null`` in an export of weights that did not say it).
:func:`weights_metadata` writes it; :func:`read_trained_for` reads it back, so ``export`` and
``latency`` need not be told the image size again and an exported bundle can say how to
prepare an image. A file without it (from before, or from elsewhere) reads as ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "autoshrink.weights/1"


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
    """The :class:`TrainedFor` in the metadata of the safetensors file ``path``, or ``None``
    when it has none or it cannot be read (the caller's loader names a damaged file)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            return None
        network = json.loads(meta["network"])
        normalisation = json.loads(meta["normalisation"])
        macro = network.get("macro") or {}
        cell, architecture = network.get("cell"), network.get("architecture")
        if not all(
            isinstance(x, dict)
            for x in (macro, normalisation or {}, cell or {}, architecture or {})
        ):
            return None
    except (SafetensorError, OSError, ValueError, KeyError, AttributeError):
        return None
    return TrainedFor(macro, normalisation, cell, architecture)
