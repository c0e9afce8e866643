"""What the NAS-Bench-201 strategies share: unseen random cells and ask/tell bookkeeping."""

from __future__ import annotations

import random
from collections.abc import Sequence

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


class AskTellBase:
    """The pending batch of the last ask, and the best observation told so far."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._best: Observation | None = None
        self._pending: list[Proposal] = []
        self.step = 0

    @property
    def best(self) -> Observation | None:
        """The best-scoring observation so far (ties to fewer live edges)."""
        return self._best

    def _accept(self, observations: Sequence[Observation]) -> None:
        """Check that ``observations`` answer the last ask, in order, and update the best."""
        if [o.proposal for o in observations] != self._pending:
            raise ValueError("tell() must receive the observations of the last ask(), in order")
        self._pending = []
        for obs in observations:
            if better(obs, self._best):
                self._best = obs
