"""The ask/tell protocol every search strategy speaks, and the records it exchanges.

A strategy proposes candidates (:meth:`Strategy.ask`) and learns their scores
(:meth:`Strategy.tell`); something else evaluates them. Proposals and observations are frozen
records, so a run can be journalled and replayed: feeding a fresh strategy the same
observations in the same order reproduces the same proposals. :class:`AskTellBase` holds the
bookkeeping the strategies share; :func:`better` is their one rule for the best observation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoshrink.errors import ConfigError
from autoshrink.ranges import WHOLE, check_value


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate: the genotype, the strategy step that made it, and notes."""

    genotype: Any
    step: int
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """An evaluated proposal. ``score`` is higher-is-better; ``-inf`` for a failed candidate."""

    proposal: Proposal
    score: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    status: str = "ok"  # "ok", "diverged", "rejected", "failed"

    @property
    def ok(self) -> bool:
        """Whether the candidate has a finite score (it trained and was not rejected)."""
        return math.isfinite(self.score)


class Strategy(Protocol):
    """Ask/tell: ``ask`` returns the next batch (empty when the search is over)."""

    def ask(self) -> list[Proposal]:
        """The next batch of cells to evaluate; empty when the search is over."""
        ...

    def tell(self, observations: Sequence[Observation]) -> None:
        """The results of the last batch :meth:`ask` gave, one per proposal."""
        ...

    @property
    def best(self) -> Observation | None:
        """The best observation so far (``None`` before any)."""
        ...


class CellStrategy(Strategy, Protocol):
    """A strategy the search loop drives: also says how many steps it may take at most and
    describes its current step (for progress bars)."""

    @property
    def max_steps(self) -> int:
        """The most steps (batches) the strategy may take: a progress bar's total."""
        ...

    def describe(self) -> str:
        """The current step in a few words, for a progress bar."""
        ...

    @property
    def end_reason(self) -> str | None:
        """Why the strategy asks for nothing more, in a few words (``None`` while it goes on)."""
        ...


def preference(score: float, num_edges: int) -> tuple[float, int]:
    """The order every choice of a best cell follows -- a strategy's best and step winner, a
    comparison's incumbent, a report's chosen candidate: the higher score first, ties to fewer
    edges (``max`` over it keeps the first proposed among full ties); a NaN score ranks as
    ``-inf``, last (compared as it is, it won wherever it came first)."""
    return (-math.inf if math.isnan(score) else score, -num_edges)


def preferred(obs: Observation) -> tuple[float, int]:
    """:func:`preference` of an observation, by its genotype's ``num_edges``."""
    return preference(obs.score, obs.proposal.genotype.num_edges)


def better(a: Observation, b: Observation | None) -> bool:
    """Whether ``a`` beats ``b``: a finite score that :func:`preference` puts first. Unequal
    scores decide as the tuples would, before the edges are counted (a tabular bench compares
    hundreds of thousands of times)."""
    if not a.ok:
        return False
    if b is None:
        return True
    if a.score != b.score:
        return a.score > b.score
    return preferred(a) > preferred(b)


def top_k(values: Sequence[float], k: int) -> list[int]:
    """Positions of the ``k`` largest ``values``, best first; NaN ranks last and ties keep
    their order (the zero-cost screen's pick from a ranked shrink space)."""
    key = [-math.inf if math.isnan(v) else v for v in values]
    return sorted(range(len(key)), key=lambda i: -key[i])[:k]


def require_positive(**settings: int) -> None:
    """Raise :class:`ConfigError` naming the first of ``settings`` that is not a whole number
    >= 1."""
    for name, value in settings.items():
        check_value(name, value, WHOLE)


def check_population(population_size: int, tournament_size: int) -> None:
    """Refuse an aging evolution whose tournament (drawn with replacement) is larger than its
    population: it would almost always pick the best member, which the tournament is there to
    avoid (Real et al. 2019 draw S <= P)."""
    require_positive(population_size=population_size, tournament_size=tournament_size)
    if tournament_size > population_size:
        raise ConfigError(
            f"tournament_size ({tournament_size}) must be at most population_size "
            f"({population_size})"
        )


class AskTellBase:
    """Bookkeeping every ask/tell strategy shares: the pending batch of the last ask, the
    step counter, and the best observation told so far."""

    def __init__(self, rng: random.Random) -> None:
        if not isinstance(rng, random.Random):
            raise ConfigError(f"rng must be a random.Random (seeded), got {rng!r}")
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
