"""Checks on one batch of a cell search: what the strategy proposed (:func:`check_batch`: the
rules the journal and the reports rely on) and what the evaluation told apart
(:func:`same_quality`, :func:`warn_cost_only`: a step whose candidates reached one accuracy or
perplexity, so that cost alone ranked them)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.journal import record_line
from autoshrink.strategies.base import Observation, Proposal

log = logging.getLogger(__name__)


def check_batch(
    proposals: Sequence[Proposal],
    last_step: int,
    batches: int,
    max_steps: int,
    strategy: str,
    start: Cell,
) -> None:
    """Refuse a batch that breaks what the journal and the reports read of a strategy: one
    step number per batch, greater than the last batch's; step 0 the start cell alone; no cell
    twice in a batch; every cell a sub-DAG of the ``start`` cell (its kind, node ops and
    activation: the space every strategy of the seed searches); no more batches than the
    strategy's ``max_steps`` (a strategy that never ends would fill the journal with
    re-proposals). A :class:`ConfigError` naming the step."""
    typed = _type_problem(proposals)
    if typed is not None:
        raise ConfigError(f"strategy {strategy}: {typed}")
    steps = sorted({p.step for p in proposals})
    keys = [p.genotype.key for p in proposals]
    outside = [
        p.genotype
        for p in proposals
        if (p.genotype.kind, p.genotype.ops, p.genotype.activation)
        != (start.kind, start.ops, start.activation)
        or not set(p.genotype.edges) <= set(start.edges)
    ]
    problem = None
    if outside:
        problem = (
            f"step {proposals[0].step} proposes cell {outside[0].key}, which is no sub-DAG of the "
            "start cell (other node ops, activation or edges): it is outside the search space"
        )
    elif len(steps) > 1:
        problem = f"one batch holds steps {steps}"
    elif steps[0] < 0:
        problem = f"step {steps[0]} is negative: steps count from 0, the start cell's"
    elif steps[0] <= last_step:
        problem = f"step {steps[0]} follows step {last_step}: steps must increase"
    elif steps[0] == 0 and len(proposals) != 1:
        problem = f"step 0 holds {len(proposals)} cells: it is the start cell's, alone"
    elif steps[0] == 0 and proposals[0].genotype.key != start.key:
        problem = (
            f"step 0 proposes cell {proposals[0].genotype.key}, not the start cell "
            f"{start.key}: step 0 is the start cell's"
        )
    elif len(set(keys)) < len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        problem = f"step {steps[0]} proposes cell {twice} twice"
    elif batches > max_steps:
        problem = f"step {steps[0]} is batch {batches}, beyond its max_steps ({max_steps})"
    if problem is not None:
        raise ConfigError(f"strategy {strategy}: {problem}")


def _type_problem(proposals: Sequence[Proposal]) -> str | None:
    """What is of the wrong type in a batch (a genotype that is no :class:`Cell`, a step that
    is no ``int``: the journal holds integers; a ``meta`` that is no dict of JSON, which the
    journal could not write once the candidate had trained), or ``None``."""
    for p in proposals:
        if not isinstance(p.genotype, Cell):
            return f"a proposal's genotype is a {type(p.genotype).__name__}, not a Cell"
        if type(p.step) is not int:
            return f"a proposal's step is {p.step!r} ({type(p.step).__name__}), not an int"
        if not isinstance(p.meta, Mapping):
            return f"a proposal's meta is a {type(p.meta).__name__}, not a dict"
        try:
            record_line(dict(p.meta))  # as the journal writes it
        except (TypeError, ValueError) as err:
            return f"a proposal's meta is no JSON ({err})"
    return None


def warn_cost_only(steps: Sequence[tuple[int, float]], metric: str) -> None:
    """One warning naming the ``steps`` (``(step, metric value)``) whose scored candidates all
    reached one ``metric``, so that cost alone ranked them; nothing when there are none."""
    if steps:
        log.warning(
            "%d step(s) had every scored candidate at one %s (step %d: %g), so cost alone ranked "
            "them: the evaluation does not tell these cells apart (a proxy training too short?) "
            "(steps %s)",
            len(steps), metric, *steps[0], ", ".join(str(step) for step, _ in steps),
        )  # fmt: skip


#: Metric values closer than this (relative) count as one: perplexities of 369.915 to 369.918
#: tell cells apart no better than equal accuracies do.
SAME_QUALITY_RTOL = 1e-4


def same_quality(observations: Sequence[Observation], metric: str) -> float | None:
    """The one ``metric`` value that every scored observation of a batch reached (within
    :data:`SAME_QUALITY_RTOL`), when there are at least two of them (then only their cost told
    them apart); ``None`` otherwise."""
    found = [o.metrics.get(metric) for o in observations if o.ok]
    values = [float(v) for v in found if v is not None]
    if len(values) < 2 or len(values) < len(found):
        return None
    low, high = min(values), max(values)
    return low if math.isclose(low, high, rel_tol=SAME_QUALITY_RTOL) else None
