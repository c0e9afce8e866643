"""The population of aging (regularized) evolution (Real et al. 2019), shared by its two spaces.

:class:`AgingPopulation` holds the members, picks a parent by a tournament of
``tournament_size`` members drawn with replacement (the best score wins), and lets the oldest
member leave beyond ``population_size``. How random members are drawn and children mutated is
the space's: :class:`~autoshrink.strategies.regularized_evolution.RegularizedEvolution` on
NAS-Bench-201, :class:`~autoshrink.strategies.cell_baselines.CellEvolution` on AutoShrink cells.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

from autoshrink.strategies.base import Observation, require_positive


class AgingPopulation:
    """The members of an aging evolution, oldest first.

    Args:
        size: members kept (the oldest leaves).
        tournament_size: members drawn, with replacement, to pick a parent.

    A tournament larger than the population is refused where a search starts
    (:func:`~autoshrink.strategies.base.check_population`), not here: a cell search made before
    that check must still resume as it was made.
    """

    def __init__(self, size: int, tournament_size: int) -> None:
        require_positive(population_size=size, tournament_size=tournament_size)
        self.size = size
        self.tournament_size = tournament_size
        self.members: deque[Observation] = deque()

    def __len__(self) -> int:
        return len(self.members)

    def parent(self, rng: random.Random) -> Observation:
        """The best-scoring of ``tournament_size`` members drawn with replacement (the first
        drawn wins a tie); the population must not be empty."""
        members = self.members
        sample = [members[rng.randrange(len(members))] for _ in range(self.tournament_size)]
        return max(sample, key=lambda o: o.score)

    def add(self, observations: Iterable[Observation]) -> None:
        """Each observation with a finite score joins; the oldest members leave beyond ``size``."""
        for obs in observations:
            if obs.ok:
                self.members.append(obs)
                if len(self.members) > self.size:
                    self.members.popleft()
