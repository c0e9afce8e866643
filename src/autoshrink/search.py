"""A search in a run folder: starts, resumes and ends it; the journal keeps every candidate.

:func:`run_search` runs (or resumes) one search in a run folder -- AutoShrink, or a baseline
on the same cell space (``strategy`` ``random`` or ``rea``), or a strategy of one's own that
a ``strategy_factory`` makes (``strategy`` ``custom``). The folder's files are described
in :mod:`autoshrink.run_folder`; the loop that asks, trains and tells is
:func:`~autoshrink.search_loop.search_loop`, which journals each candidate the moment it
finishes (:mod:`autoshrink.search_records`), and the search ends with ``result.json``
(:mod:`autoshrink.search_result`).

Resuming replays the journal: the strategy is rebuilt from the seed and told the recorded
results in order, so it asks for exactly the same candidates, and only those without a record
are trained. Each candidate's seed is derived from the run seed and the cell's canonical key
(:func:`~autoshrink.search_loop.candidate_seed`), so its result does not depend on the order
or the process it runs in. A resume refuses a config whose fingerprint changed
(:func:`~autoshrink.run_folder.check_fingerprint`) and a journal record the strategy does not
ask for (:class:`~autoshrink.replay.Replay`). SIGINT and SIGTERM stop the search between
journal records (:class:`~autoshrink.stop_signals.StopSignals`).
See docs/reliability.md."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from autoshrink.batch_checks import warn_cost_only
from autoshrink.config import SearchConfig
from autoshrink.devices import is_cuda, resolve_device
from autoshrink.errors import ConfigError, JournalError
from autoshrink.evaluators.base import Evaluator, data_hash, proxy_network
from autoshrink.executors.base import Executor, InProcessExecutor
from autoshrink.journal import Journal, record_type
from autoshrink.outputs import check_output_file, claim_folder, held_folder
from autoshrink.replay import Replay
from autoshrink.run_folder import (
    BEST_CELL,
    BEST_PICTURE,
    BUILT_IN_FACTORY,
    JOURNAL,
    RESULT,
    Factories,
    check_custom,
    check_resumable,
    factory_name,
    fingerprint_on_success,
    prepare_run_dir,
    unstarted,
)
from autoshrink.search_loop import LoopOutcome, StrategyFactory, search_loop
from autoshrink.search_records import all_rejected
from autoshrink.search_result import SearchResult, images_trained, restore_best, write_result
from autoshrink.stop_signals import SearchInterrupted, StopSignals
from autoshrink.strategies.base import Observation, check_population
from autoshrink.user_files import read_json_file

if TYPE_CHECKING:
    from autoshrink.evaluators.oneshot import WeightTrail

log = logging.getLogger(__name__)

#: What a search calls on the evaluator an ``evaluator_factory`` returns.
EVALUATOR_MEMBERS = ("profile", "evaluate")


def check_argument_types(
    run_dir: object, config: object, executor: object, **factories: object
) -> None:
    """A :class:`TypeError` naming :func:`run_search`'s ``run_dir`` or ``config`` when it is of
    another type (a dict or a preset's name for the config, the two swapped), an ``executor``
    that is none (its name, as the command line takes it), or a factory that cannot be called
    (an evaluator given where its factory goes)."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(
            f"run_search(run_dir, config): run_dir must be a path, got "
            f"{type(run_dir).__name__} (the folder comes first)"
        )
    if config is not None and not isinstance(config, SearchConfig):
        raise TypeError(
            f"run_search(run_dir, config): config must be a SearchConfig (preset(...)), got "
            f"{type(config).__name__}"
        )
    if executor is not None and not all(
        callable(getattr(executor, m, None)) for m in ("run", "close")
    ):
        raise TypeError(
            "run_search: executor must be an Executor (executor_for(...)), got a "
            f"{type(executor).__name__}"
        )
    for name, factory in factories.items():
        if factory is not None and not callable(factory):
            raise TypeError(
                f"run_search: {name} must be callable (called with the config), got a "
                f"{type(factory).__name__}"
            )


