"""autoshrink: topology-aware neural architecture search (AutoShrink, AAAI 2020).

A cell is a DAG whose nodes are operations; the search starts from the complete DAG and removes
one edge at a time, keeping the best of K single-edge removals under an efficiency-aware score.
The public entry points are :class:`autoshrink.graph.Cell`, the strategies in
:mod:`autoshrink.strategies`, the evaluators in :mod:`autoshrink.evaluators` and
:func:`autoshrink.search.run_search`; the command line is ``autoshrink``.
"""

from autoshrink.errors import AutoshrinkError, CellError
from autoshrink.graph import Cell

__all__ = ["AutoshrinkError", "Cell", "CellError", "__version__"]
__version__ = "0.1.0"
