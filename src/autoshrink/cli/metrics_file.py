"""``autoshrink train --json``: :func:`print_metrics` prints the ``metrics.json`` that a cnn and
an rnn training alike write (:func:`~autoshrink.training.train_folder.write_metrics`)."""

from __future__ import annotations

from pathlib import Path

from autoshrink.training.train_folder import METRICS


def print_metrics(out: Path) -> int:
    """``train --json``: print the ``metrics.json`` just written to ``out``; 0."""
    print((out / METRICS).read_text(encoding="utf-8").strip())
    return 0
