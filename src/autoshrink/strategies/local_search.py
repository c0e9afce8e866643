"""Local search on NAS-Bench-201: first-improvement hill climbing with random restarts.

Start from a uniform random cell; evaluate its 24 one-op-change neighbours in a random order
(skipping cells already evaluated) and move to the first one that scores higher; a cell none
of whose neighbours is better is a local optimum, and the search restarts from a fresh random
cell. (White et al., "Local search is state of the art for neural architecture search
benchmarks", 2020, found this simple method hard to beat on NAS-Bench-201.) With
``first_improvement=False`` all neighbours are evaluated before moving to the best one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autoshrink.spaces.nb201 import NB201Cell
from autoshrink.strategies.base import AskTellBase, Observation, Proposal
from autoshrink.strategies.nb201_common import draw_unseen


class LocalSearch(AskTellBase):
    """Hill climbing over single-edge op changes, restarting at local optima.

    Args:
        rng: the seeded generator.
        first_improvement: move at the first better neighbour (``True``) or after all (``False``).
    """

    def __init__(self, *, rng: random.Random, first_improvement: bool = True) -> None:
        super().__init__(rng)
        self.first_improvement = first_improvement
        self._seen: set[int] = set()
        self.current: Observation | None = None
        self._queue: list[NB201Cell] = []
        self._round_best: Observation | None = None
        self.restarts = 0

    def _neighbours(self, cell: NB201Cell) -> list[NB201Cell]:
        out = [n for _, _, n in cell.neighbors() if n.code not in self._seen]
        self._rng.shuffle(out)
        return out

    def _next_cell(self) -> NB201Cell | None:
        while self.current is not None and not self._queue:
            # every neighbour evaluated: move to the best one if it is better, else restart
            rb = self._round_best
            self._round_best = None
            if rb is not None and rb.score > self.current.score:
                self.current = rb
                self._queue = self._neighbours(rb.proposal.genotype)
            else:
                self.current = None
                self.restarts += 1
        if self.current is None:
            return draw_unseen(self._rng, self._seen)
        cell = self._queue.pop()
        self._seen.add(cell.code)
        return cell

    def ask(self) -> list[Proposal]:
        """One cell: a random unseen one at a (re)start, else the next unevaluated neighbour (after
        moving or restarting when none is left); the same list again until :meth:`tell`, ``[]``
        when every cell was evaluated."""
        if not self._pending:
            cell = self._next_cell()
            if cell is not None:
                start = self.current is None
                self._pending = [Proposal(cell, self.step, {"restart": start})]
        return list(self._pending)

    def tell(self, observations: Sequence[Observation]) -> None:
        """Take the observation: a start with a score becomes the current cell; a better neighbour
        does at once with ``first_improvement``, else the round's best neighbour is kept for
        when all are evaluated."""
        self._accept(observations)
        for obs in observations:
            if self.current is None:
                if obs.ok:
                    self.current = obs
                    self._queue = self._neighbours(obs.proposal.genotype)
            elif self.first_improvement and obs.score > self.current.score:
                self.current, self._round_best = obs, None
                self._queue = self._neighbours(obs.proposal.genotype)
            elif self._round_best is None or obs.score > self._round_best.score:
                self._round_best = obs
            self.step += 1
