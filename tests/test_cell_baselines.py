"""Random search and regularized evolution on the AutoShrink cell space: the space's sampling
and mutation, known optima on toy scores, budgets, determinism, the search driver and resume."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import AutoshrinkError, ConfigError
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.report.compare import write_comparison
from autoshrink.report.folder import write_report
from autoshrink.report.reading import read_run
from autoshrink.search import run_search
from autoshrink.search_loop import make_strategy
from autoshrink.spaces.cells import flip_edge, random_subcell, start_cell
from autoshrink.strategies.base import Observation
from autoshrink.strategies.cell_baselines import CellEvolution, RandomCellSearch
from test_search import GOOD, ToyEvaluator, strip_seconds, toy_config

PARENT = start_cell("cnn", 6, random.Random(0))  # the complete DAG: 15 edges


def test_random_subcells_are_nonempty_pruned_sub_dags_of_every_size() -> None:
    rng = random.Random(1)
    cells = [random_subcell(PARENT, rng) for _ in range(400)]
    for cell in cells:
        assert cell.edges and set(cell.edges) <= set(PARENT.edges) and cell.ops == PARENT.ops
        assert Cell.pruned("cnn", cell.ops, cell.edges, cell.activation) == cell
    sizes = {c.num_edges for c in cells}
    assert {1, PARENT.num_edges} <= sizes and len(sizes) >= 12
    again = [random_subcell(PARENT, random.Random(1)) for _ in range(1)]
    assert again[0] == cells[0]  # seeded


def test_flip_edge_adds_or_removes_exactly_one_edge() -> None:
    rng = random.Random(2)
    cell = random_subcell(PARENT, rng)
    added = removed = 0
    for _ in range(300):
        edge, child = flip_edge(cell, PARENT, rng)
        assert edge in PARENT.edges and child.edges and child != cell
        if edge in cell.edges:  # removed, perhaps with edges it cut off
            removed += 1
            assert edge not in child.edges and set(child.edges) < set(cell.edges)
        else:
            added += 1
            assert set(child.edges) == set(cell.edges) | {edge} and edge[0] in cell.live_nodes
        cell = child
    assert added and removed
    single = Cell("cnn", PARENT.ops, [(0, 1)], "relu")
    for _ in range(20):  # the last edge is never removed
        edge, child = flip_edge(single, PARENT, rng)
        assert child.num_edges == 2 and edge != (0, 1)


def test_the_edge_floor_of_autoshrink_holds_for_the_baselines() -> None:
    """A search stops AutoShrink at round(E0 * keep_fraction) edges; its baselines never
    propose a smaller cell, by draw or by mutation."""
    rng = random.Random(3)
    assert all(random_subcell(PARENT, rng, 9).num_edges >= 9 for _ in range(200))
    cell = random_subcell(PARENT, rng, 9)
    for _ in range(200):
        _, cell = flip_edge(cell, PARENT, rng, 9)
        assert cell.num_edges >= 9
    for strategy in ("random", "rea"):
        config = toy_config(strategy=strategy, budget=60, k=4, keep_fraction=0.4)
        told = drive(make_strategy(config))
        assert len(told) == 60
        assert min(o.proposal.genotype.num_edges for o in told) >= 6  # round(15 * 0.4)


def toy_score(cell: Cell) -> float:
    """Higher is better; the unique optimum is the cell whose edges are exactly GOOD."""
    return len(GOOD & set(cell.edges)) - 0.1 * cell.num_edges


def drive(strategy, score=toy_score) -> list[Observation]:
    told = []
    while proposals := strategy.ask():
        obs = [Observation(p, score(p.genotype)) for p in proposals]
        strategy.tell(obs)
        told += obs
    return told


def test_random_search_enumerates_a_small_space_and_finds_its_optimum() -> None:
    parent = start_cell("cnn", 4, random.Random(0))  # 6 edges: few distinct sub-DAGs
    goal = Cell("cnn", parent.ops, [(0, 1), (1, 3)], parent.activation)

    def score(cell: Cell) -> float:  # a needle: only the goal architecture scores 0
        return 0.0 if cell.key == goal.key else -1.0 - cell.num_edges

    search = RandomCellSearch(parent, budget=1000, batch_size=5, rng=random.Random(0))
    told = drive(search, score)
    keys = [o.proposal.genotype.key for o in told]
    assert len(keys) == len(set(keys)) < 1000  # no repeats; stops when the space is used up
    assert search.best.proposal.genotype.key == goal.key and search.best.score == 0


@pytest.mark.parametrize("strategy", ["random", "rea"])
def test_budget_batches_and_determinism(strategy: str) -> None:
    def make(seed: int):
        cls = RandomCellSearch if strategy == "random" else CellEvolution
        return cls(PARENT, budget=23, batch_size=5, rng=random.Random(seed))

    told = drive(make(4))
    assert len(told) == 23
    steps = [o.proposal.step for o in told]
    assert steps == sorted(steps) and steps.count(1) == 5 and steps.count(5) == 3
    assert [o.proposal.genotype for o in drive(make(4))] == [o.proposal.genotype for o in told]
    assert [o.proposal.genotype for o in drive(make(5))] != [o.proposal.genotype for o in told]
    keys = [o.proposal.genotype.key for o in told]
    assert len(set(keys)) == len(keys)


def test_evolution_beats_random_search_at_equal_budget() -> None:
    """Mean distance from the optimum after 120 candidates, over 12 seeds: REA's children
    climb; random sub-DAGs of a 15-edge cell rarely land on the 4-edge optimum."""

    def final_distance(cls, seed: int) -> int:
        search = cls(PARENT, budget=120, batch_size=4, rng=random.Random(seed))
        drive(search)
        return len(GOOD ^ set(search.best.proposal.genotype.edges))

    rea = [final_distance(CellEvolution, s) for s in range(12)]
    rnd = [final_distance(RandomCellSearch, s) for s in range(12)]
    assert statistics.mean(rea) < statistics.mean(rnd)
    assert rea.count(0) >= 6  # REA reaches the exact optimum in most runs


def test_evolution_children_descend_from_tournament_winners() -> None:
    search = CellEvolution(PARENT, budget=40, batch_size=1, rng=random.Random(0), population_size=5)
    told = drive(search)
    by_key = {o.proposal.genotype.key: o.proposal.genotype for o in told}
    assert all(o.proposal.meta["origin"] == "random" for o in told[:5])
    for o in told[5:]:
        meta = o.proposal.meta
        if meta["origin"] == "mutation":
            parent = by_key[meta["parent"]]
            assert len(set(parent.edges) ^ set(o.proposal.genotype.edges)) >= 1
            assert tuple(meta["flipped_edge"]) in PARENT.edges
    assert len(search.population) == 5


def test_config_and_cli_errors(cli, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'bogo'"):
        SearchConfig(strategy="bogo")
    with pytest.raises(ConfigError, match="budget is for the baselines"):
        SearchConfig(budget=10)
    with pytest.raises(ConfigError, match="budget must be >= 1"):
        SearchConfig(strategy="random", budget=0)
    # the paper preset by hand: the complete cell, then min(10, E) removals of a cell of E
    # edges, for E = 28 .. 1 (the target is round(0.28) = 0): 1 + 19 * 10 + (9 + 8 + ... + 1)
    assert SearchConfig(nodes=8, k=10, keep_fraction=0.01).default_budget() == 236
    assert preset("demo").default_budget() == 1 + 4 * (28 - 6)  # E = 28 .. 7, all >= 4
    assert (
        SearchConfig(nodes=8, k=10, keep_fraction=0.01, score_start=False).default_budget() == 235
    )
    code, _, err = cli("search", "--budget", "5", "--out", tmp_path / "x")
    assert code == 2 and "budget is for the baselines" in err and err.count("\n") == 1
    code, _, err = cli("report", tmp_path / "a", tmp_path / "b")
    assert code == 2 and "give --out DIR" in err
    code, _, err = cli("report", tmp_path / "a", "--out", tmp_path / "c")
    assert code == 2 and "at least 2 run folders" in err


@pytest.mark.parametrize("strategy", ["random", "rea"])
def test_search_driver_runs_a_baseline_and_resumes_it(strategy: str, tmp_path: Path) -> None:
    cfg = toy_config(strategy=strategy, budget=30, k=4, seed=2)
    full = run_search(
        tmp_path / "full", cfg, evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    assert full.evaluations == 30 and full.start is None
    start = make_strategy(cfg).start
    assert start == make_strategy(toy_config(seed=2)).current  # AutoShrink's start cell
    lines = (tmp_path / "full" / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 30
    metas = [json.loads(line)["meta"] for line in lines]
    assert {m["origin"] for m in metas} == ({"random"} if strategy == "random" else
                                             {"random", "mutation"})  # fmt: skip
    keys = [json.loads(line)["key"] for line in lines]
    for i, m in enumerate(metas):  # a child's parent was evaluated before it
        if m["origin"] == "mutation":
            assert m["parent"] in keys[:i] and len(m["flipped_edge"]) == 2
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    (part / "journal.jsonl").write_text("\n".join(lines[:13]) + "\n")
    ev = ToyEvaluator()
    resumed = run_search(part, resume=True, evaluator_factory=lambda c: ev, progress=False)
    assert ev.calls == 17 and resumed.cell == full.cell
    assert strip_seconds(part / "journal.jsonl") == strip_seconds(
        tmp_path / "full" / "journal.jsonl"
    )
    result = json.loads((tmp_path / "full" / "result.json").read_text())
    assert result["start"] is None and result["evaluations"] == 30
    page = write_report(tmp_path / "full").read_text()
    assert f"{strategy} search" in page and "Best score against candidates" in page
    assert "Chosen cell at each step" not in page
    shrink = run_search(tmp_path / "shrink", toy_config(k=4, seed=2),
                        evaluator_factory=lambda c: ToyEvaluator(), progress=False)  # fmt: skip
    page = write_comparison([tmp_path / "full", tmp_path / "shrink"], tmp_path / "cmp")
    text = page.read_text()
    assert f"full ({strategy}, seed 2)" in text and "shrink (autoshrink, seed 2)" in text
    assert f"{full.best.score:.4f}" in text and f"{shrink.best.score:.4f}" in text
    assert (tmp_path / "cmp" / "progress.svg").stat().st_size > 0
    assert read_run(tmp_path / "full").best_so_far()[-1] == full.best.score
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert (table["quality"], table["cost"]) == ("accuracy", "macs")
    assert [(r["folder"], r["best_score"], r["edges"]) for r in table["runs"]] == [
        (str(tmp_path / "full"), full.best.score, full.cell.num_edges),
        (str(tmp_path / "shrink"), shrink.best.score, shrink.cell.num_edges),
    ]
    again = write_comparison([tmp_path / "shrink", tmp_path / "full"], tmp_path / "cmp")
    assert again.read_text().index("shrink (") < again.read_text().index("full (")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("my page")
    with pytest.raises(AutoshrinkError, match="holds index.html, which no `autoshrink report`"):
        write_comparison([tmp_path / "full", tmp_path / "shrink"], tmp_path / "site")
    assert (tmp_path / "site" / "index.html").read_text() == "my page"
    (tmp_path / "a-file").write_text("")
    with pytest.raises(AutoshrinkError, match="a-file is a file, not a folder"):
        write_comparison([tmp_path / "full", tmp_path / "shrink"], tmp_path / "a-file" / "cmp")


@pytest.mark.slow
def test_cli_baseline_search_on_digits(cli, tmp_path: Path) -> None:
    """A real (tiny) REA search from the command line: proxy training on digits, then resume."""
    args = ["search", "--strategy", "rea", "--budget", "5", "--population-size", "2",
            "--tournament-size", "2",
            "--nodes", "4", "-k", "2", "--per-class", "10", "--val-size", "40", "--epochs", "1",
            "--executor", "inprocess", "--threads", "1", "--no-progress",
            "--out", tmp_path / "r"]  # fmt: skip
    code, out, err = cli(*args)
    assert code == 0, err
    assert "5 candidates, 5 trained now" in out and "complete cell score" not in out
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (config["strategy"], config["budget"], config["population_size"]) == ("rea", 5, 2)
    records = [json.loads(line) for line in (tmp_path / "r" / "journal.jsonl").open()]
    assert len(records) == 5 and all(0 < r["metrics"]["accuracy"] <= 1 for r in records)
    code, out, err = cli("search", "--resume", tmp_path / "r", "--no-progress")
    assert code == 0 and "5 candidates, 0 trained now" in out


def test_a_search_of_one_candidate_counts_it_in_the_singular(cli, tmp_path: Path) -> None:
    # "1 candidates, 1 trained now" in the summary, "Best 1 candidates" on the report's page
    args = ["search", "--strategy", "random", "--budget", "1", "--nodes", "3",
            "--per-class", "10", "--val-size", "40", "--epochs", "1",
            "--executor", "inprocess", "--threads", "1", "--no-progress",
            "--out", tmp_path / "r"]  # fmt: skip
    code, out, err = cli(*args)
    assert code == 0, err
    assert "\n1 candidate, 1 trained now, " in out
    code, _, err = cli("report", tmp_path / "r")
    assert code == 0, err
    page = (tmp_path / "r" / "report" / "index.html").read_text()
    assert "Best 1 candidate<" in page and "Best 1 candidates" not in page


@pytest.mark.parametrize(("nodes", "k", "keep"), [(4, 2, 0.0), (5, 3, 0.3), (6, 4, 0.2)])
def test_the_default_budget_is_the_most_autoshrink_can_evaluate(nodes, k, keep):
    """Against the longest AutoShrink walk, found by trying every removal at every step."""
    cfg = SearchConfig(nodes=nodes, k=k, keep_fraction=keep, seed=1)
    strategy = make_strategy(cfg)
    most: dict[str, int] = {}

    def longest(cell: Cell) -> int:  # candidates asked from ``cell`` on, at most
        if cell.key not in most:
            strategy.current = cell
            space = [c for _, c in strategy.shrink_space()]
            done = cell.num_edges <= strategy.target_edges or not space
            most[cell.key] = 0 if done else min(k, len(space)) + max(map(longest, space))
        return most[cell.key]

    assert cfg.default_budget() == 1 + longest(strategy.current)


def test_the_smallest_cells_and_sub_cells() -> None:
    from autoshrink.spaces.cells import CNN_SEARCH_OPS, balanced_ops

    assert balanced_ops(2, CNN_SEARCH_OPS, random.Random(0))[0] == "input"
    for kind in ("cnn", "rnn"):
        with pytest.raises(ConfigError, match="^a cell needs at least 2 nodes, got 1$"):
            start_cell(kind, 1, random.Random(0))
    assert start_cell("rnn", 2, random.Random(0)).num_edges == 1  # one edge, input -> node 1
    three = start_cell("cnn", 3, random.Random(0))
    with pytest.raises(ConfigError, match="cannot draw a sub-cell of >= 4 edges from 3"):
        random_subcell(three, random.Random(0), min_edges=4)
    # a flip may remove an edge down to one edge (the default floor), not below
    two = random_subcell(three, random.Random(1), min_edges=2)
    children = {flip_edge(two, three, random.Random(s))[1].num_edges for s in range(50)}
    assert 1 in children and 0 not in children


def test_evolution_draws_its_population_at_random_then_mutates_across_a_batch() -> None:
    search = CellEvolution(PARENT, budget=6, batch_size=3, population_size=4,
                           rng=random.Random(0))  # fmt: skip
    origins = []
    while proposals := search.ask():
        origins += [p.meta["origin"] for p in proposals]
        search.tell([Observation(p, toy_score(p.genotype)) for p in proposals])
    assert origins == ["random"] * 4 + ["mutation"] * 2  # the 4th of the population in batch 2


def test_evolution_of_a_cell_with_nothing_to_flip_ends_with_no_unseen_cell() -> None:
    tiny = start_cell("cnn", 2, random.Random(0))  # one edge: one sub-cell in all
    search = CellEvolution(tiny, budget=5, batch_size=1, population_size=1, rng=random.Random(0))
    assert len(drive(search)) == 1  # the parent cannot be mutated: it is offered, seen, and
    assert search.end_reason == "no unseen cell found after 1 candidate"  # no cell is left


def test_a_baseline_says_its_step_and_why_it_ended() -> None:
    search = RandomCellSearch(PARENT, budget=4, batch_size=2, rng=random.Random(0))
    assert search.min_edges == 1 and search.describe() == "step 1 (0/4 candidates)"
    assert search.end_reason is None  # not begun
    search.tell([Observation(p, toy_score(p.genotype)) for p in search.ask()])
    assert search.end_reason is None  # between steps, with budget left
    search.tell([Observation(p, toy_score(p.genotype)) for p in search.ask()])
    assert search.end_reason == "the budget of 4 candidates is spent" and search.ask() == []
    tiny = start_cell("cnn", 2, random.Random(0))  # one edge: one sub-cell in all
    search = RandomCellSearch(tiny, budget=5, batch_size=1, rng=random.Random(0))
    assert len(drive(search)) == 1
    assert search.end_reason == "no unseen cell found after 1 candidate"  # "1 candidates" before


def test_evolution_draws_a_random_cell_once_its_parent_has_no_unseen_child() -> None:
    """A population of one: every child is a flip of the last cell, whose neighbours run out
    long before the space does; the random cells drawn then carry the search through the
    whole space (all the sub-DAGs random search enumerates), never twice the same."""
    parent = start_cell("cnn", 4, random.Random(0))  # 6 edges: few distinct sub-DAGs
    space = {o.proposal.genotype.key for o in drive(
        RandomCellSearch(parent, budget=1000, batch_size=1, rng=random.Random(0)))}  # fmt: skip
    search = CellEvolution(parent, budget=1000, batch_size=1, rng=random.Random(0),
                           population_size=1, tournament_size=1)  # fmt: skip
    told = drive(search)
    keys = [o.proposal.genotype.key for o in told]
    assert len(keys) == len(set(keys)) and set(keys) == space
    origins = [o.proposal.meta["origin"] for o in told]
    assert origins[0] == "random" and "mutation" in origins
    assert origins[1:].count("random") >= 1
    assert search.end_reason == f"no unseen cell found after {len(space)} candidates"
