"""Latency in the search: the cost term of the score, the hard constraint that rejects a
candidate before training (recorded in the journal), and the search CLI's wiring."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import autoshrink.cli.search as cli_search
import autoshrink.evaluators.costed as costed
from autoshrink.config import SearchConfig
from autoshrink.errors import HardwareError
from autoshrink.evaluators.base import Evaluation
from autoshrink.evaluators.costed import (
    CostedEvaluator,
    MeasuredLatency,
    TableLatency,
    with_hardware_costs,
)
from autoshrink.graph import Cell
from autoshrink.hardware.blocks import network_blocks
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.hardware.table import BlockEntry, LatencyTable
from autoshrink.objectives import Score
from autoshrink.search import run_search
from autoshrink.search_loop import make_strategy
from autoshrink.spaces.macros import cifar_proxy
from test_search import candidates

SPEC = cifar_proxy(width=0.25, image_size=8, num_classes=3)
OP_MS = 1.0  # every op block costs 1 ms in the synthetic table, everything else 0


class Toy:
    """accuracy = edges / 10; counts the candidates it trains."""

    def __init__(self) -> None:
        self.calls = 0

    def profile(self, cell: Cell) -> dict[str, float]:
        return {"macs": 1e6, "params": 1.0}

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        self.calls += 1
        return Evaluation({**self.profile(cell), "accuracy": cell.num_edges / 10})


def synthetic_table(config: SearchConfig, path) -> None:
    """A table with every block of every cell the search can meet: op blocks 1 ms, others 0,
    so a cell's predicted latency is 3 (cells) x its live op nodes, in ms."""
    start = make_strategy(config).current
    entries = {}
    for n in range(len(start.edges) + 1):
        for edges in itertools.combinations(start.edges, n):
            cell = Cell.pruned("cnn", start.ops, edges)
            for b in network_blocks(cell, SPEC):
                entries[b.key] = BlockEntry(b, OP_MS if b.kind == "op" else 0.0, 0.0)
                entries[b.io().key] = BlockEntry(b.io(), 0.0, 0.0)
    LatencyTable(config.latency, entries).save(path)


def test_table_latency_constraint_and_cost_term(tmp_path) -> None:
    config = SearchConfig(
        nodes=4,
        k=6,
        keep_fraction=0.0,
        score=Score.cnn(cost="table_latency_ms", weight=0.1),
        constraints={"table_latency_ms": 6.0},
        latency_table=str(tmp_path / "table.json"),
    )
    synthetic_table(config, tmp_path / "table.json")
    toy = Toy()
    run_search(
        tmp_path / "run",
        config,
        evaluator_factory=lambda c: with_hardware_costs(toy, c, SPEC),
        progress=False,
    )
    rows = candidates(tmp_path / "run" / "journal.jsonl")
    rejected = [r for r in rows if r["status"] == "rejected"]
    trained = [r for r in rows if r["status"] == "ok"]
    assert rejected and trained and toy.calls == len(trained)
    for r in rows:
        ops = len(Cell.from_dict(r["cell"]).live_nodes) - 1
        assert r["metrics"]["table_latency_ms"] == pytest.approx(3 * ops * OP_MS)
    for r in rejected:
        assert r["metrics"]["table_latency_ms"] > 6.0
        assert r["detail"]["reason"].startswith("table_latency_ms")
    for r in trained:
        lat = r["metrics"]["table_latency_ms"]
        assert lat <= 6.0
        expected = r["edges"] / 10 - 0.1 * (math.log10(lat) - 6) if lat > 0 else None
        assert r["score"] == (pytest.approx(expected) if expected is not None else None)


