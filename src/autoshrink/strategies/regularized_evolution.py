"""Regularized (aging) evolution on NAS-Bench-201 (Real et al. 2019; the NATS-Bench setting).

The first ``population_size`` proposals are uniform random cells. After that, each proposal is
a child: ``tournament_size`` members are drawn from the population (with replacement), the
best-scoring one is the parent, and the child is the parent with one uniformly chosen edge set
to a different op (uniform over the other four). Each evaluated child joins the population
and the oldest member leaves. NATS-Bench: population 10, tournament 3. The returned cell is
the best-scoring one of the whole history.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autoshrink.spaces.nb201 import NUM_EDGES, OPS, NB201Cell
from autoshrink.strategies.aging import AgingPopulation
from autoshrink.strategies.base import AskTellBase, Observation, Proposal, check_population
from autoshrink.strategies.nb201_common import draw_unseen


def mutate(cell: NB201Cell, rng: random.Random) -> tuple[int, str, NB201Cell]:
    """One uniformly chosen edge set to a different op: ``(edge, op, child)``."""
    edge = rng.randrange(NUM_EDGES)
    op = rng.choice([o for o in OPS if o != cell.ops[edge]])
    return edge, op, cell.with_op(edge, op)


class RegularizedEvolution(AskTellBase):
    """Aging evolution with tournament selection; one proposal per ask.

    Args:
        rng: the seeded generator.
        population_size: members kept (the oldest leaves).
        tournament_size: members drawn, with replacement, to pick a parent.
    """

    def __init__(
        self, *, rng: random.Random, population_size: int = 10, tournament_size: int = 3
    ) -> None:
        check_population(population_size, tournament_size)
        self.population = AgingPopulation(population_size, tournament_size)
        super().__init__(rng)
        self._seen: set[int] = set()

    def ask(self) -> list[Proposal]:
        """One proposal: an unseen random cell for the first ``population_size`` steps (or while no
        member scored), then the child of a tournament winner (:func:`mutate`); the same list again
        until :meth:`tell`."""
        if self._pending:
            return list(self._pending)
        if self.step < self.population.size or not self.population:
            cell = draw_unseen(self._rng, self._seen)
            if cell is None:
                return []
            self._pending = [Proposal(cell, self.step, {"parent": None})]
        else:
            parent = self.population.parent(self._rng)
            edge, op, child = mutate(parent.proposal.genotype, self._rng)
            meta = {"parent": parent.proposal.genotype.key, "edge": edge, "op": op}
            self._pending = [Proposal(child, self.step, meta)]
        return list(self._pending)

    def tell(self, observations: Sequence[Observation]) -> None:
        """Take the observation; one with a finite score joins the population, the oldest member
        leaving beyond ``population_size``."""
        self._accept(observations)
        self.population.add(observations)
        self.step += len(observations)
