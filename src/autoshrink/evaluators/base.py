"""The evaluator protocol and the record it returns.

An evaluator has a cheap ``profile`` (cost metrics without training, e.g. MACs and params) and
an ``evaluate`` that trains or looks up a candidate from a given seed. Evaluators are plain,
picklable objects so that executors can ship them to worker processes or Ray tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Evaluation:
    """What evaluating one candidate gave.

    ``status`` is ``"ok"``, ``"diverged"`` (non-finite loss; scores -inf) or ``"failed"``
    (the evaluation raised; ``detail["error"]`` says why; scores -inf).
    """

    metrics: dict[str, float]
    status: str = "ok"
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    def profile(self, genotype: Any) -> dict[str, float]:
        """Cost metrics that need no training (``macs``, ``params``, ...)."""
        ...

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        """Train (or look up) ``genotype`` deterministically from ``seed``."""
        ...
