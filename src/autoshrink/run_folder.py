"""The files of a search's run folder, and the fingerprint that keeps a resume honest.

A run folder holds ``config.json`` (the resolved settings), ``fingerprint.json`` (the hash of
the settings that decide which candidates the search asks for, and those settings), the
``journal.jsonl`` of evaluated candidates, ``run.lock`` while a search runs and, when it ends,
``best_cell.json`` with its picture and ``result.json``. :func:`prepare_run_dir` makes a new
run folder or checks the one a search resumes; :func:`check_fingerprint` refuses to resume with
a config edited since the journal was made, naming the settings that changed,
:func:`check_evaluator` without the custom evaluator the run was made with and
:func:`check_strategy` with another strategy factory; :func:`unstarted` frees the folder of a
start that failed, and :func:`fingerprint_on_success` takes back the fingerprint written for an
older folder whose resume failed.
No torch in this module: the report reads run folders with these names too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.atomic_write import write_json
from autoshrink.errors import ConfigError, JournalError
from autoshrink.journal import LOCK
from autoshrink.settings_diff import differences, first_three
from autoshrink.user_files import check_schema, read_json_file

if TYPE_CHECKING:
    from autoshrink.config import SearchConfig

log = logging.getLogger(__name__)

CONFIG, JOURNAL, RESULT, BEST_CELL = "config.json", "journal.jsonl", "result.json", "best_cell.json"
FINGERPRINT, BEST_PICTURE = "fingerprint.json", "best_cell.png"
#: The built-in evaluator factory by its name; ``fingerprint.json`` records it as ``null``.
BUILT_IN_FACTORY = "autoshrink.evaluators.factory.build_evaluator"


def factory_name(factory: Callable[..., Any] | None) -> str | None:
    """What a run folder records of an evaluator or strategy factory: ``module.qualname`` of
    the function, of a ``functools.partial``'s function or of a callable object's class;
    ``None`` when none is given (for an evaluator: the built-in one, :data:`BUILT_IN_FACTORY`,
    is used)."""
    if factory is None:
        return None
    inner = getattr(factory, "func", factory)
    if not hasattr(inner, "__qualname__"):  # a callable object
        inner = type(inner)
    return f"{inner.__module__}.{inner.__qualname__}"


@dataclass(frozen=True)
class Factories:
    """The names (``module.qualname``) of the factories a search is run with: the evaluator's
    (``None``: none given, the built-in one) and the strategy's (``None``: the config names a
    built-in strategy)."""

    evaluator: str | None = None
    strategy: str | None = None


def write_fingerprint(run_dir: Path, config: SearchConfig, factories: Factories) -> None:
    """Write ``fingerprint.json``: the hash and the search settings the journal is made with,
    and the names of the factories of the evaluator that scores its candidates and of a custom
    strategy (``None``, ``null`` in the file: the built-in ones)."""
    evaluator = factories.evaluator
    out = {
        "format": "autoshrink.fingerprint/1",
        "config_hash": config.fingerprint(),
        "settings": config.search_settings(),
        "evaluator": None if evaluator == BUILT_IN_FACTORY else evaluator,
        "strategy": factories.strategy,
    }
    write_json(run_dir / FINGERPRINT, out, sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class FingerprintSchema:
    """The JSON types of ``fingerprint.json`` (:func:`write_fingerprint`; ``settings`` and
    ``evaluator`` and ``strategy`` may be absent in older folders); a schema for
    :func:`~autoshrink.user_files.check_schema`."""

    config_hash: str
    settings: dict[str, Any] = field(default_factory=dict)
    evaluator: str | None = None
    strategy: str | None = None


def check_fingerprint(run_dir: Path, config: SearchConfig, factories: Factories) -> None:
    """Raise a :class:`JournalError` naming the changed settings when ``config`` is not the
    config the run's journal was made with, and check the ``factories``
    (:func:`check_evaluator`, :func:`check_strategy`). Only reads: a folder without
    ``fingerprint.json`` is :func:`prepare_run_dir`'s to complete."""
    path = run_dir / FINGERPRINT
    saved = read_json_file(path, JournalError, "fingerprint")
    check_schema(path, saved, FingerprintSchema, JournalError, "fingerprint file")
    saved_hash, settings = saved["config_hash"], saved.get("settings")
    check_strategy(run_dir, saved.get("strategy"), factories.strategy)
    if "evaluator" in saved:  # folders made before it was recorded are not checked
        check_evaluator(run_dir, saved["evaluator"], factories.evaluator)
    if saved_hash == config.fingerprint():
        return
    # a fingerprint of early versions holds no settings: which changed is unknown
    changed = [] if settings is None else differences(settings, config.search_settings())
    raise JournalError(
        f"{run_dir / CONFIG} is not the config the journal was made with (changed: "
        f"{first_three(changed) or 'unknown'}; {FINGERPRINT} holds hash {saved_hash[:12]}, "
        f"config.json hashes to {config.fingerprint()[:12]}); restore it or start a new search"
    )


