"""autoshrink: topology-aware neural architecture search (AutoShrink, AAAI 2020).

A cell is a DAG whose nodes are operations; the search starts from the complete DAG and removes
one edge at a time, keeping the best of K single-edge removals under an efficiency-aware score.
The command line is ``autoshrink``. From Python, the package names what a search needs:

- :class:`Cell` (:mod:`autoshrink.graph`), the cells searched;
- :func:`preset`, :class:`SearchConfig` and :class:`Score`, what a search is;
- :func:`run_search`, which runs or resumes one in a run folder, and :func:`read_run`, which
  reads a run folder back (its trajectory, during the search or after it);
- :class:`Evaluation`, what a custom evaluator returns;
- the errors, all :class:`AutoshrinkError`: bad input is mostly a :class:`ConfigError`, a bad
  cell a :class:`CellError`, a data set's a :class:`DataError`, a run folder that cannot
  resume a :class:`JournalError`, a benchmark table's a :class:`BenchmarkError`, a latency
  backend's a :class:`HardwareError`, a diverged final training a :class:`TrainingError`;
  :class:`SearchInterrupted` (a ``KeyboardInterrupt``) says how to resume a stopped search;
- ``__version__``, the package's version.

The strategies live in :mod:`autoshrink.strategies`, the evaluators in
:mod:`autoshrink.evaluators`. Names that import torch are loaded on first use, so that
``import autoshrink`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoshrink.errors import (
    AutoshrinkError,
    BenchmarkError,
    CellError,
    ConfigError,
    DataError,
    HardwareError,
    JournalError,
    TrainingError,
)
from autoshrink.graph import Cell
from autoshrink.stop_signals import SearchInterrupted

if TYPE_CHECKING:
    from autoshrink.config import SearchConfig
    from autoshrink.evaluators.base import Evaluation
    from autoshrink.objectives import Score
    from autoshrink.presets import preset
    from autoshrink.report.reading import read_run
    from autoshrink.search import run_search

#: The names loaded on first use, by the module that defines them.
_LAZY = {
    "SearchConfig": "autoshrink.config",
    "preset": "autoshrink.presets",
    "Evaluation": "autoshrink.evaluators.base",
    "Score": "autoshrink.objectives",
    "read_run": "autoshrink.report.reading",
    "run_search": "autoshrink.search",
}

__all__ = [
    "AutoshrinkError",
    "BenchmarkError",
    "Cell",
    "CellError",
    "ConfigError",
    "DataError",
    "Evaluation",
    "HardwareError",
    "JournalError",
    "Score",
    "SearchConfig",
    "SearchInterrupted",
    "TrainingError",
    "__version__",
    "preset",
    "read_run",
    "run_search",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """A name of :data:`_LAZY`, imported from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autoshrink' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
