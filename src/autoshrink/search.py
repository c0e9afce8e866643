"""The search loop: joins a strategy, an evaluator, an executor and the score; keeps the journal.

:func:`run_search` runs (or resumes) one search in a run folder -- AutoShrink, or a baseline
on the same cell space (``strategy`` ``random`` or ``rea``), or a strategy of one's own that
a ``strategy_factory`` makes (``strategy`` ``custom``). The folder's files are described
in :mod:`autoshrink.run_folder`; each candidate is journalled the moment it finishes
(:mod:`autoshrink.search_records`), and the search ends with ``result.json``
(:mod:`autoshrink.search_result`).

Resuming replays the journal: the strategy is rebuilt from the seed and told the recorded
results in order, so it asks for exactly the same candidates, and only those without a record
are trained. Each candidate's seed is derived from the run seed and the cell's canonical key,
so its result does not depend on the order or the process it runs in. A resume refuses a
config whose fingerprint changed (:func:`~autoshrink.run_folder.check_fingerprint`) and a
journal record the strategy does not ask for (:class:`~autoshrink.replay.Replay`). SIGINT and
SIGTERM stop the search between journal records (:class:`~autoshrink.stop_signals.StopSignals`).
See docs/reliability.md."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from autoshrink.atomic_write import remove_dead_temporaries
from autoshrink.batch_checks import check_batch, same_quality, warn_cost_only
from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError, JournalError
from autoshrink.evaluators.base import Evaluation, Evaluator, proxy_network
from autoshrink.executors.base import Executor, InProcessExecutor, Job
from autoshrink.graph import Cell
from autoshrink.journal import Journal, RunLock
from autoshrink.json_values import as_read_back
from autoshrink.objectives import Score
from autoshrink.outputs import claim_folder
from autoshrink.replay import Replay
from autoshrink.run_folder import (
    BUILT_IN_FACTORY,
    JOURNAL,
    RESULT,
    Factories,
    check_custom,
    check_resumable,
    prepare_run_dir,
    unstarted,
)
from autoshrink.screening import ProgressiveScreen, StageResult
from autoshrink.search_records import (
    all_rejected,
    as_checked,
    observe,
    record,
    retry_listener,
    reuse_record,
    violation,
    with_stages,
)
from autoshrink.search_result import SearchResult, images_trained, write_result
from autoshrink.spaces.cells import start_cell
from autoshrink.stop_signals import SearchInterrupted, StopSignals
from autoshrink.strategies.autoshrink import AutoShrink
from autoshrink.strategies.base import CellStrategy, Observation, Proposal, check_population
from autoshrink.strategies.cell_baselines import CellEvolution, RandomCellSearch
from autoshrink.user_files import read_json_file

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


def check_arguments(
    run_dir: Path,
    config: SearchConfig | None,
    resume: bool,
    strategy_factory: StrategyFactory | None,
    retry_failed: bool,
    repair: bool,
) -> None:
    """Refuse :func:`run_search`'s arguments that cannot go together, before anything is made
    (and warn of a strategy factory that only the running script defines)."""
    if (retry_failed or repair) and not resume:
        raise ConfigError(
            "retry_failed and repair (--retry-failed, --repair) need resume (--resume)"
        )
    if config is None and not resume:  # before anything is made
        raise ConfigError(
            f"a new search in {run_dir} needs a config (preset(...)); resume=True continues "
            "the one there"
        )
    if config is not None:
        check_custom(config.strategy, factory_name(strategy_factory), resume)
    if config is not None and not resume and config.strategy == "rea":
        # a new search only: a run folder made before this check must still resume
        check_population(config.population_size, config.tournament_size)
    if not resume and (name := factory_name(strategy_factory) or "").startswith("__main__."):
        log.warning(
            "strategy_factory %s is defined in the script run: its resume needs a factory of "
            "that name, which only this script run again gives (define it in a module to "
            "import)",
            name,
        )


def make_evaluator(
    config: SearchConfig,
    evaluator_factory: Callable[[SearchConfig], Evaluator] | None,
    run_dir: Path,
) -> tuple[Evaluator, WeightTrail | None]:
    """The search's evaluator (``evaluator_factory``'s, or the built-in one the config names)
    and, for a one-shot search, the trail of weights it keeps in ``run_dir/oneshot``."""
    if evaluator_factory is None:
        from autoshrink.evaluators.factory import build_evaluator

        evaluator_factory = build_evaluator
    evaluator = evaluator_factory(config)
    if config.evaluator != "oneshot":
        return evaluator, None
    from autoshrink.evaluators.oneshot import bind_weight_trail  # imports torch

    return evaluator, bind_weight_trail(evaluator, run_dir)


def run_search(
    run_dir: str | Path,
    config: SearchConfig | None = None,
    *,
    resume: bool = False,
    evaluator_factory: Callable[[SearchConfig], Evaluator] | None = None,
    strategy_factory: StrategyFactory | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    repair: bool = False,
) -> SearchResult:
    """Run a new search described by ``config`` in ``run_dir``, or resume the one there.

    ``evaluator_factory`` builds the evaluator from the config (default: proxy training on the
    config's data set, see :func:`autoshrink.evaluators.factory.build_evaluator`);
    ``strategy_factory`` makes the strategy of a ``strategy="custom"`` config
    (:data:`StrategyFactory`). Both factories' names are recorded in the run folder, and a
    resume needs the same strategy factory (:func:`~autoshrink.run_folder.check_strategy`). The run
    folder is locked (:class:`~autoshrink.journal.RunLock`) while the search runs. With
    ``resume``: ``retry_failed`` trains ``"failed"`` candidates again, ``repair`` cuts a torn
    tail off the journal. SIGINT and SIGTERM raise :class:`SearchInterrupted` between journal
    records.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    check_arguments(run_dir, config, resume, strategy_factory, retry_failed, repair)
    claim_folder(run_dir, "search", "--resume" if resume else "--out")
    if resume:
        check_resumable(run_dir)
    created = not resume and not run_dir.exists()
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
    executor = executor or InProcessExecutor()
    journal = Journal(run_dir / JOURNAL)
    try:
        with RunLock(run_dir), StopSignals() as signals:
            factories = Factories(factory_name(evaluator_factory), factory_name(strategy_factory))
            config = prepare_run_dir(run_dir, config, resume, factories)  # refuses before writing
            for tmp in remove_dead_temporaries(run_dir) if resume else ():  # a kill mid-write
                log.info("removed %s, left by a search killed while it wrote the file", tmp)
            try:
                replay = Replay.read(journal, repair, retry_failed)
                ended = resume and ended_before(run_dir)
                if ended and not replay.done:  # else the whole search would start again
                    raise JournalError(
                        f"{run_dir}: {RESULT} says the search ended, but {JOURNAL} holds no "
                        "candidate (removed or emptied?); restore it, or start a new folder"
                    )
                if replay.done:
                    log.info("resuming %s: %d candidates in the journal", run_dir, len(replay.done))
                evaluator, trail = make_evaluator(config, evaluator_factory, run_dir)
                result = search_loop(
                    config, evaluator, executor, journal, replay, signals, progress, trail,
                    strategy_factory,
                )  # fmt: skip
                if result.evaluations == 0:
                    raise ConfigError(
                        f"strategy {config.strategy}: its first ask() gave no cell to evaluate"
                    )
                if result.best is None:
                    why = f"search stopped: {result.stopped}; " if result.stopped else ""
                    raise JournalError(
                        f"{run_dir}: {why}no candidate finished with a finite score"
                        + all_rejected(replay.done.values())
                    )
                out = SearchResult(
                    result.best,
                    result.start,
                    run_dir,
                    result.evaluations,
                    result.trained,
                    time.perf_counter() - t0,
                    result.stopped,
                    images_trained(replay.done.values()),
                    result.screening,
                    result.ended,
                    config,
                )
                if ended and result.trained == 0:  # the result of the session that ended it
                    log.info("%s: the search had ended; %s is kept as it was", run_dir, RESULT)
                else:
                    warn_cost_only(result.cost_only, config.score.metric)
                    network = proxy_network(evaluator)
                    write_result(out, config, network)  # a signal here too says how to resume
            except KeyboardInterrupt as err:
                raise interrupted(err, journal, run_dir, signals.received, factories) from None
            except Exception:
                if not resume:  # a start that failed before any candidate: the folder stays free
                    unstarted(run_dir)
                raise
            close_after_the_end(executor, signals, run_dir)
    except Exception:
        if created:  # the lock is gone: a folder this start made is taken back when empty
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    finally:
        executor.close()
    return out


def ended_before(run_dir: Path) -> bool:
    """Whether an earlier session ended the search in ``run_dir``: its ``result.json`` is there
    and reads as one. A damaged one (cut, garbage, not an object with the best cell) is written
    again from the journal, with a warning (a resume kept it, as if it were whole)."""
    path = run_dir / RESULT
    if not path.exists():
        return False
    try:
        result = read_json_file(path, JournalError, "result")
    except JournalError as err:
        damage = str(err)
    else:
        if isinstance(result, dict) and isinstance(result.get("best"), dict):
            return True
        damage = f"{path}: not a search's result (no best cell)"
    log.warning("%s; it is written again from the journal", damage)
    return False


def close_after_the_end(executor: Executor, signals: StopSignals, run_dir: Path) -> None:
    """Release the executor's workers once the results are written, with SIGINT and SIGTERM
    held: one that comes meanwhile is then said as a stop after the end, not the resume's hint
    (a stop in that moment used to end the process silently, by the default handler)."""
    try:
        with signals.held():
            executor.close()
    except SearchInterrupted as err:
        raise SearchInterrupted(
            err.signum,
            f"search stopped by {signal.Signals(err.signum).name} while its workers closed; "
            f"it had ended, and its results are in {run_dir}",
        ) from None


def factory_name(factory: Callable[..., Any] | None) -> str | None:
    """What a run folder records of an evaluator factory: ``module.qualname`` of the function,
    of a ``functools.partial``'s function or of a callable object's class; ``None`` when none
    is given (the built-in one, :data:`~autoshrink.run_folder.BUILT_IN_FACTORY`, is used)."""
    if factory is None:
        return None
    inner = getattr(factory, "func", factory)
    if not hasattr(inner, "__qualname__"):  # a callable object
        inner = type(inner)
    return f"{inner.__module__}.{inner.__qualname__}"


def interrupted(
    err: KeyboardInterrupt,
    journal: Journal,
    run_dir: Path,
    received: int | None = None,
    factories: Factories | None = None,
) -> SearchInterrupted:
    """The :class:`SearchInterrupted` of a search stopped by ``err``: which signal (``err``'s,
    else the one the search's handler ``received``; a ``KeyboardInterrupt`` raised by code is
    "interrupted", with SIGINT's exit status), how many candidates the journal holds, and how to
    resume it (from Python, naming them, where the search ran with custom ``factories``)."""
    signum = getattr(err, "signum", None) or received
    how = f"stopped by {signal.Signals(signum).name}" if signum else "interrupted"
    try:
        journalled = sum(r.get("type") == "candidate" for r in journal.records())
    except JournalError:  # a damaged journal: the resume will name the line
        journalled = 0
    custom = {
        f"{kind}_factory": name
        for kind, name in asdict(factories or Factories()).items()
        if name not in (None, BUILT_IN_FACTORY)  # the command line cannot pass these
    }
    if custom:
        given = "".join(f", {key}=..." for key in custom)
        named = ", ".join(f"{key} {name}" for key, name in custom.items())
        resume = f"run_search({str(run_dir)!r}, resume=True{given}) with the run's ({named})"
    else:
        resume = f"autoshrink search --resume {run_dir}"
    noun = "candidate is" if journalled == 1 else "candidates are"
    return SearchInterrupted(
        signum or signal.SIGINT,
        f"search {how}; {journalled} {noun} in {journal.path}; continue with: {resume}",
    )


@dataclass(frozen=True)
class LoopOutcome:
    """What :func:`search_loop` ends with: the best and start observations, the evaluations
    and trainings counted, the strategy's reason for stopping early (``None`` when it ran its
    course), with zero-cost screening what ranked this session's steps, why it ended, and the
    steps whose scored candidates all reached one quality (:func:`warn_cost_only`)."""

    best: Observation | None
    start: Observation | None
    evaluations: int
    trained: int
    stopped: str | None
    screening: dict[str, Any] | None
    ended: str | None = None
    cost_only: tuple[tuple[int, float], ...] = ()  # (step, metric): steps whose cells all tied


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
    done = replay.done
    screened_before = sum(r["status"] == "screened" for r in done.values())  # earlier sessions'
    score_fn: Score = config.score
    ranker = None
    if config.screening == "zero-cost":  # before anything trains: bad settings fail here
        from autoshrink.evaluators.factory import build_ranker

        ranker = build_ranker(config, lambda key: candidate_seed(config.seed, key))
    strategy = make_strategy(config, ranker, strategy_factory)
    screen = None
    if config.screening == "progressive":  # checks the schedule against the data set
        screen = ProgressiveScreen(
            config.stages(), evaluator, score_fn, replay.stages, journal.path.parent
        )
    start_obs: Observation | None = None
    evaluations = trained = 0
    cost_only: list[tuple[int, float]] = []  # (step, metric) of steps whose cells all tied

    def append(rec: dict[str, Any]) -> None:
        with signals.held():
            journal.append(rec)
            done[rec["key"]] = as_read_back(rec)

    def append_event(rec: dict[str, Any]) -> None:
        with signals.held():
            journal.append(rec)

    def note_reuse(proposals: list[Proposal]) -> None:
        """Journal each proposal an earlier step evaluated (once, also across resumes)."""
        for i, p in enumerate(proposals):
            rec = done.get(p.genotype.key)
            if (
                rec is not None
                and rec["step"] != p.step
                and (p.step, rec["key"]) not in replay.reused
            ):
                append_event(reuse_record(p, i, rec["step"]))
                replay.reused.add((p.step, rec["key"]))

    def append_stage(rec: dict[str, Any]) -> None:
        with signals.held():
            journal.append(rec)
            replay.stages[rec["key"], rec["stage"]] = as_read_back(rec)

    shown = None if progress else True  # tqdm's None: a bar on a terminal only, not in a log
    steps_bar = tqdm(
        total=strategy.max_steps, desc=f"{config.strategy} steps", unit="step", disable=shown
    )
    last_step, batches, max_steps = -1, 0, strategy.max_steps  # read once, as the bar's total
    start, _ = seeded_start(config)
    bar = tqdm(disable=True)  # a step's bar: closed before a stop's message, not at exit
    try:
        while proposals := strategy.ask():
            batches += 1
            check_batch(proposals, last_step, batches, max_steps, config.strategy, start)
            last_step = proposals[0].step
            try:
                replay.asked(proposals)
            except JournalError as err:
                if config.strategy != "custom":
                    raise
                raise JournalError(
                    f"{err}, or the custom strategy asked for other cells when told the same "
                    "observations (it must draw from the rng it is given)"
                ) from None
            note_reuse(proposals)
            seeds = [candidate_seed(config.seed, p.genotype.key) for p in proposals]
            checked = reject_violations(proposals, seeds, done, evaluator, config, append)
            if trail is not None:  # before anything of the step trains, stages included
                waiting = sum(p.genotype.key not in done for p in proposals)
                trail.before_step(strategy, proposals, waiting)
            screened: dict[int, list[StageResult]] = {}
            if screen is not None and screen.ready:
                screened = screen_batch(
                    screen, proposals, seeds, done, executor, evaluator, append, append_stage,
                    append_event, checked,
                )  # fmt: skip
            todo = [i for i, p in enumerate(proposals) if p.genotype.key not in done]
            jobs = [
                Job(proposals[i].genotype, seeds[i], checked.get(proposals[i].genotype.key, {}))
                for i in todo
            ]
            bar = tqdm(
                total=len(proposals),
                initial=len(proposals) - len(todo),
                desc=strategy.describe(),
                unit="cand",
                leave=False,
                disable=shown,
            )
            on_retry = retry_listener(append_event, proposals, todo, seeds)
            for j, evaluation in executor.run(evaluator, jobs, on_retry):
                i = todo[j]
                evaluation = as_checked(evaluation, checked.get(proposals[i].genotype.key))
                if evaluation.status == "ok" and (missing := score_fn.missing(evaluation.metrics)):
                    raise ConfigError(
                        f"the score reads {', '.join(missing)}, which the evaluation of "
                        f"{proposals[i].genotype.key} lacks (it has "
                        f"{', '.join(sorted(evaluation.metrics))}); score the metrics the "
                        "evaluator gives"
                    )
                score = score_fn(evaluation.metrics) if evaluation.status == "ok" else -math.inf
                if i in screened:
                    evaluation = with_stages(evaluation, screened[i])
                append(record(proposals[i], i, seeds[i], evaluation, score))
                trained += 1
                bar.update(1)
            bar.close()
            observations = [observe(p, done[p.genotype.key]) for p in proposals]
            evaluations += len(observations)
            if proposals[0].step == 0:
                start_obs = observations[0]
            if (same := same_quality(observations, score_fn.metric)) is not None:
                cost_only.append((proposals[0].step, same))
            strategy.tell(observations)
            records = [done[p.genotype.key] for p in proposals]
            trained_any = any(r["status"] == "ok" for r in records)
            if screen is not None and not screen.ready and trained_any:  # the first batch
                screen.learn(records)  # that trained (a constraint may reject earlier ones)
            if trail is not None:
                trail.after_step(strategy, proposals)
            steps_bar.update(1)
            best = strategy.best
            steps_bar.set_postfix(best=f"{best.score:.4f}" if best else "-")
        steps_bar.total = steps_bar.n  # max_steps is an upper bound: the search has ended
        steps_bar.refresh()
    finally:
        bar.close()
        steps_bar.close()
    stopped = getattr(strategy, "stop_reason", None)
    if stopped is None:
        replay.finish()
    else:
        # result.stopped says it to the caller (the command line prints it as its error line)
        log.debug("search stopped early: %s", stopped)
    screening = None if ranker is None else ranker.summary()
    if screen is not None:
        screened = sum(r["status"] == "screened" for r in done.values())
        screening = screen.summary() | {"screened_out": screened - screened_before}
    return LoopOutcome(
        strategy.best,
        start_obs,
        evaluations,
        trained,
        stopped,
        screening,
        strategy.end_reason,
        tuple(cost_only),
    )


def reject_violations(
    proposals: list[Proposal],
    seeds: list[int],
    done: Mapping[str, Any],
    evaluator: Evaluator,
    config: SearchConfig,
    append: Callable[[dict[str, Any]], None],
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
        if why := violation(profile, config):
            append(record(p, i, seeds[i], why, float("-inf")))
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
    append: Callable[[dict[str, Any]], None],
    append_stage: Callable[[dict[str, Any]], None],
    append_event: Callable[[dict[str, Any]], None],
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
        jobs = [Job(proposals[i].genotype, seeds[i], checked.get(keys[i], {})) for i in todo]
        on_retry = retry_listener(append_event, proposals, todo, seeds)
        for j, evaluation in executor.run(stage_evaluator, jobs, on_retry):
            yield todo[j], as_checked(evaluation, checked.get(keys[todo[j]]))

    def journal_stage(i: int, stage: int, evaluation: Evaluation, score: float) -> None:
        rec = record(proposals[i], i, seeds[i], evaluation, score)
        append_stage(rec | {"type": "stage", "stage": stage})

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
        append(record(proposals[i], i, seeds[i], loser, -math.inf))
    return {i: results[i] for i in survivors}