def test_measured_latency_wrapper_is_cached_and_only_added_when_asked() -> None:
    fast = LatencySettings(warmup=1, min_repeats=3, max_seconds=0.05)
    cell = make_strategy(SearchConfig(nodes=4)).current
    wrapped = CostedEvaluator(Toy(), [MeasuredLatency(SPEC, fast)])
    first = wrapped.profile(cell)["latency_ms"]
    assert first > 0 and wrapped.evaluate(cell, 0).metrics["latency_ms"] == first
    plain = Toy()
    assert with_hardware_costs(plain, SearchConfig(), SPEC) is plain
    costed = with_hardware_costs(plain, SearchConfig(constraints={"latency_ms": 3.0}), SPEC)
    assert [c.name for c in costed.costs] == ["latency_ms"]
    by_score = with_hardware_costs(
        plain, SearchConfig(score=Score.cnn(cost="table_latency_ms")), SPEC
    )
    assert [c.name for c in by_score.costs] == ["table_latency_ms"]


def test_hardware_costs_check_the_machine_only_for_a_latency_and_say_a_table_is_new(
    monkeypatch, tmp_path, caplog
) -> None:
    checked = []
    monkeypatch.setattr(costed, "check_available", checked.append)
    fast = LatencySettings(warmup=1, min_repeats=3, max_seconds=0.05)
    assert costed.hardware_costs({"macs", "params"}, SPEC, fast) == [] and checked == []
    for wanted in ({"latency_ms"}, {"table_latency_ms"}, {"latency_ms", "table_latency_ms"}):
        checked.clear()
        costs = costed.hardware_costs(wanted | {"macs"}, SPEC, fast)
        assert checked == [fast] and {c.name for c in costs} == wanted  # once, before training
    table = tmp_path / "table.json"
    with caplog.at_level("INFO", logger=costed.__name__):
        costed.hardware_costs({"table_latency_ms"}, SPEC, fast, table=str(table))
    assert f"latency table {table} not found: it is started with the first candidate" in caplog.text
    LatencyTable(fast).save(table)  # an empty table of these settings: found, nothing said
    caplog.clear()
    with caplog.at_level("INFO", logger=costed.__name__):
        costed.hardware_costs({"table_latency_ms"}, SPEC, fast, table=str(table))
    assert "not found" not in caplog.text


class Classifier(Toy):
    """A toy of 10 classes with screening stages, failing the cells of 2 edges."""

    num_classes = 10

    def __init__(self, stage: tuple[Any, int] | None = None) -> None:
        super().__init__()
        self.stage = stage

    def screening_stage(self, classes: Any, epochs: int) -> Classifier:
        return Classifier((classes, epochs))

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        if cell.num_edges == 2:
            return Evaluation({}, status="failed", detail={"error": "boom"})
        return super().evaluate(cell, seed)


class EdgeCost:
    """A cost metric: the cell's edges."""

    name = "edge_cost"

    def __call__(self, cell: Cell) -> float:
        return float(cell.num_edges)


def test_a_costed_evaluator_keeps_the_inner_task_its_stages_and_failures() -> None:
    full = Cell.complete("cnn", ["input", "conv3x3", "conv3x3"])  # 3 edges
    two = next(c for e in full.edges if (c := full.remove_edge(e)).num_edges == 2)
    costed_ev = CostedEvaluator(Classifier(), [EdgeCost()])
    assert costed_ev.num_classes == 10
    assert CostedEvaluator(Toy(), costed_ev.costs).num_classes is None  # not a classifier
    stage = costed_ev.screening_stage([0, 1], 2)
    assert isinstance(stage, CostedEvaluator) and stage.inner.stage == ([0, 1], 2)
    assert stage.costs is costed_ev.costs and stage._cache is costed_ev._cache  # one cache
    failed = costed_ev.evaluate(two, 0)  # a failed evaluation is not given costs
    assert failed == Evaluation({}, status="failed", detail={"error": "boom"})
    assert costed_ev.evaluate(full, 0).metrics["edge_cost"] == 3.0


