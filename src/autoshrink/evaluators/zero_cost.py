"""Zero-cost ranking of CNN cells: the evaluator-side half of ``--screening zero-cost``.

A :class:`ZeroCostRanker` scores cells with a zero-cost proxy (:mod:`autoshrink.zero_cost`)
on the same proxy network the search trains, at initialisation, on one fixed batch of the
proxy training images (``zc_batch`` images drawn from the run seed). Each cell's weights are
initialised from its candidate seed (run seed + cell key), so a cell's value does not depend
on the order it is scored in, and a resumed search ranks -- and proposes -- exactly as before.
The ranker is the ``rank`` callable the torch-free :class:`~autoshrink.strategies.autoshrink.
AutoShrink` strategy takes; it counts the cells it scored and the seconds it spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from autoshrink.data.images import ProxySplit
from autoshrink.devices import own_generators, torch_threads
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.macros import MacroSpec
from autoshrink.zero_cost import proxy


class ZeroCostRanker:
    """``ranker(cells) -> proxy values`` (higher = more promising)."""

    def __init__(
        self,
        name: str,
        macro: MacroSpec,
        batch_x: torch.Tensor,
        batch_y: torch.Tensor,
        seed_of: Callable[[str], int],
        *,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.name = name
        self._proxy = proxy(name)
        self.macro = macro
        self.batch_x, self.batch_y = batch_x.to(device), batch_y.to(device)
        self.seed_of = seed_of
        self.device = device
        self.threads = threads  # torch threads while scoring (None: torch's own), as a candidate's
        self.cells_scored = 0
        self.seconds = 0.0

    def __call__(self, cells: list[Cell]) -> list[float]:
        """The proxy value of each of ``cells`` on the fixed batch, its network initialised from
        its candidate seed; adds to ``cells_scored`` and ``seconds``."""
        t0 = time.perf_counter()
        values = []
        with torch_threads(self.threads), own_generators(self.device):
            for cell in cells:
                torch.manual_seed(self.seed_of(cell.key))
                net = build_network(cell, self.macro).to(self.device)
                values.append(float(self._proxy(net, self.batch_x, self.batch_y)))
        self.cells_scored += len(cells)
        self.seconds += time.perf_counter() - t0
        return values

    def summary(self) -> dict[str, float | int | str]:
        """What the ranker did this session (for ``result.json``)."""
        return {
            "proxy": self.name,
            "cells_scored": self.cells_scored,
            "seconds": round(self.seconds, 3),
        }


def screening_batch(split: ProxySplit, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` proxy training images and labels drawn without replacement from ``seed``
    (all of them when there are fewer): ``(B, C, H, W)`` float32, ``(B,)`` int64."""
    n = len(split.train_y)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    return torch.from_numpy(split.train_x[idx]), torch.from_numpy(split.train_y[idx])
