"""What the reports call a metric: one place for the words and units of every field name.

The files keep their field names (``macs``, ``edge_cost``, ``predicted_ms``: candidates.csv,
result.json); headings, axes, table headers and summaries show :func:`label` of them.
"""

from __future__ import annotations

from types import MappingProxyType

#: Display labels of the metric and result field names the reports show.
LABELS = MappingProxyType(
    {
        "accuracy": "accuracy",
        "val_accuracy": "validation accuracy",
        "synthetic_accuracy": "synthetic-domain accuracy",
        "perplexity": "perplexity",
        "macs": "MACs",
        "params": "params",
        "edges": "edges",
        "edge_cost": "edge cost (E·nhid²)",
        "latency_ms": "latency (ms)",
        "table_latency_ms": "table latency (ms)",
        "predicted_ms": "predicted latency (ms)",
        "measured_ms": "measured latency (ms)",
        "blended_ms": "blended latency (ms)",
        "latency_target_ms": "latency target (ms)",
        "relative_error": "relative error",
        "train_loss": "train loss",
        "search_seconds": "search time (s)",
        "images_trained": "images trained",
    }
)


def label(name: str | None, default: str = "cost") -> str:
    """The display label of the field ``name`` (``macs``: ``MACs``); an unknown name as
    written, with ``_`` as spaces; ``default`` for none."""
    if not name:
        return default
    return LABELS.get(name, name.replace("_", " "))
