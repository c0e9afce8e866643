"""NAS-Bench-201 strategies on toy objectives (no data): valid proposals, determinism per seed,
their own rules, and the known optimum of a separable objective."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from autoshrink.errors import ConfigError
from autoshrink.objectives import Score
from autoshrink.spaces.nb201 import NUM_CELLS, NUM_EDGES, NB201Cell
from autoshrink.strategies.aging import AgingPopulation
from autoshrink.strategies.autoshrink_nb201 import LIVE_OPS, AutoShrinkNB201
from autoshrink.strategies.base import Observation, Proposal
from autoshrink.strategies.local_search import LocalSearch
from autoshrink.strategies.random_search import RandomSearch
from autoshrink.strategies.regularized_evolution import RegularizedEvolution
from autoshrink.tabular.comparison import STRATEGIES, make_score, run_once

TARGET = NB201Cell.from_string(
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)
ACCURACY = Score(metric="accuracy", weight=0.0)


def separable(cell: NB201Cell) -> dict[str, float]:
    """Accuracy = the share of edges whose op matches TARGET: optimum TARGET, 1.0."""
    return {"accuracy": sum(a == b for a, b in zip(cell.ops, TARGET.ops, strict=True)) / 6}


def hashed(cell: NB201Cell) -> dict[str, float]:
    """A rugged deterministic objective (a fixed pseudo-random value per cell)."""
    return {"accuracy": random.Random(cell.code).random()}


def drive(strategy, evaluate, budget: int) -> list[tuple[Observation, ...]]:
    """Run ask/tell for ``budget`` queries; returns the told batches."""
    batches, n = [], 0
    while n < budget:
        proposals = strategy.ask()
        if not proposals:
            break
        obs = tuple(Observation(p, ACCURACY(evaluate(p.genotype)), evaluate(p.genotype))
                    for p in proposals)  # fmt: skip
        strategy.tell(obs)
        batches.append(obs)
        n += len(obs)
    return batches


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_valid_and_deterministic(name: str) -> None:
    runs = []
    for seed in (7, 7, 8):
        strategy = STRATEGIES[name](random.Random(seed))
        batches = drive(strategy, hashed, 150)
        cells = [o.proposal.genotype for b in batches for o in b]
        for cell in cells:
            assert isinstance(cell, NB201Cell) and 0 <= cell.code < NUM_CELLS
            assert NB201Cell.from_string(cell.key) == cell
        runs.append([c.code for c in cells])
        best = max((o for b in batches for o in b), key=lambda o: o.score)
        assert strategy.best.score == best.score
    assert runs[0] == runs[1], "same seed, same proposals"
    assert runs[0] != runs[2], "another seed, other proposals"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_tell_checks_the_batch(name: str) -> None:
    strategy = STRATEGIES[name](random.Random(0))
    strategy.ask()
    with pytest.raises(ValueError, match="last ask"):
        strategy.tell([])


@pytest.mark.parametrize("name", ["local", "autoshrink", "autoshrink-edges", "rea", "random"])
def test_separable_objective(name: str) -> None:
    """Hill climbers reach the optimum every time; evolution gets close; edge shrinking and
    random search cannot (the optimum has no 'none' edge and random is blind)."""
    found = []
    for seed in range(10):
        incumbent, _ = run_once(STRATEGIES[name](random.Random(seed)), separable, ACCURACY, 200)
        found.append(separable(NB201Cell.from_code(int(incumbent[-1])))["accuracy"])
    mean = sum(found) / len(found)
    if name in ("local", "autoshrink"):
        assert mean == 1.0
    elif name == "rea":
        assert mean >= 0.85
    else:
        assert mean < 0.85


def test_autoshrink_k1_trajectory_ends_at_separable_optimum() -> None:
    """With K=1 each step prunes exactly one candidate and the target op never loses, so one
    trajectory (start + at most 24 queries) ends at TARGET."""
    for seed in range(20):
        s = AutoShrinkNB201(rng=random.Random(seed), k=1)
        incumbent, _ = run_once(s, separable, ACCURACY, 25)
        assert incumbent[-1] == TARGET.code and s.restarts == 1


def test_random_search_never_repeats() -> None:
    _, queried = run_once(RandomSearch(rng=random.Random(0)), hashed, ACCURACY, 2000)
    assert len(np.unique(queried)) == 2000


def test_the_aging_population_keeps_the_newest_scored_and_picks_a_tournament_winner() -> None:
    cells = [NB201Cell.from_code(code) for code in range(5)]
    obs = [Observation(Proposal(c, i), float(i)) for i, c in enumerate(cells)]
    population = AgingPopulation(3, 2)
    population.add([obs[0], Observation(Proposal(cells[1], 1), -math.inf), *obs[2:]])
    assert list(population.members) == obs[2:]  # the failed one never joined, the oldest left
    rng, twin = random.Random(7), random.Random(7)
    drawn = [population.members[twin.randrange(3)] for _ in range(2)]
    assert population.parent(rng) is max(drawn, key=lambda o: o.score)
    with pytest.raises(ConfigError):
        AgingPopulation(0, 1)


def test_rea_children_are_one_edge_mutations() -> None:
    rea = RegularizedEvolution(rng=random.Random(1), population_size=10, tournament_size=3)
    batches = drive(rea, hashed, 120)
    assert len(rea.population) == 10
    for batch in batches[10:]:
        p = batch[0].proposal
        parent = NB201Cell.from_string(p.meta["parent"])
        diff = [e for e in range(6) if parent.ops[e] != p.genotype.ops[e]]
        assert diff == [p.meta["edge"]] and p.genotype.ops[diff[0]] == p.meta["op"]
    with pytest.raises(ConfigError):
        RegularizedEvolution(rng=random.Random(0), population_size=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # a tournament (drawn with replacement) larger than the population: nearly greedy
        ({"population_size": 2, "tournament_size": 5}, r"tournament_size \(5\) must be at most"),
        ({"population_size": 2.5}, "population_size must be a whole number >= 1, got 2.5"),
        ({"tournament_size": True}, "tournament_size must be a whole number >= 1, got True"),
        ({"rng": 0}, "rng must be a random.Random"),  # was an AttributeError at the first ask
    ],
)
def test_rea_refuses_bad_settings(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RegularizedEvolution(**{"rng": random.Random(0), **kwargs})


def test_local_search_moves_by_one_edge() -> None:
    ls = LocalSearch(rng=random.Random(2))
    prev_current = None
    for _ in range(200):
        (p,) = ls.ask()
        if not p.meta["restart"]:
            cur = ls.current.proposal.genotype
            assert sum(a != b for a, b in zip(cur.ops, p.genotype.ops, strict=True)) == 1
        ls.tell([Observation(p, ACCURACY(hashed(p.genotype)))])
        prev_current = ls.current
    assert prev_current is not None and ls.restarts >= 1


def test_autoshrink_ops_shrinks_candidate_sets() -> None:
    s = AutoShrinkNB201(rng=random.Random(3), k=4, mode="ops")
    seen: set[int] = set()
    sizes_before = None
    restarts = 0
    for _ in range(80):
        proposals = s.ask()
        if proposals[0].meta.get("restart"):
            restarts += 1
            assert "none" not in proposals[0].genotype.ops  # a complete start
            sizes_before = None
        else:
            cur = s.current.proposal.genotype
            sets = s.candidate_sets
            for p in proposals:
                e, op = p.meta["edge"], p.meta["op"]
                assert op in sets[e] and op != cur.ops[e]
                assert p.genotype == cur.with_op(e, op)
            sizes = [len(x) for x in sets]
            if sizes_before is not None:
                assert all(a <= b for a, b in zip(sizes, sizes_before, strict=True))
            sizes_before = sizes
        for p in proposals:
            assert p.genotype.code not in seen  # scored cells are never queried again
            seen.add(p.genotype.code)
        s.tell([Observation(p, ACCURACY(hashed(p.genotype))) for p in proposals])
    assert restarts >= 2


def test_autoshrink_edges_mode_only_removes_edges() -> None:
    s = AutoShrinkNB201(rng=random.Random(4), k=6, mode="edges")
    steps = 0
    for _ in range(60):
        proposals = s.ask()
        if not proposals[0].meta.get("restart"):
            steps += 1
            cur = s.current.proposal.genotype
            for p in proposals:
                assert p.meta["op"] == "none" and cur.ops[p.meta["edge"]] != "none"
            assert len(proposals) <= cur.num_edges
            if steps == 1:  # K = 6 >= live edges: each live edge removed, none scored before
                assert sorted(p.meta["edge"] for p in proposals) == list(range(6))
        s.tell([Observation(p, ACCURACY(hashed(p.genotype))) for p in proposals])
    assert steps >= 20  # most batches shrink; a restart only when no removal helps
    with pytest.raises(ConfigError):
        AutoShrinkNB201(rng=random.Random(0), mode="nodes")


def test_the_incumbent_is_minus_one_until_the_first_candidate_that_scores() -> None:
    calls = []

    def first_three_fail(cell: NB201Cell) -> dict[str, float]:
        calls.append(cell.code)
        return {"accuracy": math.nan} if len(calls) <= 3 else hashed(cell)

    incumbent, queried = run_once(RandomSearch(rng=random.Random(0)), first_three_fail, ACCURACY, 6)
    assert list(incumbent[:3]) == [-1, -1, -1] and incumbent[3] == queried[3] == calls[3]


def test_a_bench_objective_is_accuracy_or_the_score() -> None:
    assert make_score("accuracy", 0.1) == Score(metric="accuracy", weight=0.0)
    assert make_score("score", 0.1, "edgegpu_latency") == Score.cnn(
        weight=0.1, cost="edgegpu_latency"
    )
    with pytest.raises(
        ConfigError, match=r"^objective must be one of \['accuracy', 'score'\], got 'acc'$"
    ):
        make_score("acc", 0.1)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_failed_candidates_are_survived(name: str) -> None:
    def flaky(cell: NB201Cell) -> dict[str, float]:
        return {"accuracy": math.nan} if cell.code % 3 == 0 else hashed(cell)

    incumbent, queried = run_once(STRATEGIES[name](random.Random(5)), flaky, ACCURACY, 100)
    assert (queried >= 0).all()
    assert incumbent[-1] >= 0 and incumbent[-1] % 3 != 0


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_batches_are_numbered_by_step_and_asked_again_until_told(name: str) -> None:
    # the journal and the report read a proposal's step: batch i is step i for every strategy
    strategy = STRATEGIES[name](random.Random(0))
    again = strategy.ask()
    assert again == strategy.ask() and again  # the same batch until tell
    batches = drive(strategy, hashed, 40)
    assert [{o.proposal.step for o in batch} for batch in batches] == [
        {i} for i in range(len(batches))
    ]


def test_rea_draws_its_population_at_random_then_mutates_tournament_winners() -> None:
    rea = RegularizedEvolution(rng=random.Random(0), population_size=3, tournament_size=2)
    batches = drive(rea, hashed, 8)
    parents = [batch[0].proposal.meta["parent"] for batch in batches]
    assert parents[:3] == [None] * 3 and all(p is not None for p in parents[3:])
    for batch in batches[3:]:  # a child differs from its parent on exactly the edge it names
        detail = batch[0].proposal.meta
        parent, child = NB201Cell.from_string(detail["parent"]), batch[0].proposal.genotype
        changed = [e for e in range(len(child.ops)) if child.ops[e] != parent.ops[e]]
        assert changed == [detail["edge"]] and child.ops[detail["edge"]] == detail["op"]


@pytest.mark.parametrize(
    "strategy",
    [
        lambda: RegularizedEvolution(rng=random.Random(0), population_size=NUM_CELLS + 1),
        lambda: RandomSearch(rng=random.Random(0), batch_size=1000),
    ],
)
def test_a_strategy_that_has_asked_for_every_cell_asks_for_none(strategy) -> None:
    s = strategy()
    batches = drive(s, lambda cell: {"accuracy": 50.0}, NUM_CELLS + 1000)
    asked = [o.proposal.genotype.code for b in batches for o in b]
    assert len(asked) == len(set(asked)) == NUM_CELLS  # each cell once
    assert s.ask() == []


@pytest.mark.parametrize("mode", ["edges", "ops"])
def test_autoshrink_restarts_from_complete_cells_then_asks_for_every_cell_once(mode: str) -> None:
    s = AutoShrinkNB201(rng=random.Random(0), k=4, mode=mode)
    complete_cells = len(LIVE_OPS) ** NUM_EDGES
    complete_seen: set[int] = set()
    asked = []
    for batch in drive(s, lambda cell: {"accuracy": 50.0}, NUM_CELLS + 1000):
        cells = [o.proposal.genotype for o in batch]
        if batch[0].proposal.meta.get("restart") and complete_cells - len(complete_seen) >= 100:
            assert "none" not in cells[0].ops  # 1,000 draws miss 100 of 4,096 with p = e^-24
        complete_seen.update(c.code for c in cells if "none" not in c.ops)
        asked += [c.code for c in cells]
    assert len(asked) == len(set(asked)) == NUM_CELLS  # each cell once, then none
    assert s.ask() == []


def test_autoshrink_has_no_shrink_space_before_its_start_cell_is_scored() -> None:
    s = AutoShrinkNB201(rng=random.Random(0))
    assert s.shrink_space() == []
    s.ask()  # the start cell, asked for but not told
    assert s.shrink_space() == []


def test_local_search_moves_to_the_best_neighbour_of_a_round() -> None:
    # first_improvement=False: every neighbour of the current cell is scored, then the best
    ls = LocalSearch(rng=random.Random(0), first_improvement=False)
    (start,) = ls.ask()
    ls.tell([Observation(start, 0.0)])
    scores = {}
    for i in range(24):  # 6 edges x 4 other ops
        (p,) = ls.ask()
        assert p.meta == {"restart": False} and p.genotype.code != start.genotype.code
        scores[p.genotype.code] = float((i * 7) % 24) - 5.0  # one best (18.0), some worse
        ls.tell([Observation(p, scores[p.genotype.code])])
    assert ls.current.proposal.genotype == start.genotype  # no move before the round ends
    ls.ask()
    assert ls.current.score == max(scores.values())
    assert ls.current.proposal.genotype.code == max(scores, key=scores.get)


def test_local_search_moves_at_the_first_better_neighbour_and_restarts_at_an_optimum() -> None:
    ls = LocalSearch(rng=random.Random(0))  # first_improvement by default
    (start,) = ls.ask()
    ls.tell([Observation(start, 0.0)])
    (better,) = ls.ask()
    ls.tell([Observation(better, 1.0)])
    assert ls.current.proposal.genotype == better.genotype and ls.restarts == 0
    for _ in range(23):  # its neighbours but the start (seen): none better, a local optimum
        (p,) = ls.ask()
        ls.tell([Observation(p, 0.5)])
    (p,) = ls.ask()
    assert ls.restarts == 1 and p.meta == {"restart": True}
