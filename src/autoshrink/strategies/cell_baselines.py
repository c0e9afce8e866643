"""Baselines on the AutoShrink cell space: random search and regularized evolution.

Both explore the same space as :class:`~autoshrink.strategies.autoshrink.AutoShrink`: every
sub-DAG of the start cell (the complete DAG with the run's fixed node ops) with at least
``min_edges`` edges (the search passes AutoShrink's edge target), under the same
score, evaluator and journal, with a budget of ``budget`` candidates asked in batches of
``batch_size`` (so an executor trains a batch in parallel, as it trains AutoShrink's K
candidates of a step). Neither proposes an architecture twice (canonical keys).

- :class:`RandomCellSearch`: random sub-DAGs of uniformly drawn size
  (:func:`~autoshrink.spaces.cells.random_subcell`).
- :class:`CellEvolution`: aging evolution (Real et al. 2019). The first ``population_size``
  candidates are random sub-DAGs; then each child is the winner of a tournament of
  ``tournament_size`` members (drawn with replacement) with one edge flipped
  (:func:`~autoshrink.spaces.cells.flip_edge`). Finished children join the population and the
  oldest member leaves.

The result is the best-scoring candidate of the run (ties to fewer edges).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nouns import count
from autoshrink.spaces.cells import flip_edge, random_subcell
from autoshrink.strategies.aging import AgingPopulation
from autoshrink.strategies.base import AskTellBase, Observation, Proposal, require_positive

#: Draws tried for a new, unseen architecture before the space counts as exhausted.
MAX_DRAWS = 1000


class _CellBaseline(AskTellBase):
    """Budget, batches and the set of architectures already proposed."""

    def __init__(
        self,
        start: Cell,
        *,
        budget: int,
        batch_size: int,
        rng: random.Random,
        min_edges: int = 1,
    ) -> None:
        require_positive(budget=budget, batch_size=batch_size, min_edges=min_edges)
        super().__init__(rng)
        self.start = start
        self.min_edges = min_edges
        self.budget = budget
        self.batch_size = batch_size
        self.proposed = 0
        self.step = 1  # no step 0: the start cell is not evaluated on its own
        self._seen: set[str] = set()
        self._exhausted = False

    @property
    def max_steps(self) -> int:
        """Batches the budget allows."""
        return math.ceil(self.budget / self.batch_size)

    def describe(self) -> str:
        return f"step {self.step} ({self.proposed}/{self.budget} candidates)"

    @property
    def end_reason(self) -> str | None:
        """Why the search is over (``None`` while it goes on): the budget spent, or no unseen
        cell found."""
        if self.proposed >= self.budget and not self._pending:
            return f"the budget of {count(self.budget, 'candidate')} is spent"
        if self._exhausted and not self._pending:
            return f"no unseen cell found after {count(self.proposed, 'candidate')}"
        return None

    def _draw(self, make: Callable[[], Cell]) -> Cell | None:
        """A cell from ``make()`` not proposed before (``None`` after :data:`MAX_DRAWS` tries)."""
        for _ in range(MAX_DRAWS):
            cell = make()
            if cell.key not in self._seen:
                self._seen.add(cell.key)
                return cell
        return None

    def _random(self) -> Proposal | None:
        """An unseen random sub-DAG; when none turns up, the space counts as exhausted."""
        cell = self._draw(lambda: random_subcell(self.start, self._rng, self.min_edges))
        if cell is None:
            self._exhausted = True
            return None
        return Proposal(cell, self.step, {"origin": "random"})

    def _propose(self) -> Proposal | None:
        return self._random()

    def ask(self) -> list[Proposal]:
        if self._pending:
            return list(self._pending)
        room = min(self.batch_size, self.budget - self.proposed)
        while len(self._pending) < room and not self._exhausted:
            proposal = self._propose()
            if proposal is not None:
                self._pending.append(proposal)
        self.proposed += len(self._pending)
        return list(self._pending)

    def tell(self, observations: Sequence[Observation]) -> None:
        self._accept(observations)
        self.step += 1


class RandomCellSearch(_CellBaseline):
    """Random sub-DAGs of ``start``, never the same architecture twice."""


class CellEvolution(_CellBaseline):
    """Aging evolution over sub-DAGs of ``start`` (see the module docstring).

    Args:
        population_size: members kept (the oldest leaves); also the number of random starts.
        tournament_size: members drawn, with replacement, to pick a parent.
    """

    def __init__(
        self,
        start: Cell,
        *,
        budget: int,
        batch_size: int,
        rng: random.Random,
        min_edges: int = 1,
        population_size: int = 10,
        tournament_size: int = 3,
    ) -> None:
        self.population = AgingPopulation(population_size, tournament_size)
        super().__init__(start, budget=budget, batch_size=batch_size, rng=rng, min_edges=min_edges)

    def _propose(self) -> Proposal | None:
        if self.proposed + len(self._pending) < self.population.size or not self.population:
            return self._random()
        genotype = self.population.parent(self._rng).proposal.genotype
        flipped: list[tuple[int, int]] = []

        def child() -> Cell:
            try:
                edge, cell = flip_edge(genotype, self.start, self._rng, self.min_edges)
            except ConfigError:  # nothing to flip: the parent itself, seen, so draw on
                return genotype
            flipped[:] = [edge]
            return cell

        cell = self._draw(child)
        if cell is None:  # every child of this parent was seen: a random cell instead
            return self._random()
        meta = {"origin": "mutation", "parent": genotype.key,
                "flipped_edge": list(flipped[0])}  # fmt: skip
        return Proposal(cell, self.step, meta)

    def tell(self, observations: Sequence[Observation]) -> None:
        """Take the last batch's observations; each with a finite score joins the population, the
        oldest member leaving beyond ``population_size``."""
        super().tell(observations)
        self.population.add(observations)
