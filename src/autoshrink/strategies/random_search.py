"""Random search on NAS-Bench-201: uniform cells, without repeats, one per ask.

The baseline every NAS method must beat. The returned cell is the best-scoring one seen (ties
to fewer non-``none`` edges, :func:`~autoshrink.strategies.base.better`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autoshrink.errors import ConfigError
from autoshrink.spaces.nb201 import NUM_CELLS, NB201Cell
from autoshrink.strategies.base import Observation, Proposal, better


def draw_unseen(rng: random.Random, seen: set[int]) -> NB201Cell | None:
    """A uniform cell whose code is not in ``seen`` (and add it); ``None`` once all are seen."""
    if len(seen) >= NUM_CELLS:
        return None
    while True:
        code = rng.randrange(NUM_CELLS)
        if code not in seen:
            seen.add(code)
            return NB201Cell.from_code(code)


class RandomSearch:
    """Uniform random cells of the topology space, never the same cell twice.

    Args:
        rng: the seeded generator.
        batch_size: cells per ask.
    """

    def __init__(self, *, rng: random.Random, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._rng = rng
        self._seen: set[int] = set()
        self._best: Observation | None = None
        self._pending: list[Proposal] = []
        self.step = 0

    @property
    def best(self) -> Observation | None:
        return self._best

    def ask(self) -> list[Proposal]:
        if not self._pending:
            for _ in range(self.batch_size):
                cell = draw_unseen(self._rng, self._seen)
                if cell is None:
                    break
                self._pending.append(Proposal(cell, self.step))
        return list(self._pending)

    def tell(self, observations: Sequence[Observation]) -> None:
        if [o.proposal for o in observations] != self._pending:
            raise ValueError("tell() must receive the observations of the last ask(), in order")
        self._pending = []
        for obs in observations:
            if better(obs, self._best):
                self._best = obs
        self.step += 1
