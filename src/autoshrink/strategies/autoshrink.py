"""AutoShrink: shrink a complete cell one edge at a time (method §2).

Each step the topology shrink space is every single-edge removal from the current cell
(isomorphic results merged); ``k`` of them are sampled uniformly without replacement, and
the best-scoring one becomes the current cell -- removed edges never come back. The search
stops when at most ``round(E0 * keep_fraction)`` edges are left, when nothing is left to
remove, or after ``patience`` steps without a better best score. The result is the best cell
of the whole trajectory (ties to fewer edges), the starting cell included when it is scored.

A step whose candidates all failed to train (``"failed"`` or ``"diverged"``, none with a
finite score) has no winner to shrink from: the search stops there and says so in
:attr:`AutoShrink.stop_reason`. A step whose candidates were all *rejected* by a hard
constraint, or screened out (a cell screened out in an earlier step and proposed again keeps
its verdict), goes on shrinking (smaller cells cost less), from the candidate with fewest
edges; ``patience`` counts only steps after the first cell with a score, so a tight constraint
that the first steps cannot meet does not end the search before it reaches cells that do.

With a ``rank`` callable (zero-cost screening, docs/zero-cost.md) the K candidates of a step
are not drawn: the whole shrink space is scored by ``rank`` and the K highest are taken (ties
and NaN -- ranked last -- keep the shrink-space order); the score is noted in the proposal's
``meta["screen_score"]``. The strategy stays torch-free: the evaluator side supplies ``rank``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nouns import count
from autoshrink.ranges import REQUIREMENTS, WHOLE, is_number
from autoshrink.strategies.base import (
    AskTellBase,
    Observation,
    Proposal,
    preferred,
    require_positive,
    top_k,
)


def stops_at(step: int, statuses: Collection[str], scored: bool) -> bool:
    """Whether the search stops at a step whose candidates have these ``statuses`` (``scored``:
    whether any has a score): after step 0, when none scored and not only a constraint or a
    screen decided them -- it cannot shrink from a failed cell. A step of rejected cells still
    moves on, towards cells that meet the constraint."""
    return step > 0 and not scored and not set(statuses) <= {"rejected", "screened"}


def removal_space(cell: Cell) -> list[tuple[tuple[int, int], Cell]]:
    """Every single-edge removal from ``cell``, one per distinct architecture (the first of
    each key, in edge order): what a step samples its K candidates from.

    Only removals whose :attr:`~autoshrink.graph.Cell.signature` another removal shares
    can share its key, so only theirs are hashed here: a key for every removal took 2.0 s
    a step at 32 nodes and 50 s at 64, where the signatures take a fraction."""
    removals = [(edge, cell.remove_edge(edge)) for edge in cell.edges]
    signatures = [cand.signature for _, cand in removals]
    shared = {sig for sig, n in Counter(signatures).items() if n > 1}
    seen: set[str] = set()
    space = []
    for (edge, cand), sig in zip(removals, signatures, strict=True):
        if sig in shared:
            if cand.key in seen:
                continue
            seen.add(cand.key)
        space.append((edge, cand))
    return space


class AutoShrink(AskTellBase):
    """The AutoShrink strategy over :class:`~autoshrink.graph.Cell` genotypes.

    Args:
        start: the cell to shrink (normally the complete DAG with fixed ops).
        k: candidates per step.
        keep_fraction: stop once ``edges <= round(E0 * keep_fraction)``.
        patience: stop after this many steps without a better best score (``None``: never).
        score_start: evaluate the starting cell first (step 0), as a baseline and candidate.
        rng: the seeded generator that samples candidates.
        rank: scores a list of cells (higher = more promising); when given, each step takes the
            K best-ranked removals of the whole shrink space instead of K uniform draws.
    """

    def __init__(
        self,
        start: Cell,
        *,
        k: int,
        keep_fraction: float,
        rng: random.Random,
        patience: int | None = None,
        score_start: bool = True,
        rank: Callable[[list[Cell]], Sequence[float]] | None = None,
    ) -> None:
        super().__init__(rng)
        if not isinstance(start, Cell):
            raise ConfigError(f"AutoShrink starts from a Cell, got a {type(start).__name__}")
        require_positive(k=k)
        if not (is_number(keep_fraction) and 0.0 <= keep_fraction < 1.0):
            raise ConfigError(f"keep_fraction must be in [0, 1), got {keep_fraction!r}")
        if patience is not None and not REQUIREMENTS[WHOLE](patience):
            raise ConfigError(f"patience must be >= 1 or None, got {patience!r}")
        self.k = k
        self.target_edges = round(start.num_edges * keep_fraction)
        self.patience = patience
        self.current = start
        self.step = 0 if score_start else 1
        self._max_steps = start.num_edges - self.target_edges + (1 - self.step)
        self.stale_steps = 0
        self._rank = rank
        self._stop_reason: str | None = None

    @property
    def stop_reason(self) -> str | None:
        """Why the search stopped before its edge target or patience ran out (``None``: it
        did not): every candidate of a step failed."""
        return self._stop_reason

    @property
    def max_steps(self) -> int:
        """Steps (asks) until the edge target at the latest: one removal each, plus step 0."""
        return self._max_steps

    def describe(self) -> str:
        """The progress bar's text: ``step <n> (<edges> edges)``, the current cell's edges."""
        return f"step {self.step} ({count(self.current.num_edges, 'edge')})"

    @property
    def finished(self) -> bool:
        """Whether the search is over (:attr:`end_reason` says why)."""
        return self.end_reason is not None

    @property
    def end_reason(self) -> str | None:
        """Why the search is over, ``None`` while it goes on (never before step 0):
        :attr:`stop_reason` (every candidate of a step failed), the current cell down to the
        edge target, or ``patience`` steps without a better best score."""
        if self._stop_reason is not None:
            return self._stop_reason
        if self.step == 0:
            return None
        edges = self.current.num_edges
        if edges <= self.target_edges:  # a cell without edges too: the target is >= 0
            wanted = self.target_edges
            return f"reached the edge target: {count(edges, 'edge')}, at most {wanted} wanted"
        if self.patience is not None and self.stale_steps >= self.patience:
            return f"patience: {count(self.stale_steps, 'step')} without a better score"
        return None

    def shrink_space(self) -> list[tuple[tuple[int, int], Cell]]:
        """Every single-edge removal from the current cell (:func:`removal_space`)."""
        return removal_space(self.current)

    def ask(self) -> list[Proposal]:
        """The step's proposals: the starting cell at step 0, then K removals from the current cell
        (drawn, or the best-ranked); the same list again until :meth:`tell`, ``[]`` once
        :attr:`finished`."""
        if self._pending:
            return list(self._pending)
        if self.finished:
            return []
        if self.step == 0:
            self._pending = [Proposal(self.current, 0, {"removed_edge": None})]
        else:
            self._pending = [
                Proposal(cell, self.step, {"removed_edge": list(edge), **note})
                for edge, cell, note in self._pick(self.shrink_space())
            ]
        return list(self._pending)

    def _pick(self, space: list[tuple[tuple[int, int], Cell]]) -> list[tuple[Any, Cell, dict]]:
        """K uniform draws from ``space``, or with ``rank`` its K best-ranked entries."""
        if self._rank is None:
            return [(e, c, {}) for e, c in self._rng.sample(space, min(self.k, len(space)))]
        values = [float(v) for v in self._rank([cell for _, cell in space])]
        picks = top_k(values, self.k)
        return [(space[i][0], space[i][1], {"screen_score": values[i]}) for i in picks]

    def tell(self, observations: Sequence[Observation]) -> None:
        """Take the last :meth:`ask`'s observations, in order: keep the best, and move to the step's
        winner (best score, ties to fewer edges) or stop when every candidate failed."""
        before = None if self._best is None else self._best.score
        self._accept(observations)
        # patience waits for a better score: a tie with fewer edges is a better cell, not that
        improved = self._best is not None and (before is None or self._best.score > before)
        statuses = sorted({o.status for o in observations})
        if stops_at(self.step, statuses, any(o.ok for o in observations)):
            counts = ", ".join(f"{sum(o.status == s for o in observations)} {s}" for s in statuses)
            self._stop_reason = (
                f"every candidate of step {self.step} failed ({counts}); the search cannot "
                "shrink from a failed cell"
                if "ok" not in statuses
                else f"no candidate of step {self.step} has a finite score ({counts}: a metric "
                "or cost the score reads is missing or not finite, or a cost is <= 0); the "
                "search cannot shrink from a cell without a score"
            )
        elif self.step > 0:
            winner = max(observations, key=preferred)  # the first proposed among full ties
            self.current = winner.proposal.genotype
            # patience counts from the first cell with a score: before it (every cell so far
            # rejected by a constraint) the search shrinks towards cells that meet it
            self.stale_steps = 0 if improved or self._best is None else self.stale_steps + 1
        self.step += 1
