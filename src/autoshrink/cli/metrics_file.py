"""The ``metrics.json`` that ``autoshrink train`` writes for a cnn and an rnn cell alike:
:func:`write_metrics` writes it as strict JSON, :func:`print_metrics` prints it for ``--json``,
and :func:`ended_metrics` keeps the one of a training that had ended before its ``--resume``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_json
from autoshrink.errors import TrainingError
from autoshrink.user_files import read_json_file

METRICS = "metrics.json"
WEIGHTS = "weights.safetensors"  # written before the metrics

log = logging.getLogger(__name__)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """Write ``out/metrics.json`` as strict JSON: NaN and inf become ``null``."""
    write_json(out / METRICS, metrics)


def print_metrics(out: Path) -> int:
    """``train --json``: print the ``metrics.json`` just written to ``out``; 0."""
    print((out / METRICS).read_text(encoding="utf-8").strip())
    return 0


def ended_metrics(
    out: Path, resumed: bool, resumed_from: int, epochs: int
) -> dict[str, Any] | None:
    """The ``metrics.json`` in ``out`` of a training that had ended before this ``--resume``
    (``resumed_from`` its last of ``epochs``: nothing trained now), kept as it was, since it
    says how the training ran (its processes, its resumes); ``None`` otherwise -- also when
    the file is not that training's end (an earlier attempt's that diverged, a kill before
    the end's files were written): the end is then written again."""
    if not (resumed and resumed_from == epochs and (out / METRICS).is_file()):
        return None
    metrics = read_json_file(out / METRICS, TrainingError, "metrics")
    ended = (
        isinstance(metrics, dict)
        and metrics.get("diverged") is False
        and len(metrics.get("history") or ()) == epochs
        and (out / WEIGHTS).is_file()
    )
    if not ended:
        return None
    log.info("%s: the training had ended; %s is kept as it was", out, METRICS)
    kept: dict[str, Any] = metrics
    return kept
