"""The evaluator protocol and the record it returns.

An evaluator has a cheap ``profile`` (cost metrics without training, e.g. MACs and params) and
an ``evaluate`` that trains or looks up a candidate from a given seed. Evaluators are plain,
picklable objects so that executors can ship them to worker processes or Ray tasks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Protocol

from autoshrink.cost.rnn import RNNSpec
from autoshrink.errors import ConfigError
from autoshrink.journal import EVALUATED, STATUSES, record_line
from autoshrink.json_values import finite_or_none
from autoshrink.spaces.macros import MacroSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """What evaluating one candidate gave.

    ``status`` is ``"ok"``, ``"diverged"`` (non-finite loss; scores -inf) or ``"failed"``
    (the evaluation raised; ``detail["error"]`` says why; scores -inf); the search itself
    gives ``"rejected"`` (a hard constraint) and ``"screened"``
    (:data:`~autoshrink.journal.STATUSES`). Another
    status is a :class:`~autoshrink.errors.ConfigError`: a search would take it for a failure.
    """

    metrics: dict[str, float]
    status: str = "ok"
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(
                f"evaluation status {self.status!r}; expected one of {', '.join(STATUSES)}"
            )


class TrainingOutcome(Protocol):
    """What every proxy training reports besides its metric."""

    epochs: int
    diverged: bool
    stop_reason: str


def trained(
    metrics: dict[str, float],
    metric: str,
    value: float,
    outcome: TrainingOutcome,
    started: float,
    **detail: Any,
) -> Evaluation:
    """The evaluation of a training that ran to its end (``"ok"`` or ``"diverged"``).

    ``started`` is the ``time.perf_counter()`` reading taken when the candidate's work began.
    """
    return Evaluation(
        {**metrics, metric: value},
        "diverged" if outcome.diverged else "ok",
        time.perf_counter() - started,
        {"epochs": outcome.epochs, "stop_reason": outcome.stop_reason, **detail},
    )


#: What a candidate's training may raise that fails the candidate, not the search: torch's own
#: errors (its out-of-memory ones among them), a size that does not fit, and a
#: ``MemoryError`` (an allocation that NumPy or Python could not make).
TRAINING_ERRORS = (RuntimeError, ValueError, MemoryError)


def failed(
    metrics: dict[str, float], metric: str, error: Exception, started: float, key: str
) -> Evaluation:
    """The evaluation of a candidate whose training raised: logged, ``metric`` is ``nan``."""
    log.warning("candidate %s failed: %s", key, error)
    return Evaluation(
        {**metrics, metric: math.nan},
        "failed",
        time.perf_counter() - started,
        {"error": f"{type(error).__name__}: {error}"},
    )


class Evaluator(Protocol):
    """What a search asks of a candidate: its costs, and its trained score.

    A candidate that cannot be trained is an :class:`Evaluation` too: ``"failed"`` (see
    :func:`failed`) or ``"diverged"``; it scores ``-inf`` and the search goes on. An exception
    that ``evaluate`` raises is a fault of the evaluator, not of the candidate: it stops the
    search (what the journal holds is kept, and a resume goes on from there).
    """

    def profile(self, genotype: Any) -> dict[str, float]:
        """Cost metrics that need no training (``macs``, ``params``, ...)."""
        ...

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        """Train (or look up) ``genotype`` deterministically from ``seed``."""
        ...


def evaluate(
    evaluator: Evaluator, genotype: Any, seed: int, known: Mapping[str, float] | None = None
) -> Evaluation:
    """``evaluator.evaluate(genotype, seed)``, checked: anything but an :class:`Evaluation`
    is a :class:`TypeError` that names the evaluator, a status of the search's own (not in
    :data:`~autoshrink.journal.EVALUATED`) a :class:`ConfigError` (what every executor
    calls). ``known`` metrics of ``genotype``, measured before (a constraint's check), are
    handed first to an evaluator with a ``reuse_metrics(genotype, metrics)`` method, which
    then does not measure them again (a latency measured in the main process is not measured
    a second time in a pool worker)."""
    if known and hasattr(evaluator, "reuse_metrics"):
        evaluator.reuse_metrics(genotype, known)
    out = evaluator.evaluate(genotype, seed)
    if not isinstance(out, Evaluation):
        raise TypeError(
            f"{type(evaluator).__qualname__}.evaluate returned a {type(out).__qualname__}, not "
            f"an {Evaluation.__module__}.Evaluation"
        )
    if out.status not in EVALUATED:  # "rejected", "screened": the search's own verdicts
        raise ConfigError(
            f"{type(evaluator).__qualname__}.evaluate returned status {out.status!r}; an "
            f"evaluator's is one of {', '.join(EVALUATED)}"
        )
    problem = journal_problem(out)
    if problem is not None:
        raise TypeError(f"{type(evaluator).__qualname__}.evaluate returned {problem}")
    return out


def journal_problem(evaluation: Evaluation) -> str | None:
    """What keeps ``evaluation`` out of a journal record (metrics that are no mapping of names
    to numbers, a ``detail`` that is no JSON as the journal writes it -- a NumPy array, keys
    of mixed types, say -- :func:`~autoshrink.journal.record_line`), or ``None``."""
    metrics, detail = evaluation.metrics, evaluation.detail
    if not isinstance(metrics, Mapping):
        return f"metrics of type {type(metrics).__name__}, not a dict of numbers"
    for name, value in metrics.items():
        number = finite_or_none(value)  # a NumPy or torch scalar as its Python number; NaN: None
        numeric = number is None or (isinstance(number, Real) and not isinstance(number, bool))
        if not (isinstance(name, str) and numeric):
            return f"metric {name!r} = {value!r}: a metric is a number named by a str"
    if not isinstance(detail, Mapping):
        return f"a detail of type {type(detail).__name__}, not a dict"
    try:
        record_line(dict(detail))  # the journal's own encoding: sorted keys, say
    except (TypeError, ValueError) as err:
        return f"a detail that is no JSON ({err})"
    return None


def wrapped(evaluator: object) -> Iterator[object]:
    """``evaluator`` and those it wraps (``inner``: latency costs, one-shot weights), outermost
    first."""
    for _ in range(8):  # a chain of wrappers, never a cycle
        if evaluator is None:
            return
        yield evaluator
        evaluator = getattr(evaluator, "inner", None)


def proxy_network(evaluator: object) -> MacroSpec | RNNSpec | None:
    """The network ``evaluator`` counts and trains its cells in (a CNN macro, or an RNN's
    language model): its ``macro``, or that of the evaluator it wraps; ``None`` for one
    without (a table, a custom one)."""
    for each in wrapped(evaluator):
        macro = getattr(each, "macro", None)
        if isinstance(macro, (MacroSpec, RNNSpec)):
            return macro
    return None


def data_hash(evaluator: object) -> str | None:
    """The ``data_hash`` of ``evaluator`` or of the evaluator it wraps: a digest of the data its
    candidates train on (the RNN proxy's text); ``None`` for one without."""
    for each in wrapped(evaluator):
        digest = getattr(each, "data_hash", None)
        if isinstance(digest, str):
            return digest
    return None