def check_evaluator(run_dir: Path, saved: object, now: str | None) -> None:
    """Refuse to resume a run whose candidates a custom evaluator factory (``saved``, its
    name) scored when no factory is given (``now`` ``None``): the built-in evaluator would
    mix its scores with that one's. Pass the same factory, or
    :data:`BUILT_IN_FACTORY` itself where the custom one only wrapped it. Warn when another
    factory scores the rest."""
    recorded = None if now == BUILT_IN_FACTORY else now
    if saved == recorded:
        return
    if saved is not None and now is None:
        raise ConfigError(
            f"{run_dir}: its candidates were scored by the custom evaluator {saved}; resume it "
            "with that evaluator_factory (the built-in evaluator would mix its scores with that "
            "one's; evaluator_factory=build_evaluator says it should)"
        )
    log.warning(
        "%s: its candidates were scored by %s; %s scores the rest",
        run_dir,
        "the built-in evaluator" if saved is None else saved,
        "the built-in evaluator" if recorded is None else recorded,
    )


def check_custom(strategy: str, factory: str | None, resume: bool) -> None:
    """Refuse a strategy factory (``factory``, its name) for a built-in ``strategy``, and a
    ``custom`` strategy without one -- before anything is written."""
    if strategy == "custom" and factory is None:
        how = (
            "pass it to run_search"
            if not resume
            else (
                "pass the run's to run_search(..., resume=True, strategy_factory=...); the command "
                "line cannot give one"
            )
        )
        raise ConfigError(f"strategy 'custom' is made by a strategy_factory: {how}")
    if strategy != "custom" and factory is not None:
        raise ConfigError(
            f"a strategy_factory ({factory}) makes a strategy 'custom' search; the config's "
            f"strategy is {strategy!r} (preset(..., strategy='custom'))"
        )


def check_strategy(run_dir: Path, saved: str | None, now: str | None) -> None:
    """Refuse to resume a run whose custom strategy factory (``saved``, its name; ``None``: a
    built-in strategy) is not the one given (``now``): the strategy decides which cells the
    search asks for, so another one would not continue this run's trajectory."""
    if saved == now:
        return
    why = "another strategy would ask for other cells than the journal's"
    if saved is None:
        raise ConfigError(
            f"{run_dir}: its strategy is the built-in one its config names; resume it without "
            f"a strategy_factory ({now} was given; {why})"
        )
    given = (
        f"not with {now}"
        if now
        else "from Python: run_search(..., resume=True, strategy_factory=...); the command "
        "line cannot give one"
    )
    raise ConfigError(
        f"{run_dir}: its strategy was made by the strategy_factory {saved}; resume it with that "
        f"one, {given} ({why})"
    )


def check_resumable(run_dir: Path) -> None:
    """Raise a :class:`JournalError` when ``run_dir`` holds no search to resume (no
    ``config.json``): checked before the folder is locked, so that no ``run.lock`` is made in a
    folder that is not a run's."""
    if not (run_dir / CONFIG).exists():
        raise JournalError(f"{run_dir}: not a run folder (no {CONFIG}); nothing to resume")


