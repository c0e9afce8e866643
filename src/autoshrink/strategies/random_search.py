"""Random search on NAS-Bench-201: uniform cells, without repeats, one per ask.

The baseline every NAS method must beat. The returned cell is the best-scoring one seen (ties
to fewer non-``none`` edges, :func:`~autoshrink.strategies.base.better`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autoshrink.strategies.base import AskTellBase, Observation, Proposal, require_positive
from autoshrink.strategies.nb201_common import draw_unseen


class RandomSearch(AskTellBase):
    """Uniform random cells of the topology space, never the same cell twice.

    Args:
        rng: the seeded generator.
        batch_size: cells per ask.
    """

    def __init__(self, *, rng: random.Random, batch_size: int = 1) -> None:
        require_positive(batch_size=batch_size)
        super().__init__(rng)
        self.batch_size = batch_size
        self._seen: set[int] = set()

    def ask(self) -> list[Proposal]:
        """``batch_size`` uniform cells never proposed before (fewer when the space runs out, ``[]``
        at the end); the same list again until :meth:`tell`."""
        if not self._pending:
            for _ in range(self.batch_size):
                cell = draw_unseen(self._rng, self._seen)
                if cell is None:
                    break
                self._pending.append(Proposal(cell, self.step))
        return list(self._pending)

    def tell(self, observations: Sequence[Observation]) -> None:
        """Take the last :meth:`ask`'s observations (the best is kept) and go to the next step."""
        self._accept(observations)
        self.step += 1
