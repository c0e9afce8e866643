"""The ``metrics.json`` that ``autoshrink train`` writes for a cnn and an rnn cell alike:
:func:`write_metrics` writes it as strict JSON, :func:`print_metrics` prints it for ``--json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_json

METRICS = "metrics.json"


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """Write ``out/metrics.json`` as strict JSON: NaN and inf become ``null``."""
    write_json(out / METRICS, metrics)


def print_metrics(out: Path) -> int:
    """``train --json``: print the ``metrics.json`` just written to ``out``; 0."""
    print((out / METRICS).read_text(encoding="utf-8").strip())
    return 0
