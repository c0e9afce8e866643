"""HW-NAS-Bench hardware costs of NAS-Bench-201 cells, read from a user-given file on opt-in.

HW-NAS-Bench (Li et al., ICLR 2021) publishes measured or estimated latency and energy of all
15,625 NAS-Bench-201 cells on six devices as one Python pickle (``HW-NAS-Bench-v1_0.pickle``)
of nested dicts laid out ``data[space][dataset][metric][arch index]``: space
``"nasbench201"``, dataset ``cifar10`` / ``cifar100`` / ``ImageNet16-120``, the arch index the
official NAS-Bench-201 index, and the metrics of :data:`METRICS` (latency in ms, energy in mJ).
A ``config`` entry per index, when present, holds the cell's ``arch_str``.

**Why the opt-in.** Unpickling can run any code the file's author chose, and this file is not
shipped with autoshrink: :func:`load_hwnasbench` refuses unless the caller passes
``allow_pickle=True``, and then reads with the restricted unpickler of
:mod:`autoshrink.safe_pickle`: it builds only what the pickle protocol builds by itself --
dicts, lists, tuples, numbers, strings, booleans, ``None`` -- plus ``collections.OrderedDict``
and numpy *scalars*, decoded from their bytes without running numpy code. Any other global (a
numpy array, a function) makes the load fail with its name.

Costs are looked up through an :class:`~autoshrink.spaces.nb201.ArchIndex` (official index <->
cell), taken from the file's own ``config`` arch strings when it has all of them, or from the
NAS-Bench-201 tables (``tables.index``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.errors import BenchmarkError, CellError, ConfigError
from autoshrink.ranges import is_number
from autoshrink.safe_pickle import NUMPY_SCALARS, load_pickle_file
from autoshrink.spaces.nb201 import NUM_CELLS, ArchIndex, NB201Cell, dataset_name

SPACE = "nasbench201"
#: The HW-NAS-Bench metrics of NAS-Bench-201 cells and their units.
METRICS: Mapping[str, str] = {
    "edgegpu_latency": "ms",
    "edgegpu_energy": "mJ",
    "raspi4_latency": "ms",
    "edgetpu_latency": "ms",
    "pixel3_latency": "ms",
    "eyeriss_latency": "ms",
    "eyeriss_energy": "mJ",
    "fpga_latency": "ms",
    "fpga_energy": "mJ",
}


def read_pickle(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """The object in a pickle file, read with the restricted unpickler (opt-in only)."""
    return load_pickle_file(
        path,
        NUMPY_SCALARS,
        allow_pickle=allow_pickle,
        error=BenchmarkError,
        what="HW-NAS-Bench file",
    )


def _column(leaf: Any, where: str) -> np.ndarray:
    """A metric's values by official index (NaN where the file has none)."""
    items = leaf.items() if isinstance(leaf, Mapping) else enumerate(leaf)
    out = np.full(NUM_CELLS, np.nan)
    for i, v in items:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < NUM_CELLS:
            raise BenchmarkError(f"{where}: arch index {i!r} is not in 0..{NUM_CELLS - 1}")
        # latencies, energies and arithmetic intensities: none is negative
        if not is_number(v) or not 0 <= v < math.inf:
            raise BenchmarkError(f"{where}[{i}]: expected a finite number >= 0, got {v!r}")
        out[i] = float(v)
    out.setflags(write=False)
    return out


def _arch_strings(config: Any) -> tuple[str, ...]:
    """The ``arch_str`` of every index from a ``config`` entry (list or dict), else ``()``."""
    if not isinstance(config, (Mapping, list, tuple)) or len(config) != NUM_CELLS:
        return ()
    items = config if isinstance(config, Mapping) else dict(enumerate(config))
    try:
        archs = tuple(items[i]["arch_str"] for i in range(NUM_CELLS))
    except (KeyError, TypeError, IndexError):
        return ()
    return archs if all(isinstance(a, str) for a in archs) else ()


