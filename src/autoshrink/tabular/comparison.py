"""Simulated strategy comparison on NAS-Bench-201: R seeded runs of each strategy at a budget.

Each run joins a strategy (ask/tell), a :class:`~autoshrink.tabular.SearchEvaluator`
(validation accuracy and cost: all a search may see) and a :class:`~autoshrink.objectives.Score`
(``accuracy``: the validation accuracy; ``score``: accuracy - weight * (log10 cost - 6)). The
cost is the cell's MACs, or with ``cost=`` an HW-NAS-Bench metric
(:class:`~autoshrink.hardware.hwnasbench.HWNASBenchCost`, e.g. ``edgegpu_latency``) that a
:class:`~autoshrink.evaluators.costed.CostedEvaluator` adds to the search's metrics. After
every query the loop records the cell the strategy would return -- the best-scoring cell seen,
ties to fewer edges (:func:`~autoshrink.strategies.base.better`) -- and only afterwards, through
a :class:`~autoshrink.tabular.Reporter`, looks up the 200-epoch *test* accuracy of those cells.

A query is one evaluated *distinct* cell, for every strategy: a repeated proposal (regularized
evolution makes some) is answered from the run's own history and costs nothing; a batch that
would overrun the budget is cut. Runs are
seeded ``seed + run`` for every strategy (common random numbers). Speed: one array read per
query and small frozen records, so 100 runs x 200 queries of a strategy take about a second.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from tqdm import tqdm

from autoshrink.errors import BenchmarkError, ConfigError
from autoshrink.hardware.hwnasbench import HWNASBenchCost
from autoshrink.objectives import Score
from autoshrink.ranges import SEED, check_value
from autoshrink.spaces.nb201 import NB201Cell
from autoshrink.strategies.autoshrink_nb201 import AutoShrinkNB201
from autoshrink.strategies.base import Observation, Strategy, better, require_positive
from autoshrink.strategies.local_search import LocalSearch
from autoshrink.strategies.random_search import RandomSearch
from autoshrink.strategies.regularized_evolution import RegularizedEvolution
from autoshrink.tabular import NB201Tables, Reporter, SearchEvaluator

#: Strategy name -> factory of a fresh strategy from a seeded generator.
STRATEGIES: Mapping[str, Callable[[random.Random], Strategy]] = MappingProxyType(
    {
        "random": lambda rng: RandomSearch(rng=rng),
        "rea": lambda rng: RegularizedEvolution(rng=rng, population_size=10, tournament_size=3),
        "local": lambda rng: LocalSearch(rng=rng),
        "autoshrink": lambda rng: AutoShrinkNB201(rng=rng, k=4, mode="ops"),
        "autoshrink-edges": lambda rng: AutoShrinkNB201(rng=rng, k=6, mode="edges"),
    }
)
#: AutoShrink (ops mode, K=4) screened by a zero-cost proxy: each step trains the K best-ranked
#: decisions of the whole shrink space (docs/zero-cost.md); needs ``run_bench(zc_rank=...)``.
ZC_STRATEGY = "autoshrink-zc"
CHECKPOINTS: tuple[int, ...] = (25, 50, 100, 200)
OBJECTIVES: tuple[str, ...] = ("accuracy", "score")
MACS = "macs"
#: Proposals in a row of cells already queried after which a run counts as stuck and stops.
MAX_REPEATS = 10_000


def make_score(objective: str, weight: float, cost: str = MACS) -> Score:
    """``accuracy``: validation accuracy (fraction); ``score``: the CNN efficiency score with
    ``cost`` (a metric name) as its cost term."""
    if objective == "accuracy":
        return Score(metric="accuracy", weight=0.0)
    if objective == "score":
        return Score.cnn(weight=weight, cost=cost)
    raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")


def run_once(
    strategy: Strategy, evaluate: Callable[[NB201Cell], dict[str, float]], score: Score, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """One search of ``budget`` queries: ``(incumbent code after each query, queried codes)``.

    A query is one *distinct* cell: a strategy that proposes a cell it already saw (regularized
    evolution can) is told its result again for free, as a search would look it up in its own
    history. A strategy that stops early, or proposes only cells it saw for
    :data:`MAX_REPEATS` proposals in a row, keeps its last incumbent for the remaining queries
    (``-1`` before its first result).
    """
    incumbent = np.full(budget, -1, dtype=np.int64)
    queried = np.full(budget, -1, dtype=np.int64)
    seen: dict[int, dict[str, float]] = {}
    best: Observation | None = None
    n = repeats = 0
    while n < budget and repeats < MAX_REPEATS:
        proposals = strategy.ask()
        if not proposals:
            break
        observations = []
        for proposal in proposals:
            if n == budget:
                break
            code = proposal.genotype.code
            if code in seen:
                repeats += 1
                metrics = seen[code]
            else:
                repeats = 0
                metrics = seen[code] = evaluate(proposal.genotype)
            obs = Observation(proposal, score(metrics), metrics)
            observations.append(obs)
            if better(obs, best):
                best = obs
            if repeats == 0:
                queried[n] = code
                incumbent[n] = -1 if best is None else best.proposal.genotype.code
                n += 1
        if len(observations) < len(proposals):
            break
        strategy.tell(observations)
    if n < budget:
        incumbent[n:] = incumbent[n - 1] if n else -1
    return incumbent, queried


@dataclass
class StrategyTrace:
    """Every run of one strategy: ``incumbent[run, q]`` and ``queried[run, q]`` cell codes."""

    name: str
    seeds: list[int]
    incumbent: np.ndarray
    queried: np.ndarray


@dataclass
class BenchResult:
    """A finished comparison: traces, and the reporting arrays looked up after the searches.

    ``cost_name`` is the score's cost term (``"macs"`` or an HW-NAS-Bench metric) and
    ``cost_by_code`` its value for every cell (``macs_by_code`` for MACs).
    """

    config: dict[str, Any]
    traces: list[StrategyTrace]
    test_by_code: np.ndarray  # percent
    valid_by_code: np.ndarray  # fraction
    macs_by_code: np.ndarray
    score: Score
    optimum: tuple[float, NB201Cell]
    cost_name: str
    cost_by_code: np.ndarray
    checkpoints: tuple[int, ...] = field(default=CHECKPOINTS)


def checkpoints_for(budget: int) -> tuple[int, ...]:
    """The standard checkpoints within ``budget``, and ``budget`` itself."""
    return tuple(sorted({q for q in CHECKPOINTS if q <= budget} | {budget}))


def check_cost(cost: HWNASBenchCost, tables: NB201Tables, dataset: str, *, logged: bool) -> None:
    """Fail early, naming the first such cell, when ``cost`` is for another data set, lacks
    a value for some cell (a search could meet any cell, and the reported optimum is over all),
    or, where the score takes its log10 (``logged``), is <= 0 for some cell (its score would be
    -inf: the cell dropped silently from the search and the optimum)."""
    if cost.dataset != dataset:
        raise ConfigError(f"cost {cost.name} is for {cost.dataset}, but the bench runs {dataset}")
    source = cost.source or "the cost"
    index_of_code = tables.index.index_of_code

    def first_of(codes: np.ndarray) -> tuple[int, str]:
        code = int(codes[np.argmin(index_of_code[codes])])
        return (
            code,
            f"official index {index_of_code[code]} ({NB201Cell.from_code(code).arch_string()})",
        )

    missing = np.flatnonzero(np.isnan(cost.by_code))
    if missing.size:
        _, cell = first_of(missing)
        raise BenchmarkError(
            f"{source} has no {cost.name} of {dataset} for {missing.size} of "
            f"{cost.by_code.size} cells, e.g. {cell}"
        )
    not_positive = np.flatnonzero(cost.by_code <= 0)
    if logged and not_positive.size:
        code, cell = first_of(not_positive)
        others = not_positive.size - 1
        also = f" and {others} more cell{'s' if others > 1 else ''}" if others else ""
        raise BenchmarkError(
            f"{source}: {cost.name} of {dataset} is {cost.by_code[code]:g} for {cell}{also}; "
            "the score's cost term is its log10, so costs must be > 0"
        )


def run_bench(
    tables: NB201Tables,
    *,
    strategies: Sequence[str],
    runs: int,
    queries: int,
    dataset: str,
    objective: str = "accuracy",
    weight: float = 0.1,
    seed: int = 0,
    search_epochs: int = 12,
    progress: bool = False,
    cost: HWNASBenchCost | None = None,
    zc_rank: Callable[[list[NB201Cell]], Sequence[float]] | None = None,
) -> BenchResult:
    """Run every strategy ``runs`` times at a budget of ``queries`` (see the module docstring).

    ``cost``: an HW-NAS-Bench metric of ``dataset`` as the cost term of ``objective="score"``
    (``None``: MACs); it must have a value for every cell. ``zc_rank``: the zero-cost scores
    strategy :data:`ZC_STRATEGY` ranks by (not counted as queries). ``progress``: a bar of the
    runs on a terminal.
    """
    known = {*STRATEGIES, ZC_STRATEGY}
    if isinstance(strategies, str):  # iterating it would name its letters
        raise ConfigError(f"strategies must be a list of names, got the string {strategies!r}")
    unknown = [s for s in strategies if s not in known]
    if not strategies:
        raise ConfigError(f"no strategy given; expected some of {sorted(known)}")
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; expected some of {sorted(known)}")
    if twice := sorted({s for s in strategies if list(strategies).count(s) > 1}):
        raise ConfigError(f"strategies named twice: {', '.join(twice)}")
    if ZC_STRATEGY in strategies and zc_rank is None:
        raise ConfigError(f"strategy {ZC_STRATEGY} needs zero-cost scores (zc_rank)")
    require_positive(runs=runs, queries=queries)
    check_value("seed", seed, SEED)  # a negative one: runs seed + r would repeat each other
    check_value("weight", weight, "finite and >= 0")
    if cost is not None and objective != "score":
        raise ConfigError(f"cost {cost.name} needs objective 'score', got {objective!r}")
    evaluator = SearchEvaluator(tables, dataset=dataset, epochs=search_epochs)
    search: Callable[[NB201Cell], dict[str, float]] = evaluator
    if cost is not None:
        from autoshrink.evaluators.costed import CostedEvaluator  # imports torch: only here

        check_cost(cost, tables, evaluator.dataset, logged=weight > 0)
        search = CostedEvaluator(evaluator, [cost])
    score = make_score(objective, weight, MACS if cost is None else cost.name)
    traces = []
    shown = None if progress else True  # tqdm's None: on a terminal only
    with tqdm(total=len(strategies) * runs, unit="run", leave=False, disable=shown) as bar:
        for name in strategies:
            bar.set_description(name)
            seeds = [seed + r for r in range(runs)]
            inc = np.empty((runs, queries), dtype=np.int64)
            qs = np.empty((runs, queries), dtype=np.int64)
            for r, s in enumerate(seeds):
                strategy: Strategy
                if name == ZC_STRATEGY:
                    strategy = AutoShrinkNB201(rng=random.Random(s), k=4, mode="ops", rank=zc_rank)
                else:
                    strategy = STRATEGIES[name](random.Random(s))
                inc[r], qs[r] = run_once(strategy, search, score, queries)
                bar.update(1)
            traces.append(StrategyTrace(name, seeds, inc, qs))
    reporter = Reporter(tables, dataset=dataset, epochs=200)
    config = {
        "benchmark": "nb201",
        "dataset": evaluator.dataset,
        "strategies": list(strategies),
        "runs": runs,
        "queries": queries,
        "objective": objective,
        "weight": weight if objective == "score" else None,
        "cost": MACS if cost is None else cost.name,
        "seed": seed,
        "search_signal": f"{search_epochs}-epoch validation accuracy",
        "reported": "200-epoch test accuracy",
    }
    return BenchResult(
        config=config,
        traces=traces,
        test_by_code=reporter.test_by_code(),
        valid_by_code=evaluator.validation_by_code(),
        macs_by_code=evaluator.macs_by_code(),
        score=score,
        optimum=reporter.optimum(),
        cost_name=MACS if cost is None else cost.name,
        cost_by_code=evaluator.macs_by_code() if cost is None else cost.by_code,
        checkpoints=checkpoints_for(queries),
    )


# -- summaries (reporting side: test numbers appear only here) --------------------------------


def objective_values(result: BenchResult, codes: np.ndarray) -> np.ndarray:
    """The search objective of cells (by code), vectorised like :class:`Score` (``-inf`` for a
    non-positive cost; NaN where the validation accuracy is missing)."""
    s = result.score
    value = s.slope * (result.valid_by_code[codes] - s.offset)
    if s.weight:
        cost = result.cost_by_code[codes]
        with np.errstate(divide="ignore", invalid="ignore"):
            term = s.weight * (np.log10(cost) - 6.0)
        value = np.where(cost > 0, value - term, -np.inf)
    return value


def score_optimum(result: BenchResult) -> int:
    """The code of the cell of highest objective value in the whole benchmark (lowest code
    among ties)."""
    return int(np.nanargmax(objective_values(result, np.arange(len(result.valid_by_code)))))


def summary_rows(result: BenchResult) -> list[dict[str, Any]]:
    """One row per strategy and checkpoint: the returned cells' mean/std test accuracy (%),
    mean validation accuracy (%), mean MACs, mean/std objective score, and with an
    HW-NAS-Bench cost its mean as ``cost_mean``."""
    rows = []
    for trace in result.traces:
        for q in result.checkpoints:
            codes = trace.incumbent[:, q - 1]
            test = result.test_by_code[codes]
            score = objective_values(result, codes)
            rows.append(
                {
                    "strategy": trace.name,
                    "queries": q,
                    "runs": len(codes),
                    "mean": float(test.mean()),
                    "std": float(test.std()),
                    "valid_mean": float(100.0 * result.valid_by_code[codes].mean()),
                    "macs_mean": float(result.macs_by_code[codes].mean()),
                    "score_mean": float(score.mean()),
                    "score_std": float(score.std()),
                }
            )
            if result.cost_name != MACS:
                rows[-1]["cost_mean"] = float(result.cost_by_code[codes].mean())
    return rows


def curves(result: BenchResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Strategy -> (mean, std) of the returned cell's test accuracy after 1..Q queries."""
    out = {}
    for trace in result.traces:
        test = result.test_by_code[trace.incumbent]  # (runs, Q)
        out[trace.name] = (test.mean(axis=0), test.std(axis=0))
    return out