def check_arguments(
    run_dir: str | Path,
    config: SearchConfig | None,
    resume: bool,
    given: tuple[object, StrategyFactory | None, object],
    retry_failed: bool,
    repair: bool,
) -> None:
    """Refuse :func:`run_search`'s arguments that cannot go together or are of the wrong type
    (``given``: the evaluator's factory, the strategy's and the executor), before anything is
    made (and warn of a strategy factory that only the running script defines)."""
    evaluator_factory, strategy_factory, executor = given
    check_argument_types(
        run_dir,
        config,
        executor,
        evaluator_factory=evaluator_factory,
        strategy_factory=strategy_factory,
    )
    if (retry_failed or repair) and not resume:
        raise ConfigError(
            "retry_failed and repair (--retry-failed, --repair) need resume (--resume)"
        )
    if config is None and not resume:  # before anything is made
        raise ConfigError(
            f"a new search in {run_dir} needs a config (preset(...)); resume=True continues "
            "the one there"
        )
    if config is not None and not resume:  # a resume's: check_strategy names the run's factory
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


def with_candidate_threads(config: SearchConfig, executor: Executor) -> SearchConfig:
    """``config`` for this session: where it leaves the threads to an executor that trains each
    candidate on its own number of them (``candidate_threads``: the pool's 1, a Ray task's
    CPUs), that number, so that the torch work of this process -- the zero-cost ranker,
    one-shot's derived weights -- runs as the candidates do and gives what an in-process run
    (or a resume) on as many threads gives; ``config.json`` keeps the run's own ``null``."""
    threads = getattr(executor, "candidate_threads", None)
    if config.threads is not None or threads is None:
        return config
    return replace(config, threads=threads)