@dataclass(frozen=True)
class HWNASBench:
    """HW-NAS-Bench metrics of NAS-Bench-201 cells: ``(dataset, metric)`` -> values by
    official index (float64, NaN where the file has no value)."""

    source: str
    values: Mapping[tuple[str, str], np.ndarray]
    arch_strings: tuple[str, ...] = field(default=(), repr=False)

    def keys(self) -> list[tuple[str, str]]:
        """The ``(dataset, metric)`` pairs the file has values for, sorted."""
        return sorted(self.values)

    def column(self, *, dataset: str, metric: str) -> np.ndarray:
        """The values of ``metric`` on ``dataset`` by official index (read-only)."""
        if metric not in METRICS:
            raise BenchmarkError(
                f"unknown HW-NAS-Bench metric {metric!r}; expected one of {list(METRICS)}"
            )
        key = (dataset_name(dataset), metric)
        if key not in self.values:
            raise BenchmarkError(f"{self.source} has no {metric} for {key[0]}")
        return self.values[key]

    def query(self, index: int, *, dataset: str, metric: str) -> float:
        """The value of ``metric`` (unit :data:`METRICS`) for official index ``index``."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):  # 6111.9 was 6111
            raise CellError(f"index must be an official index (an int), got {index!r}")
        if not 0 <= int(index) < NUM_CELLS:
            raise BenchmarkError(f"arch index must be in 0..{NUM_CELLS - 1}, got {index}")
        value = float(self.column(dataset=dataset, metric=metric)[int(index)])
        if math.isnan(value):
            raise BenchmarkError(f"{self.source} has no {metric} of {dataset} for index {index}")
        return value

    def arch_index(self) -> ArchIndex | None:
        """The official index from the file's ``config`` arch strings, if it lists all cells."""
        if len(self.arch_strings) != NUM_CELLS:
            return None
        try:
            return ArchIndex(self.arch_strings, source=self.source)
        except CellError as err:
            raise BenchmarkError(str(err)) from None

    def cost(self, *, dataset: str, metric: str, index: ArchIndex | None = None) -> HWNASBenchCost:
        """A callable cell -> ``metric`` (see :class:`HWNASBenchCost`). Cells map to the file's
        values through the file's own ``config`` arch strings when it lists every cell (its
        values are in its order), else through ``index`` (the tables' official index)."""
        index = self.arch_index() or index
        if index is None:
            raise BenchmarkError(
                f"{self.source} does not list the arch string of every index; pass the "
                "NAS-Bench-201 tables' index (tables.index)"
            )
        by_code = np.full(NUM_CELLS, np.nan)
        by_code[index.codes] = self.column(dataset=dataset, metric=metric)
        by_code.setflags(write=False)
        return HWNASBenchCost(metric, dataset_name(dataset), by_code, self.source)


@dataclass(frozen=True)
class HWNASBenchCost:
    """``cost(cell)``: one HW-NAS-Bench metric of a NAS-Bench-201 cell (an array read)."""

    name: str
    dataset: str
    by_code: np.ndarray = field(repr=False)
    source: str = ""

    def __call__(self, cell: NB201Cell) -> float:
        """``cell``'s value of the metric, read at its code; :class:`BenchmarkError` when the file
        has none."""
        value = float(self.by_code[cell.code])
        if math.isnan(value):
            raise BenchmarkError(f"{self.source} has no {self.name} of {self.dataset} for {cell}")
        return value


def load_hwnasbench(path: str | Path, *, allow_pickle: bool = False) -> HWNASBench:
    """Read the NAS-Bench-201 part of an HW-NAS-Bench pickle (see the module docstring)."""
    data = read_pickle(path, allow_pickle=allow_pickle)
    if not isinstance(data, Mapping) or not isinstance(data.get(SPACE), Mapping):
        raise BenchmarkError(f"{path}: expected a dict with a {SPACE!r} dict of data sets")
    values: dict[tuple[str, str], np.ndarray] = {}
    archs: tuple[str, ...] = ()
    for dataset, metrics in data[SPACE].items():
        where = f"{path}[{SPACE}][{dataset!r}]"
        if not isinstance(metrics, Mapping):
            raise BenchmarkError(f"{where}: expected a dict of metrics")
        try:
            name = dataset_name(dataset)
        except ConfigError as err:
            raise BenchmarkError(f"{path}: {err}") from None
        for metric, leaf in metrics.items():
            if metric in METRICS:
                if not isinstance(leaf, (Mapping, list, tuple)):
                    raise BenchmarkError(f"{where}[{metric!r}]: expected a list or dict")
                values[(name, metric)] = _column(leaf, f"{where}[{metric!r}]")
        if not archs:
            archs = _arch_strings(metrics.get("config"))
    if not values:
        raise BenchmarkError(
            f"{path}: no HW-NAS-Bench metric found; expected some of {list(METRICS)}"
        )
    return HWNASBench(str(path), values, archs)
