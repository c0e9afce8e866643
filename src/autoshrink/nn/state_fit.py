"""Whether a state dict fits a network, said in a few words (:func:`misfit`), and the first of
its tensors a diverged training left NaN or inf (:func:`non_finite`).

``load_state_dict`` copies every tensor that fits before it fails on one that does not, and
its error runs to many lines: the callers that load weights from a file (an export's
``--weights``, a training's checkpoint) ask :func:`misfit` first, so a state of another
network leaves the model as it was and is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def misfit(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into ``model`` (strictly): the first tensor of
    another shape, else the tensors it lacks, else those the model has no place for (two at
    most); ``None`` when it fits."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        return f"shape of {k} is {list(state[k].shape)}, the network's {list(own[k].shape)}"
    if missing:
        return f"missing {missing[:2]}"
    if extra:
        return f"unexpected {extra[:2]}"
    return None


def non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``state`` that holds NaN or inf values
    (weights of a training that diverged, or a damaged file); ``None`` when there is none."""
    return next(
        (k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())),
        None,
    )


def other_kind(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first tensor of ``state`` (that fits ``model``: :func:`misfit`) that is
    an integer tensor where the model's is floating-point, or the other way round: loading
    would cast it without a word; ``None`` when there is none."""
    own = model.state_dict()
    return next(
        (k for k, v in state.items() if v.is_floating_point() != own[k].is_floating_point()),
        None,
    )
