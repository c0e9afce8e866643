"""Tied weights in safetensors files: each shared tensor stored once, with a map of the ties.

safetensors refuses a state dict whose entries share memory, and an RNN language model's
decoder weight is its embedding. :func:`untie` keeps the first key of every shared tensor and
maps each repeated key to it; :func:`retie` puts the repeated keys back before
``load_state_dict``. The map travels as JSON in a file's metadata (:data:`TIED`; :func:`to_file`
gives a state dict and that entry for :func:`~autoshrink.atomic_write.save_tensors`, which
writes them detached, on the CPU and contiguous) or in a checkpoint's JSON state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch

#: The metadata key (and checkpoint state key) of the map ``{repeated key: key it repeats}``.
TIED = "tied"


def untie(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` with every shared tensor kept under its first key only, and ``{repeated
    key: first key}``. Call it before copying tensors elsewhere (a copy shares nothing)."""
    first: dict[tuple[object, ...], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    ties: dict[str, str] = {}
    for key, value in state.items():
        where = (value.device, value.data_ptr(), value.dtype, tuple(value.shape), value.stride())
        if value.numel() and where in first:  # empty tensors share no data
            ties[key] = first[where]
        else:
            first.setdefault(where, key)
            tensors[key] = value
    return tensors, ties


def retie(tensors: Mapping[str, torch.Tensor], ties: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``tensors`` with every repeated key of ``ties`` back, as the tensor it repeats."""
    return {**tensors, **{key: tensors[same] for key, same in ties.items()}}


def to_file(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` as a safetensors file holds it: each shared tensor once (:func:`untie`), and
    the metadata entry with the map of the ties."""
    tensors, ties = untie(state)
    return tensors, {TIED: json.dumps(ties)}
