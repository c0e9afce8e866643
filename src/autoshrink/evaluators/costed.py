"""Hardware cost metrics on top of any evaluator: measured latency, table latency, HW-NAS-Bench.

:class:`CostedEvaluator` wraps an evaluator and adds cost metrics to what it returns, so that a
:class:`~autoshrink.objectives.Score` can use them as its cost term and a search's hard
constraints can reject candidates on them before training:

- ``latency_ms`` (:class:`MeasuredLatency`): the network measured now, on this machine;
- ``table_latency_ms`` (:class:`TableLatency`): predicted from a latency lookup table, without
  running the network; blocks the table lacks are measured once and added to its file;
- an HW-NAS-Bench metric such as ``edgegpu_latency`` for NAS-Bench-201 cells
  (:class:`~autoshrink.hardware.hwnasbench.HWNASBenchCost`).

It keeps the evaluator protocol (``profile`` and ``evaluate``) and also wraps plain callables
``cell -> metrics`` such as the tabular :class:`~autoshrink.tabular.SearchEvaluator`. Costs are
computed once per cell (canonical key) and process; a cost a hard constraint already read in
the main process travels with the job (:meth:`CostedEvaluator.reuse_metrics`) and is not
measured again in a worker. With a process-pool executor, measured latency is otherwise taken
in a worker while other workers train, so it is noisier than a table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from autoshrink.evaluators.base import Evaluation
from autoshrink.graph import Cell
from autoshrink.hardware.blocks import Block, network_blocks
from autoshrink.hardware.latency import check_available, measure_cell
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.hardware.table import LatencyTable, check_table_settings, extend_table
from autoshrink.objectives import LATENCY_COSTS
from autoshrink.spaces.macros import MacroSpec, get_macro

log = logging.getLogger(__name__)

MEASURED, TABLE = LATENCY_COSTS


class Cost(Protocol):
    """A named cost of a genotype."""

    @property
    def name(self) -> str:
        """The metric the cost is reported as (e.g. ``latency_ms``)."""
        ...

    def __call__(self, genotype: Any, /) -> float:
        """The cost of ``genotype``."""
        ...


@dataclass(frozen=True)
class MeasuredLatency:
    """``latency_ms``: median latency of the network ``spec`` built from the cell, measured."""

    spec: MacroSpec
    settings: LatencySettings
    name: str = MEASURED

    def __call__(self, cell: Cell) -> float:
        """The median latency in ms of the network ``spec`` built with ``cell``, measured now."""
        return measure_cell(cell, self.spec, self.settings).median_ms


@dataclass
class TableLatency:
    """``table_latency_ms``: the latency of the network ``spec`` predicted from a table.

    Blocks the table lacks are measured once (by profiling the cell's network). With a
    ``path``, the table file is shared: it is read again before measuring and every new
    measurement is merged into it (entries already in the file win), so that processes
    measure each block once between them and predict alike -- the search's constraint check
    (main process) measures a candidate's new blocks before a worker trains it.
    """

    spec: MacroSpec
    settings: LatencySettings
    table: LatencyTable | None = None
    path: str | None = None
    name: str = TABLE

    def __call__(self, cell: Cell) -> float:
        """The latency in ms of the network ``spec`` built with ``cell``, predicted from the table
        after measuring the blocks it lacks (merged with the file at ``path``, if any)."""
        blocks = network_blocks(cell, self.spec)
        if self._lacks(blocks) and self.path is not None:
            self._merge_file()
        if self._lacks(blocks):
            self.table = extend_table(
                self.table, [cell], self.spec, self.settings, source=str(self.path or "the table")
            )
            if self.path is not None:  # another worker may be merging its blocks
                self.table = self.table.save_shared(self.path)
        assert self.table is not None
        return self.table.predict_blocks(blocks)

    def __post_init__(self) -> None:
        # a table measured with other settings answered for a cell it held every block of
        # (only measuring a block it lacked checked them)
        if self.table is not None:
            self.table.check_settings(self.settings, str(self.path or "the table"))

    def _lacks(self, blocks: list[Block]) -> bool:
        return self.table is None or bool(self.table.missing(blocks))

    def _merge_file(self) -> None:
        assert self.path is not None
        saved = LatencyTable.load_checked(self.path, self.settings)
        if saved is not None:
            self.table = saved if self.table is None else self.table.merged(saved, str(self.path))


@dataclass
class CostedEvaluator:
    """``inner``'s metrics plus one metric per cost (see the module docstring)."""

    inner: Any
    costs: Sequence[Cost]
    _cache: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def cost_metrics(self, genotype: Any) -> dict[str, float]:
        """The cost metrics of ``genotype`` (computed once per canonical key)."""
        known = self._cache.setdefault(genotype.key, {})
        for c in self.costs:
            if c.name not in known:
                known[c.name] = float(c(genotype))
        return dict(known)

    def reuse_metrics(self, genotype: Any, metrics: Mapping[str, float]) -> None:
        """Take the cost metrics among ``metrics`` as ``genotype``'s, measured elsewhere (the
        search's constraint check, in the main process): :meth:`cost_metrics` does not
        measure them again."""
        names = {c.name for c in self.costs}
        known = self._cache.setdefault(genotype.key, {})
        known.update({m: float(v) for m, v in metrics.items() if m in names})

    def profile(self, genotype: Any) -> dict[str, float]:
        """``inner``'s profile plus the cost metrics, computed without training."""
        return {**self.inner.profile(genotype), **self.cost_metrics(genotype)}

    @property
    def num_classes(self) -> int | None:
        """The classes of the inner evaluator's task (``None``: not a classifier's)."""
        return getattr(self.inner, "num_classes", None)

    @property
    def device(self) -> str:
        """The device the inner evaluator trains on (a Ray task asks for a GPU by it)."""
        return str(getattr(self.inner, "device", "cpu"))

    def screening_stage(self, classes: Any, epochs: int) -> CostedEvaluator:
        """The inner evaluator's screening stage with the same costs (and cost cache)."""
        return replace(self, inner=self.inner.screening_stage(classes, epochs))

    def evaluate(self, genotype: Any, seed: int) -> Evaluation:
        """``inner``'s evaluation with the cost metrics added (:meth:`with_costs`)."""
        return self.with_costs(genotype, self.inner.evaluate(genotype, seed))

    def with_costs(self, genotype: Any, evaluation: Evaluation) -> Evaluation:
        """``evaluation`` of ``genotype`` by ``inner`` (or by its batched twin) with the cost
        metrics added; a failed or diverged one is returned unchanged."""
        if evaluation.status != "ok":
            return evaluation
        return replace(evaluation, metrics={**evaluation.metrics, **self.cost_metrics(genotype)})

    def __call__(self, genotype: Any) -> dict[str, float]:
        """For plain ``cell -> metrics`` evaluators (tabular benchmarks)."""
        inner: Callable[[Any], dict[str, float]] = self.inner
        return {**inner(genotype), **self.cost_metrics(genotype)}


def hardware_costs(
    wanted: set[str],
    proxy: MacroSpec,
    settings: LatencySettings,
    *,
    macro: str | None = None,
    table: str | None = None,
) -> list[Cost]:
    """The latency costs among ``wanted`` (metric names), for the network ``macro`` (a
    registered name; ``None``: the proxy network ``proxy``); ``table`` is a latency table
    file to start from and to add new measurements to (see :class:`TableLatency`)."""
    spec = proxy if macro is None else get_macro(macro)
    costs: list[Cost] = []
    if MEASURED in wanted or TABLE in wanted:
        check_available(settings)
    if MEASURED in wanted:
        costs.append(MeasuredLatency(spec, settings))
    if TABLE in wanted:
        check_table_settings(settings)
        # read and checked now, so that a table of other settings fails before any training
        if table is not None and LatencyTable.load_checked(table, settings) is None:
            log.info("latency table %s not found: it is started with the first candidate", table)
        costs.append(TableLatency(spec, settings, path=table))
    return costs


def with_hardware_costs(evaluator: Any, config: Any, proxy: MacroSpec) -> Any:
    """``evaluator`` wrapped with the latency costs a search config's score or constraints
    name (``config``: a :class:`~autoshrink.config.SearchConfig`), or unchanged."""
    wanted = set(config.constraints)
    if config.score.weight:
        wanted.add(config.score.cost)
    costs = hardware_costs(
        wanted,
        proxy,
        config.latency,
        macro=config.latency_macro,
        table=config.latency_table,
    )
    return CostedEvaluator(evaluator, costs) if costs else evaluator