def score_curves(result: BenchResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Strategy -> (mean, std) of the returned cell's objective value after 1..Q queries."""
    out = {}
    for trace in result.traces:
        score = objective_values(result, trace.incumbent)  # (runs, Q)
        out[trace.name] = (score.mean(axis=0), score.std(axis=0))
    return out


def pareto_front(accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Positions of the points no other point beats on both higher accuracy and lower cost,
    by increasing cost."""
    order = np.lexsort((-accuracy, cost))  # by cost, then best accuracy first
    keep, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            keep.append(i)
            best = accuracy[i]
    return np.asarray(keep, dtype=np.int64)


def pareto_rows(result: BenchResult, index_of_code: np.ndarray) -> list[dict[str, Any]]:
    """Per strategy, the accuracy-vs-cost front of the cells it returned at the full budget
    (all runs pooled; test accuracy); ``runs`` counts the runs that returned each cell. Rows
    give ``macs`` and, with an HW-NAS-Bench cost, its value under the metric's name."""
    rows = []
    for trace in result.traces:
        codes, counts = np.unique(trace.incumbent[:, -1], return_counts=True)
        test, cost = result.test_by_code[codes], result.cost_by_code[codes]
        for i in pareto_front(test, cost):
            code = int(codes[i])
            rows.append(
                {
                    "strategy": trace.name,
                    "index": int(index_of_code[code]),
                    "arch": NB201Cell.from_code(code).arch_string(),
                    **cost_values(result, code),
                    "accuracy": float(test[i]),
                    "runs": int(counts[i]),
                }
            )
    return rows


def cost_values(result: BenchResult, code: int) -> dict[str, float]:
    """``{"macs": ...}`` of a cell, and its HW-NAS-Bench cost under the metric's name."""
    out = {MACS: float(result.macs_by_code[code])}
    out[result.cost_name] = float(result.cost_by_code[code])
    return out