def make_evaluator(
    config: SearchConfig,
    evaluator_factory: Callable[[SearchConfig], Evaluator] | None,
    run_dir: Path,
    here: bool,
    replay: Replay,
) -> tuple[Evaluator, WeightTrail | None]:
    """The search's evaluator (``evaluator_factory``'s, or the built-in one the config names)
    and, for a one-shot search, the trail of weights it keeps in ``run_dir/oneshot``.
    Where the built-in evaluator trains ``here``, in this process, a GPU this machine lacks is
    refused first (a :class:`ConfigError`, before any data loads); a custom one decides for
    itself. The journal's records (``replay``) of other data than the evaluator's are refused
    (:meth:`~autoshrink.replay.Replay.check_data`)."""
    if evaluator_factory is None:
        from autoshrink.evaluators.factory import build_evaluator

        if here and is_cuda(config.device):
            resolve_device(config.device)

        evaluator_factory = build_evaluator
    evaluator = evaluator_factory(config)
    if missing := [m for m in EVALUATOR_MEMBERS if not callable(getattr(evaluator, m, None))]:
        raise ConfigError(
            f"evaluator_factory {factory_name(evaluator_factory)} returned a "
            f"{type(evaluator).__name__}, which lacks {', '.join(missing)} (see "
            "autoshrink.evaluators.base.Evaluator)"
        )
    replay.check_data(data_hash(evaluator), config.data_dir)
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
    (:data:`~autoshrink.search_loop.StrategyFactory`). Both factories' names are recorded in
    the run folder, and a resume needs the same strategy factory
    (:func:`~autoshrink.run_folder.check_strategy`). The run folder is locked
    (:class:`~autoshrink.journal.RunLock`) while the search runs. With ``resume``:
    ``retry_failed`` trains ``"failed"`` candidates again, ``repair`` cuts a torn tail off the
    journal. SIGINT and SIGTERM raise :class:`SearchInterrupted` between journal records.
    """
    t0 = time.perf_counter()
    check_arguments(
        run_dir,
        config,
        resume,
        (evaluator_factory, strategy_factory, executor),
        retry_failed,
        repair,
    )
    run_dir = Path(run_dir)
    claim_folder(run_dir, "search", "--resume" if resume else "--out")
    if resume:
        check_resumable(run_dir)
    here = executor is None  # the candidates train in this process, on this machine's device
    executor = executor or InProcessExecutor()
    journal = Journal(run_dir / JOURNAL)
    try:
        # held_folder: the lock, a resume's dead temporaries removed, and the folders this start
        # made taken back when it leaves them empty
        with (
            held_folder(run_dir, resume=resume),
            StopSignals() as signals,
            fingerprint_on_success(run_dir, resume),
        ):
            factories = Factories(factory_name(evaluator_factory), factory_name(strategy_factory))
            config = prepare_run_dir(run_dir, config, resume, factories)  # refuses before writing
            config = with_candidate_threads(config, executor)
            for name in (BEST_CELL, BEST_PICTURE, RESULT) if resume else ():  # before training
                check_output_file(run_dir / name, "--resume")
            try:
                replay, ended = read_replay(run_dir, journal, resume, repair, retry_failed, config)
                evaluator, trail = make_evaluator(config, evaluator_factory, run_dir, here, replay)
                result = search_loop(
                    config, evaluator, executor, journal, replay, signals, progress, trail,
                    strategy_factory,
                )  # fmt: skip
                best = found_best(result, config, replay, run_dir)
                out = SearchResult(
                    best,
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
                    write = partial(restore_best, out)
                else:
                    warn_cost_only(result.cost_only, config.score.metric)
                    write = partial(write_result, out, config, proxy_network(evaluator))
            except KeyboardInterrupt as err:
                stop = interrupted(err, journal, run_dir, signals.received, factories)
                close_after_a_stop(executor, signals)
                raise stop from None
            except Exception:
                if not resume:  # a start that failed before any candidate: the folder stays free
                    with contextlib.suppress(OSError):  # read-only: the first error is said
                        unstarted(run_dir)
                raise
            end_search(write, executor, signals, run_dir)
    finally:
        executor.close()
    return out


def read_replay(
    run_dir: Path,
    journal: Journal,
    resume: bool,
    repair: bool,
    retry_failed: bool,
    config: SearchConfig,
) -> tuple[Replay, bool]:
    """The journal's :class:`~autoshrink.replay.Replay`, and whether an earlier session ended
    the search (a :class:`JournalError` if one did and the journal holds no candidate, or if a
    resume that goes on cannot append to the journal)."""
    replay = Replay.read(journal, repair, retry_failed, config.fingerprint(), config.score)
    ended = resume and ended_before(run_dir)
    if resume and not ended:  # it trained a candidate first, then failed to journal it
        journal.check_appendable()
    if ended and not replay.done:  # else the whole search would start again
        raise JournalError(
            f"{run_dir}: {RESULT} says the search ended, but {JOURNAL} holds no "
            "candidate (removed or emptied?); restore it, or start a new folder"
        )
    if replay.done:
        log.info("resuming %s: %d candidates in the journal", run_dir, len(replay.done))
    return replay, ended


def found_best(
    outcome: LoopOutcome, config: SearchConfig, replay: Replay, run_dir: Path
) -> Observation:
    """The best candidate of a search's ``outcome``; a :class:`ConfigError` if its strategy
    asked for nothing, a :class:`JournalError` if no candidate has a finite score."""
    if outcome.evaluations == 0:
        raise ConfigError(f"strategy {config.strategy}: its first ask() gave no cell to evaluate")
    if outcome.best is None:
        why = f"search stopped: {outcome.stopped}; " if outcome.stopped else ""
        raise JournalError(
            f"{run_dir}: {why}no candidate finished with a finite score"
            + all_rejected(replay.done.values())
        )
    return outcome.best


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


def end_search(
    write: Callable[[], None], executor: Executor, signals: StopSignals, run_dir: Path
) -> None:
    """Write the results of an ended search (``write``; of a search an earlier session ended:
    only its best cell's files that are gone) and release the executor's workers, with SIGINT
    and SIGTERM held: one that comes meanwhile is said as a stop after the end, not the
    resume's hint (a stop while the results were written used to say "continue with --resume"
    once they were there, and one while the workers closed ended the process silently, by the
    default handler)."""
    try:
        with signals.held():
            write()
            executor.close()
    except SearchInterrupted as err:
        raise SearchInterrupted(
            err.signum,
            f"search stopped by {signal.Signals(err.signum).name} as it ended; its results are "
            f"in {run_dir}",
        ) from None


def close_after_a_stop(executor: Executor, signals: StopSignals) -> None:
    """Release the executor's workers after SIGINT or SIGTERM stopped the search, with both
    held: one more stop meanwhile is the same stop (it used to end the process by the default
    handler, without the resume's hint)."""
    with contextlib.suppress(SearchInterrupted), signals.held():
        executor.close()


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
    return SearchInterrupted(
        signum or signal.SIGINT, f"search {how}{journalled(journal)}; continue with: {resume}"
    )


def journalled(journal: Journal) -> str:
    """What a stopped search's line says of the candidates ``journal`` holds."""
    try:
        count = sum(record_type(r) == "candidate" for r in journal.records())
    except JournalError:  # a damaged journal: the resume will name the line
        return f"; the finished candidates are in {journal.path}"
    if count == 0:  # the journal may not be there yet
        return " before any candidate finished"
    noun = "candidate is" if count == 1 else "candidates are"
    return f"; {count} {noun} in {journal.path}"
