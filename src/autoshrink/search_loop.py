"""One session of a search's loop: the strategy it makes, its candidates' seeds, and the loop.

:func:`search_loop` asks the strategy for a batch, trains what the journal lacks (after the
hard constraints and, when the config says so, progressive screening), journals each candidate
the moment it finishes and tells the strategy the batch's observations, until the strategy
stops. :func:`make_strategy` makes the config's strategy from its seed's start cell
(:func:`seeded_start`); :func:`candidate_seed` gives each candidate its training seed, so its
result does not depend on the order or the process it runs in. :class:`JournalWriter` appends
to the journal with SIGINT and SIGTERM held. :func:`autoshrink.search.run_search` runs the loop
in a run folder.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from autoshrink.batch_checks import check_batch, same_quality
from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError, JournalError
from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import Executor, Job
from autoshrink.graph import Cell
from autoshrink.journal import Journal
from autoshrink.json_values import as_read_back
from autoshrink.replay import Replay
from autoshrink.run_folder import factory_name
from autoshrink.screening import ProgressiveScreen, StageResult
from autoshrink.search_records import (
    as_checked,
    observe,
    record,
    retry_listener,
    reuse_record,
    unchecked_constraint,
    violation,
    with_stages,
)
from autoshrink.spaces.cells import start_cell
from autoshrink.stop_signals import StopSignals
from autoshrink.strategies.autoshrink import AutoShrink
from autoshrink.strategies.base import CellStrategy, Observation, Proposal
from autoshrink.strategies.cell_baselines import CellEvolution, RandomCellSearch

if TYPE_CHECKING:
    from autoshrink.evaluators.oneshot import WeightTrail

log = logging.getLogger(__name__)


def candidate_seed(run_seed: int, key: str) -> int:
    """The training seed of a candidate: a hash of the run seed and the cell's canonical key."""
    digest = hashlib.sha256(f"{run_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


#: What makes a ``custom`` strategy (``run_search``'s ``strategy_factory``): called with the
#: config, the start cell (the complete DAG of the seed's node ops, the one every strategy of
#: that seed starts from) and a ``random.Random`` seeded from the config, it returns a new
#: :class:`~autoshrink.strategies.base.CellStrategy`. A resume calls it again and tells the new
#: strategy the journal's observations, so it must ask the same cells when told the same.
StrategyFactory = Callable[[SearchConfig, Cell, random.Random], CellStrategy]

#: The members :func:`make_strategy` checks a custom strategy for.
STRATEGY_MEMBERS = ("ask", "tell", "best", "max_steps", "describe", "end_reason")


def seeded_start(config: SearchConfig) -> tuple[Cell, random.Random]:
    """The start cell of ``config``'s seed (the complete DAG, its node ops drawn from the seed)
    and the generator after that draw, which the strategy goes on with."""
    rng = random.Random(config.seed)
    activation = config.activation if config.task == "cnn" else None
    return start_cell(config.task, config.nodes, rng, activation), rng


def make_strategy(
    config: SearchConfig,
    rank: Callable[[list[Cell]], list[float]] | None = None,
    factory: StrategyFactory | None = None,
) -> CellStrategy:
    """The strategy of ``config`` (AutoShrink, a baseline, or with ``strategy="custom"`` the one
    ``factory`` makes), its start cell drawn from the seed.

    All strategies of one seed share the start cell, so they search the same space. ``rank``:
    AutoShrink's zero-cost screen (``screening="zero-cost"``, see docs/zero-cost.md).
    """
    start, rng = seeded_start(config)
    if config.strategy == "custom":
        if factory is None:
            raise ConfigError("strategy 'custom' needs a strategy_factory")
        strategy = factory(config, start, rng)
        if missing := [m for m in STRATEGY_MEMBERS if not hasattr(strategy, m)]:
            raise ConfigError(
                f"strategy_factory {factory_name(factory)} returned a {type(strategy).__name__}, "
                f"which lacks {', '.join(missing)} (see autoshrink.strategies.base.CellStrategy)"
            )
        bound = strategy.max_steps  # read once, at the start: the guard against no end
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
            raise ConfigError(
                f"strategy_factory {factory_name(factory)} returned a strategy whose max_steps "
                f"is {bound!r}; it must be an int >= 1, the most batches it asks for (step 0 "
                "included)"
            )
        return strategy
    if config.strategy == "autoshrink":
        return AutoShrink(
            start,
            k=config.k,
            keep_fraction=config.keep_fraction,
            patience=config.patience,
            score_start=config.score_start,
            rng=rng,
            rank=rank,
        )
    budget = config.budget or config.default_budget()
    # AutoShrink never goes below its edge target: the baselines search the same cells
    min_edges = max(1, round(start.num_edges * config.keep_fraction))
    if config.strategy == "random":
        return RandomCellSearch(
            start, budget=budget, batch_size=config.k, rng=rng, min_edges=min_edges
        )
    return CellEvolution(
        start,
        budget=budget,
        batch_size=config.k,
        rng=rng,
        min_edges=min_edges,
        population_size=config.population_size,
        tournament_size=config.tournament_size,
    )


@dataclass(frozen=True)
class LoopOutcome:
    """What :func:`search_loop` ends with: the best and start observations, the evaluations
    and trainings counted, the strategy's reason for stopping early (``None`` when it ran its
    course), with zero-cost screening what ranked this session's steps, why it ended, and the
    steps whose scored candidates all reached one quality
    (:func:`~autoshrink.batch_checks.warn_cost_only`)."""

    best: Observation | None
    start: Observation | None
    evaluations: int
    trained: int
    stopped: str | None
    screening: dict[str, Any] | None
    ended: str | None = None
    cost_only: tuple[tuple[int, float], ...] = ()  # (step, metric): steps whose cells all tied


@dataclass(frozen=True)
class JournalWriter:
    """Appends a session's records to its journal, each with SIGINT and SIGTERM held (a record
    is written whole or not at all) and stamped with the run's ``config_hash``
    (:attr:`Replay.config_stamp`) and its data's ``data_hash`` (:attr:`Replay.data_stamp`),
    and keeps the replay's view of the journal current."""

    journal: Journal
    replay: Replay
    signals: StopSignals

    def _append(self, rec: dict[str, Any]) -> None:
        data = self.replay.data_stamp
        stamps = {"config_hash": self.replay.config_stamp} | ({"data_hash": data} if data else {})
        self.journal.append(rec | stamps)

    def candidate(self, rec: dict[str, Any]) -> None:
        """A candidate's record: from now on the candidate is done."""
        with self.signals.held():
            self._append(rec)
            self.replay.done[rec["key"]] = as_read_back(rec)

    def event(self, rec: dict[str, Any]) -> None:
        """A record a resume does not replay (a retry, a reuse)."""
        with self.signals.held():
            self._append(rec)

    def stage(self, rec: dict[str, Any]) -> None:
        """A progressive screening stage's record."""
        with self.signals.held():
            self._append(rec)
            self.replay.stages[rec["key"], rec["stage"]] = as_read_back(rec)

    def reuses(self, proposals: list[Proposal]) -> None:
        """Journal each proposal an earlier step evaluated (once, also across resumes)."""
        for i, p in enumerate(proposals):
            rec = self.replay.done.get(p.genotype.key)
            if rec is None or rec["step"] == p.step:
                continue
            self.replay.reuses_met.add((p.step, rec["key"]))
            if (p.step, rec["key"]) not in self.replay.reused:
                self.event(reuse_record(p, i, rec["step"]))
                self.replay.reused.add((p.step, rec["key"]))


@dataclass
class StepTrainer:
    """Trains the candidates of one batch that the journal lacks and journals each (after the
    hard constraints and progressive screening); counts what it trained."""

    config: SearchConfig
    evaluator: Evaluator
    executor: Executor
    writer: JournalWriter
    screen: ProgressiveScreen | None
    trail: WeightTrail | None
    shown: bool | None  # tqdm's disable: None shows the bars on a terminal only
    trained: int = field(default=0, init=False)

    def step(self, strategy: CellStrategy, proposals: list[Proposal]) -> list[dict[str, Any]]:
        """Evaluate ``proposals`` (what an earlier step or session recorded is not trained
        again); their records, in order."""
        done = self.writer.replay.done
        if self.trail is not None:  # before the step journals or trains anything
            waiting = sum(p.genotype.key not in done for p in proposals)
            self.trail.before_step(strategy, proposals, waiting)
        self.writer.reuses(proposals)
        seeds = [candidate_seed(self.config.seed, p.genotype.key) for p in proposals]
        checked = reject_violations(
            proposals, seeds, done, self.evaluator, self.config, self.writer
        )
        screened: dict[int, list[StageResult]] = {}
        if self.screen is not None and self.screen.ready:
            screened = screen_batch(
                self.screen, proposals, seeds, done, self.executor, self.evaluator,
                self.writer, checked,
            )  # fmt: skip
        todo = [i for i, p in enumerate(proposals) if p.genotype.key not in done]
        with tqdm(
            total=len(proposals),
            initial=len(proposals) - len(todo),
            desc=strategy.describe(),
            unit="cand",
            leave=False,
            disable=self.shown,
        ) as bar:  # closed before a stop's message
            finished = evaluations(
                self.executor, self.evaluator, proposals, todo, seeds, checked, self.writer
            )
            for i, evaluation in finished:
                score = self.score(evaluation, proposals[i].genotype.key)
                if i in screened:
                    evaluation = with_stages(evaluation, screened[i])
                self.writer.candidate(record(proposals[i], i, seeds[i], evaluation, score))
                self.trained += 1
                bar.update(1)
        return [done[p.genotype.key] for p in proposals]

    def score(self, evaluation: Evaluation, key: str) -> float:
        """The score of an evaluation (``-inf`` unless it is ``"ok"``); an evaluation that
        lacks a metric the score reads is a :class:`ConfigError`."""
        if evaluation.status != "ok":
            return -math.inf
        if missing := self.config.score.missing(evaluation.metrics):
            raise ConfigError(
                f"the score reads {', '.join(missing)}, which the evaluation of {key} lacks "
                f"(it has {', '.join(sorted(evaluation.metrics))}); score the metrics the "
                "evaluator gives"
            )
        return self.config.score(evaluation.metrics)

    def learn(self, strategy: CellStrategy, proposals: list[Proposal]) -> None:
        """What follows a step that the strategy was told: the screen learns its thresholds
        from the first batch that trained (a constraint may reject earlier ones), and a
        one-shot trail keeps the winner's weights."""
        records = [self.writer.replay.done[p.genotype.key] for p in proposals]
        trained_any = any(r["status"] == "ok" for r in records)
        if self.screen is not None and not self.screen.ready and trained_any:
            self.screen.learn(records)
        if self.trail is not None:
            self.trail.after_step(strategy, proposals)


def asked(replay: Replay, proposals: list[Proposal], strategy: str) -> None:
    """Tell ``replay`` the batch the strategy asked for (:meth:`Replay.asked`); a custom
    strategy that asks for other cells than the journal's is told it must draw from its rng."""
    try:
        replay.asked(proposals)
    except JournalError as err:
        if strategy != "custom":
            raise
        raise JournalError(
            f"{err}, or the custom strategy asked for other cells when told the same "
            "observations (it must draw from the rng it is given)"
        ) from None


def search_loop(
    config: SearchConfig,
    evaluator: Evaluator,
    executor: Executor,
    journal: Journal,
    replay: Replay,
    signals: StopSignals,
    progress: bool,
    trail: WeightTrail | None = None,
    strategy_factory: StrategyFactory | None = None,
) -> LoopOutcome:
    """Ask, train what the journal lacks, journal, tell -- until the strategy stops (the
    config's, or the one ``strategy_factory`` makes); a one-shot ``trail`` hands each step the
    current cell's weights and keeps the winner's."""
    screened_before = screened_out(replay.done)  # earlier sessions'
    ranker = None
    if config.screening == "zero-cost":  # before anything trains: bad settings fail here
        from autoshrink.evaluators.factory import build_ranker

        ranker = build_ranker(config, lambda key: candidate_seed(config.seed, key))
    strategy = make_strategy(config, ranker, strategy_factory)
    screen = None
    if config.screening == "progressive":  # checks the schedule against the data set
        screen = ProgressiveScreen(
            config.stages(), evaluator, config.score, replay.stages, journal.path.parent
        )
    shown = None if progress else True  # tqdm's None: a bar on a terminal only, not in a log
    steps = StepTrainer(
        config, evaluator, executor, JournalWriter(journal, replay, signals), screen, trail, shown
    )
    start_obs: Observation | None = None
    evaluations = 0
    cost_only: list[tuple[int, float]] = []  # (step, metric) of steps whose cells all tied
    last_step, batches, max_steps = -1, 0, strategy.max_steps  # read once, as the bar's total
    start, _ = seeded_start(config)
    with tqdm(
        total=max_steps, desc=f"{config.strategy} steps", unit="step", disable=shown
    ) as steps_bar:
        while proposals := strategy.ask():
            batches += 1
            check_batch(proposals, last_step, batches, max_steps, config.strategy, start)
            last_step = proposals[0].step
            if trail is not None and replay.retrying:
                replay.keep_failed(trail.stranded(strategy, proposals, replay.retrying))
            asked(replay, proposals, config.strategy)
            records = steps.step(strategy, proposals)
            observations = [observe(p, r) for p, r in zip(proposals, records, strict=True)]
            evaluations += len(observations)
            if proposals[0].step == 0:
                start_obs = observations[0]
            if (same := same_quality(observations, config.score.metric)) is not None:
                cost_only.append((proposals[0].step, same))
            strategy.tell(observations)
            steps.learn(strategy, proposals)
            steps_bar.update(1)
            best = strategy.best
            steps_bar.set_postfix(best=f"{best.score:.4f}" if best else "-")
        steps_bar.total = steps_bar.n  # max_steps is an upper bound: the search has ended
        steps_bar.refresh()
    stopped = getattr(strategy, "stop_reason", None)
    if stopped is None:
        replay.finish()
        if (off_path := replay.off_path_record()) is not None:  # a retrained winner's doing
            steps.writer.event(off_path)
    else:
        # result.stopped says it to the caller (the command line prints it as its error line)
        log.debug("search stopped early: %s", stopped)
    screening = None if ranker is None else ranker.summary()
    if screen is not None:
        this_session = screened_out(replay.done) - screened_before
        screening = screen.summary() | {"screened_out": this_session}
    return LoopOutcome(
        strategy.best,
        start_obs,
        evaluations,
        steps.trained,
        stopped,
        screening,
        strategy.end_reason,
        tuple(cost_only),
    )


def evaluations(
    executor: Executor,
    evaluator: Evaluator,
    proposals: list[Proposal],
    todo: list[int],
    seeds: list[int],
    checked: Mapping[str, Mapping[str, float]],
    writer: JournalWriter,
) -> Iterator[tuple[int, Evaluation]]:
    """``evaluator``'s evaluations of the ``todo`` proposals through ``executor``, by batch
    position, as they finish: each keeps the profile a constraint read (``checked``), and each
    retry is journalled. A step's training and each stage of progressive screening run this."""
    jobs = [
        Job(proposals[i].genotype, seeds[i], checked.get(proposals[i].genotype.key, {}))
        for i in todo
    ]
    on_retry = retry_listener(writer.event, proposals, todo, seeds)
    for j, evaluation in executor.run(evaluator, jobs, on_retry):
        i = todo[j]
        yield i, as_checked(evaluation, checked.get(proposals[i].genotype.key))


def screened_out(done: Mapping[str, Mapping[str, Any]]) -> int:
    """How many of the journal's candidates progressive screening left out."""
    return sum(r["status"] == "screened" for r in done.values())


def reject_violations(
    proposals: list[Proposal],
    seeds: list[int],
    done: Mapping[str, Any],
    evaluator: Evaluator,
    config: SearchConfig,
    writer: JournalWriter,
) -> dict[str, dict[str, float]]:
    """Journal each proposal not yet recorded whose profile breaks a hard constraint as
    ``"rejected"`` (before it trains); the bounded metrics of every profiled proposal by key,
    as the check read them."""
    checked: dict[str, dict[str, float]] = {}
    if not config.constraints:  # nothing to check, nothing profiled
        return checked
    for i, p in enumerate(proposals):
        if p.genotype.key in done:
            continue
        profile = evaluator.profile(p.genotype)
        if unchecked := unchecked_constraint(profile, config):
            raise ConfigError(
                f"constraint {unchecked[0]}: {type(evaluator).__qualname__}.profile of cell "
                f"{p.genotype.key} {unchecked[1]}; a hard constraint is checked on the profile, "
                "before training"
            )
        if why := violation(profile, config):
            writer.candidate(record(p, i, seeds[i], why, float("-inf")))
        bounded = [m for m in config.constraints if m in profile]
        checked[p.genotype.key] = {m: profile[m] for m in bounded}
    return checked


def screen_batch(
    screen: ProgressiveScreen,
    proposals: list[Proposal],
    seeds: list[int],
    done: dict[str, dict[str, Any]],
    executor: Executor,
    evaluator: Evaluator,
    writer: JournalWriter,
    checked: Mapping[str, Mapping[str, float]],
) -> dict[int, list[StageResult]]:
    """Screen a batch progressively: every candidate not rejected by a constraint, nor recorded
    in an earlier step, goes through the stages (what the journal lacks is trained through
    ``executor``; a stage keeps the ``checked`` profile a constraint read, as a candidate's
    record does), and each loser is journalled as ``"screened"``; returns the survivors' stage
    results by batch position."""
    keys = [p.genotype.key for p in proposals]
    entrants = [  # a cell recorded in an earlier step keeps its record (screened or trained)
        i
        for i, k in enumerate(keys)
        if k not in done
        or (done[k]["step"] == proposals[i].step and done[k]["status"] != "rejected")
    ]

    def run(stage_evaluator: Evaluator, todo: list[int]) -> Iterator[tuple[int, Evaluation]]:
        return evaluations(executor, stage_evaluator, proposals, todo, seeds, checked, writer)

    def journal_stage(i: int, stage: int, evaluation: Evaluation, score: float) -> None:
        rec = record(proposals[i], i, seeds[i], evaluation, score)
        writer.stage(rec | {"type": "stage", "stage": stage})

    survivors, results = screen.screen(keys, entrants, run, journal_stage)
    for i in entrants:
        if i in survivors or keys[i] in done:
            continue
        stages = results[i]
        loser = Evaluation(
            evaluator.profile(proposals[i].genotype),
            "screened",
            sum(r.seconds for r in stages),
            {
                "screened_at_stage": stages[-1].stage,
                "stages": [r.summary() for r in stages],
                "images_trained": sum(r.images for r in stages),
            },
        )
        writer.candidate(record(proposals[i], i, seeds[i], loser, -math.inf))
    return {i: results[i] for i in survivors}
