"""The efficiency-aware score (method §3): quality against the log of a cost.

``score = slope * (metric - offset) - weight * (log10(cost) - 6)``, higher is better.
CNN default: accuracy (a fraction) against MACs with weight 0.1; RNN default:
``0.25 * (200 - ppl) - (log10(E * nhid^2) - 6)``. A candidate whose metric or cost is missing,
non-finite or non-positive (a diverged training) scores ``-inf`` and can never win.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from autoshrink.errors import ConfigError
from autoshrink.user_files import fields_type_problem

#: The latency cost terms: measured latency, and latency predicted by a table.
LATENCY_COSTS = ("latency_ms", "table_latency_ms")
#: CNN cost terms: counted (macs, params), and the latencies (:data:`LATENCY_COSTS`).
COSTS = ("macs", "params", *LATENCY_COSTS)


@dataclass(frozen=True, kw_only=True)
class Score:
    """An efficiency-aware score over an evaluation's metrics."""

    metric: str = "accuracy"
    slope: float = 1.0
    offset: float = 0.0
    cost: str = "macs"
    weight: float = 0.1

    def __post_init__(self) -> None:
        problem = fields_type_problem(self)  # Score(weight="a") was math's own TypeError
        if problem is not None:
            raise ConfigError(f"score: {problem}")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ConfigError(f"score weight must be finite and >= 0, got {self.weight}")
        for name in ("slope", "offset"):  # else every score is NaN, and nothing can win
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"score {name} must be finite, got {getattr(self, name)}")

    @classmethod
    def cnn(cls, *, weight: float = 0.1, cost: str = "macs") -> Score:
        """``accuracy - weight * (log10(cost) - 6)``."""
        return cls(metric="accuracy", cost=cost, weight=weight)

    @classmethod
    def rnn(cls, *, weight: float = 1.0, cost: str = "edge_cost") -> Score:
        """``0.25 * (200 - perplexity) - weight * (log10(cost) - 6)``; cost ``E * nhid^2``."""
        return cls(metric="perplexity", slope=-0.25, offset=200.0, cost=cost, weight=weight)

    def missing(self, metrics: Mapping[str, float]) -> list[str]:
        """The names this score reads that ``metrics`` lacks (the cost only with a weight)."""
        reads = (self.metric, self.cost) if self.weight else (self.metric,)
        return [name for name in reads if name not in metrics]

    def __call__(self, metrics: Mapping[str, float]) -> float:
        """``slope * (metric - offset) - weight * (log10(cost) - 6)`` of ``metrics``; ``-inf`` when
        the metric or the cost is missing or not finite, or the cost is not positive (with
        ``weight`` 0 the cost is not read)."""
        value = metrics.get(self.metric)
        cost = metrics.get(self.cost) if self.weight else 1.0
        if value is None or cost is None:
            return -math.inf
        value, cost = float(value), float(cost)
        if not (math.isfinite(value) and math.isfinite(cost)) or cost <= 0:
            return -math.inf
        return self.slope * (value - self.offset) - self.weight * (math.log10(cost) - 6.0)
