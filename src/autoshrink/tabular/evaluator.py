"""The two sides of a tabular benchmark: what a search sees, and what only a report sees.

:class:`SearchEvaluator` turns a cell into the metrics a search may use: its *validation*
accuracy (12-epoch by default, the NAS-Bench-201 search protocol) and its cost (``macs`` by
the official ``flop`` convention and ``params``, from :mod:`autoshrink.cost.nb201`). It copies
the validation column out of the tables at construction and keeps no reference to them, so a
search handed this object has no path to a test number.

:class:`Reporter` gives the numbers a search must never see -- test accuracy (200-epoch by
default) of the cell a search returned, and the benchmark optimum -- for the reporting code.
Both index their arrays by cell code, so a lookup is one array read.
"""

from __future__ import annotations

import numpy as np

from autoshrink.cost.nb201 import topology_cost_table
from autoshrink.errors import BenchmarkError, CellError
from autoshrink.spaces.nb201 import NUM_CELLS, NB201Cell, dataset_name
from autoshrink.tabular.tables import NB201Tables


def _by_code(tables: NB201Tables, column: np.ndarray) -> np.ndarray:
    out = np.empty(NUM_CELLS, dtype=np.float64)
    out[tables.index.codes] = column
    out.setflags(write=False)
    return out


def not_a_cell(what: object) -> CellError:
    """The error of an evaluator given ``what``, which is no :class:`NB201Cell`."""
    return CellError(
        f"a NAS-Bench-201 evaluator takes an NB201Cell, got {type(what).__name__} {what!r} (an "
        "official index i: tables.index.cell(i))"
    )


class SearchEvaluator:
    """Validation accuracy and cost of a cell -- all a search may see.

    Args:
        tables: the benchmark tables (read once; not kept).
        dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120``.
        epochs: the training length of the validation numbers (12 by default).

    Calling it returns ``{"accuracy": fraction, "macs": flop, "params": count}``.
    """

    def __init__(self, tables: NB201Tables, *, dataset: str, epochs: int = 12) -> None:
        self.dataset = dataset_name(dataset)
        valid = tables.column(dataset=self.dataset, metric="accuracy", epochs=epochs, split="valid")
        self.epochs = int(epochs)
        self._source = tables.source
        self._accuracy = _by_code(tables, valid / 100.0)
        params, macs = topology_cost_table(self.dataset)
        self._params = params.astype(np.float64)
        self._macs = macs.astype(np.float64)
        self.evaluations = 0

    def __call__(self, cell: NB201Cell) -> dict[str, float]:
        """``cell``'s validation ``accuracy`` (a fraction) at ``epochs``, ``macs`` and ``params``; a
        :class:`BenchmarkError` when the tables lack the accuracy. Counted in ``evaluations``."""
        try:
            code = cell.code
        except AttributeError:  # a try costs nothing until it raises: this is the hot path
            raise not_a_cell(cell) from None
        acc = float(self._accuracy[code])
        if acc != acc:
            raise BenchmarkError(
                f"{self._source} has no {self.epochs}-epoch validation accuracy of "
                f"{self.dataset} for cell {cell}"
            )
        self.evaluations += 1
        return {
            "accuracy": acc,
            "macs": float(self._macs[code]),
            "params": float(self._params[code]),
        }

    def validation_by_code(self) -> np.ndarray:
        """Validation accuracy (fraction) of every cell, by code (read-only; NaN = missing)."""
        return self._accuracy

    def macs_by_code(self) -> np.ndarray:
        """``flop`` (MACs + classifier bias adds) of every cell, by code."""
        return self._macs


class Reporter:
    """Test numbers for reports only: never hand this to a search.

    Args:
        tables: the benchmark tables.
        dataset: the data set.
        epochs: the training length of the reported test accuracy (200 by default).
    """

    def __init__(self, tables: NB201Tables, *, dataset: str, epochs: int = 200) -> None:
        self.dataset = dataset_name(dataset)
        test = tables.column(dataset=self.dataset, metric="accuracy", epochs=epochs, split="test")
        self.epochs = int(epochs)
        self._test = _by_code(tables, test)
        self._index = tables.index

    def test_accuracy(self, cell: NB201Cell) -> float:
        """Test accuracy (percent) of ``cell``."""
        try:
            code = cell.code
        except AttributeError:
            raise not_a_cell(cell) from None
        value = float(self._test[code])
        if value != value:
            raise BenchmarkError(f"no {self.epochs}-epoch test accuracy for cell {cell}")
        return value

    def test_by_code(self) -> np.ndarray:
        """Test accuracy (percent) of every cell, by code (read-only)."""
        return self._test

    def optimum(self) -> tuple[float, NB201Cell]:
        """The best test accuracy of the benchmark and its cell (the lowest official index
        among ties: CIFAR-10 has two cells at 94.3733, indices 6111 and 13714)."""
        best = np.nanmax(self._test)
        codes = np.flatnonzero(self._test == best)
        code = int(codes[np.argmin(self._index.index_of_code[codes])])
        return float(best), NB201Cell.from_code(code)