def prepare_run_dir(
    run_dir: Path, config: SearchConfig | None, resume: bool, factories: Factories
) -> SearchConfig:
    """Create a run folder for ``config`` or, with ``resume``, read the config it holds and
    check it against the fingerprint its journal was made with (call with the lock held).
    A ``config`` given with ``resume`` must search the same; it is the one returned, so its
    execution settings (threads, device, data folder) apply to the rest of the run.
    ``factories`` names the evaluator and strategy factories (:class:`Factories`); a run made
    with a custom evaluator resumes only with a factory (:func:`check_evaluator`), one made
    with a custom strategy only with the same factory (:func:`check_strategy`)."""
    run_dir = Path(run_dir)
    if resume:
        check_resumable(run_dir)
        from autoshrink.config import SearchConfig  # imports torch: only when a search runs

        saved = SearchConfig.load(run_dir / CONFIG)
        if (run_dir / FINGERPRINT).exists():  # a folder there too: its read names it
            check_fingerprint(run_dir, saved, factories)
        else:  # made before there were fingerprints: its config.json is what it was made with
            check_custom(saved.strategy, factories.strategy, resume=True)  # before writing
            log.warning(
                "%s: no %s (an older run folder); writing it from %s", run_dir, FINGERPRINT, CONFIG
            )
            write_fingerprint(run_dir, saved, factories)
        if config is None:
            return saved
        if config.fingerprint() != saved.fingerprint():
            changed = differences(saved.search_settings(), config.search_settings())
            raise ConfigError(
                f"{run_dir / CONFIG}: resume continues the run's own search; the config given "
                f"differs ({first_three(changed)}; pass config=None, or start a new folder)"
            )
        return config
    if config is None:
        raise ConfigError(f"a new search in {run_dir} needs a config")
    if (run_dir / JOURNAL).exists() or (run_dir / CONFIG).exists():
        raise JournalError(
            f"{run_dir} already holds a search; resume it (--resume; resume=True in Python) "
            "or choose another folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    inputs = {Path(config.latency_table).resolve()} if config.latency_table else set()
    others = sorted(
        p.name for p in run_dir.iterdir() if p.name != LOCK and p.resolve() not in inputs
    )
    if others:  # the run's files would land among (and over) someone else's
        more = ", ..." if len(others) > 3 else ""
        raise ConfigError(
            f"{run_dir} holds other files ({', '.join(others[:3])}{more}); a new search needs "
            "an empty or new folder"
        )
    try:
        config.save(run_dir / CONFIG)
        write_fingerprint(run_dir, config, factories)
    except BaseException:  # a full disk, say: leave the folder free for the same command
        for name in (CONFIG, FINGERPRINT):
            (run_dir / name).unlink(missing_ok=True)
        raise
    return config


@contextmanager
def fingerprint_on_success(run_dir: Path, resume: bool) -> Iterator[None]:
    """Around a resume (``resume``) of a folder made before fingerprints, which
    :func:`prepare_run_dir` writes one for from its ``config.json``: remove that fingerprint
    again when the resume fails (a journal of another config, say), so that a ``config.json``
    restored afterwards is checked against the journal, not against the edited one's
    fingerprint. Enter it with the lock held."""
    written = resume and not (run_dir / FINGERPRINT).exists()
    try:
        yield
    except Exception:
        if written:
            (run_dir / FINGERPRINT).unlink(missing_ok=True)
        raise


def unstarted(run_dir: Path) -> None:
    """Take back the files a new search wrote into ``run_dir`` when it stopped before its
    journal's first record, so that the corrected command may use the folder again."""
    journal = run_dir / JOURNAL
    if journal.exists() and journal.stat().st_size > 0:
        return
    for name in (CONFIG, FINGERPRINT, JOURNAL):
        (run_dir / name).unlink(missing_ok=True)