def test_a_table_latency_without_a_file_measures_into_memory(tmp_path) -> None:
    fast = LatencySettings(warmup=1, min_repeats=3, max_seconds=0.05)
    cell = make_strategy(SearchConfig(nodes=3)).current
    cost = TableLatency(SPEC, fast)  # no path: nothing to merge with or save to
    assert cost(cell) > 0 and cost.table is not None and len(cost.table) > 0
    elsewhere = replace(cost.table, entries={}, environment={"cpu": "another processor"})
    with pytest.raises(HardwareError, match="^the table was measured on another processor;"):
        TableLatency(SPEC, fast, table=elsewhere)(cell)
    # a table of other settings was used where it held every block (checked only to measure)
    with pytest.raises(HardwareError, match=r"^the table was measured with batch=1 \(asked 64\)"):
        TableLatency(SPEC, replace(fast, batch=64), table=cost.table)
    assert list(tmp_path.iterdir()) == []


class Captured(Exception):
    pass


@pytest.mark.parametrize(
    "args, constraints, cost",
    [
        (["--max-latency", "5"], {"latency_ms": 5.0}, "macs"),
        (["--max-latency", "5", "--latency-table", "t.json"], {"table_latency_ms": 5.0}, "macs"),
        (["--cost", "table_latency_ms", "--max-latency", "2"], {"table_latency_ms": 2.0},
         "table_latency_ms"),
        (["--cost", "latency_ms", "--max-macs", "1e7"], {"macs": 1e7}, "latency_ms"),
    ],
)  # fmt: skip
def test_search_cli_wires_latency(cli, monkeypatch, tmp_path, args, constraints, cost) -> None:
    seen = {}

    def fake_run_search(run_dir, config, **kw):
        seen["config"] = config
        raise Captured

    monkeypatch.setattr(cli_search, "run_search", fake_run_search)
    with pytest.raises(Captured):
        cli("search", "--out", tmp_path / "run", "--latency-backend", "onnxruntime", *args)
    config = seen["config"]
    assert config.constraints == constraints and config.score.cost == cost
    if "t.json" in args:  # absolute: a --resume from another folder reads the same file
        assert config.latency_table == str(Path("t.json").absolute())
    elif "table_latency_ms" in constraints:  # a table file in the run folder by default
        assert config.latency_table == str(tmp_path / "run" / "latency_table.json")
    assert config.latency.backend == "onnxruntime"
    back = SearchConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config


@pytest.mark.parametrize(
    "args",
    [["--cost", "table_latency_ms"], ["--task", "rnn", "--data", "text", "--preset", "demo"]],
)
def test_search_saves_its_paths_absolute(cli, monkeypatch, tmp_path, args) -> None:
    # config.json kept the paths as typed: a --resume from another folder started a second
    # latency table there and mixed its predictions into the journal
    seen = {}

    def fake_run_search(run_dir, config, **kw):
        seen["config"] = config
        raise Captured

    monkeypatch.setattr(cli_search, "run_search", fake_run_search)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Captured):
        cli("search", "--out", "run", *args)
    config = seen["config"]
    if "--data" in args:
        assert config.data_dir == str(tmp_path / "text")
    else:
        assert config.latency_table == str(tmp_path / "run" / "latency_table.json")


def test_table_file_is_shared_between_processes(tmp_path, monkeypatch) -> None:
    """A second TableLatency (another worker) reads the blocks the first measured from the
    file and predicts exactly the same, measuring nothing."""
    fast = LatencySettings(warmup=1, min_repeats=3, max_seconds=0.05)
    cell = make_strategy(SearchConfig(nodes=4)).current
    path = str(tmp_path / "table.json")
    first = TableLatency(SPEC, fast, path=path)(cell)
    monkeypatch.setattr(costed, "extend_table", lambda *a, **k: pytest.fail("measured again"))
    assert TableLatency(SPEC, fast, path=path)(cell) == first
    table = LatencyTable.load(path)
    nines = {k: BlockEntry(e.block, 9.0, 0.0) for k, e in table.entries.items()}
    other = LatencyTable(fast, nines, table.environment)  # measured on the same machine
    assert all(e.median_ms == 9.0 for e in table.merged(other).entries.values())
