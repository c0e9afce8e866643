"""The images of a Single-Path search: seeded, disjoint training and validation draws from a
data set's training split, normalised and scaled to the search size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from autoshrink.data.images import channel_stats, load_images, normalise
from autoshrink.errors import DataError
from autoshrink.singlepath.settings import SearchSettings


@dataclass(frozen=True)
class SearchData:
    """Normalised tensors at the search size, and the per-channel ``mean`` and ``std`` (of the
    training images scaled to [0, 1]) they were normalised with."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_search_data(s: SearchSettings) -> SearchData:
    """The training and validation images of a single-path search, both drawn with ``s.seed``
    from the data set's training split, disjoint (sizes:
    :class:`~autoshrink.singlepath.settings.SearchSettings`); its test split is never read."""
    data = load_images(s.dataset, s.data_dir)  # the test split of every run: never read here
    order = np.random.default_rng(s.seed).permutation(len(data.train_y))
    n_val = s.val_images if s.val_images is not None else max(1, len(order) // 10)
    if n_val >= len(order):
        raise DataError(
            f"{data.name}: {len(order)} training images leave none to train on after "
            f"{n_val} validation images; lower --val-images"
        )
    val, rest = order[:n_val], order[n_val:]
    if s.train_images is not None and s.train_images > len(rest):  # it trained on fewer, unsaid
        raise DataError(
            f"{data.name}: {len(rest)} training images are left after {n_val} validation "
            f"images, fewer than --train-images {s.train_images}; lower it"
        )
    train = rest if s.train_images is None else rest[: s.train_images]
    tx, ty = data.train_x[train], data.train_y[train]
    vx, vy = data.train_x[val], data.train_y[val]
    mean, std = channel_stats(tx)

    def tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(normalise(x, mean, std))
        if t.shape[-1] != s.search_size:
            t = F.interpolate(t, size=(s.search_size, s.search_size), mode="bilinear")
        return t.contiguous()

    return SearchData(
        tensor(tx),
        torch.from_numpy(ty).long(),
        tensor(vx),
        torch.from_numpy(vy).long(),
        int(tx.shape[1]),
        len(data.classes),
        tuple(float(m) for m in mean),
        tuple(float(d) for d in std),
    )
