"""Read a search's run folder for the report, without writing to it.

A report may be made while the search is still running, so nothing here writes into the run
folder's files: a torn last journal line (the search is writing it) is skipped, not cut, and
a missing ``result.json`` means "still going". The chosen cell of each step is found by the
strategy's own rule -- the best score, ties to fewer edges, then the first proposed -- among
the step's candidates, those an earlier step evaluated included (the journal's ``reuse``
records); the best cell of the run is ``result.json``'s, or the best finite score seen so far.
A candidate journalled twice (trained again by ``--resume --retry-failed``) counts with its
last record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autoshrink.errors import ConfigError, JournalError
from autoshrink.graph import Cell
from autoshrink.journal import check_record, lock_holder, off_path, parse_record, record_type
from autoshrink.run_folder import CONFIG, JOURNAL, RESULT
from autoshrink.strategies.autoshrink import removal_space, stops_at
from autoshrink.strategies.base import preference
from autoshrink.user_files import check_schema, read_json_file, read_text_file

log = logging.getLogger(__name__)

#: Metrics that count something (the journal holds them as floats): shown as integers.
COUNTS = ("macs", "params", "edges", "edge_cost")


@dataclass(frozen=True)
class Candidate:
    """One journal candidate record; ``score`` is ``-inf`` when the journal has ``null``;
    ``cell`` is the :class:`~autoshrink.graph.Cell` (a re-proposed one as its step numbered
    it) and ``num_edges`` its live edges, as ``Cell.num_edges`` counts them."""

    step: int
    index: int
    key: str
    num_edges: int
    status: str
    score: float
    metrics: dict[str, float]
    cell: Cell
    removed_edge: list[int] | None = None
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    first_step: int | None = None  # re-proposed: the step that evaluated it (it did not train)

    @property
    def ok(self) -> bool:
        """Whether the candidate scored: its score is finite."""
        return math.isfinite(self.score)

    def rank(self) -> tuple[float, int]:
        """Sort key of the strategy's choice (:func:`~autoshrink.strategies.base.preference`):
        higher score first, then fewer edges."""
        return preference(self.score, self.num_edges)

    def metric(self, name: str | None) -> float | int | None:
        """The metric ``name`` (``None`` for no name or a metric it lacks); a count
        (:data:`COUNTS`) as the integer it is."""
        value = self.metrics.get(name) if name else None
        if name in COUNTS and isinstance(value, float) and value.is_integer():
            return int(value)
        return value


@dataclass(frozen=True)
class Step:
    """The candidates of one step (in proposal order) and, when it kept one (:attr:`kept`), the
    one the search kept. ``decided``: whether the step is over -- a later step began, or the
    search ended; the last step of a running or stopped search may still lack candidates, so
    no cell is kept yet."""

    step: int
    candidates: list[Candidate]
    decided: bool = True

    @property
    def kept(self) -> bool:
        """Whether the search kept a cell at this step: the step is over (:attr:`decided`) and
        the search did not stop at it (:func:`~autoshrink.strategies.autoshrink.stops_at`: none
        of its candidates scored, and not only a constraint rejected them; it stopped at the
        cell of the step before)."""
        statuses = {c.status for c in self.candidates}
        return self.decided and not stops_at(
            self.step, statuses, any(c.ok for c in self.candidates)
        )

    @property
    def chosen(self) -> Candidate:
        """The step's best-ranked candidate (:meth:`Candidate.rank`, the first proposed among
        ties): the one the search kept when :attr:`kept`, else the best so far (a step not
        over) or the best of those that failed (the step the search stopped at)."""
        return max(self.candidates, key=Candidate.rank)  # max() keeps the first of ties

    def finite(self, metric: str | None = None) -> list[float]:
        """Finite scores (or values of ``metric``) of the candidates that scored."""
        values = [c.score if metric is None else c.metrics.get(metric) for c in self.candidates]
        return [float(v) for v in values if v is not None and math.isfinite(v)]


@dataclass(frozen=True)
class RunData:
    """What a run folder holds: its config, candidates, events and (when done) result."""

    run_dir: Path
    config: dict[str, Any]
    candidates: list[Candidate]
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    reused: list[Candidate] = field(default_factory=list)  # cells a later step re-proposed

    @property
    def finished(self) -> bool:
        """Whether the search has ended (the run folder has a ``result.json``)."""
        return self.result is not None

    @property
    def status(self) -> str:
        """``finished``; ``running`` while a live process holds the folder's lock; else
        ``stopped`` (killed or interrupted before its end: ``search --resume`` continues it)."""
        if self.finished:
            return "finished"
        return "running" if lock_holder(self.run_dir) is not None else "stopped"

    @property
    def steps(self) -> list[Step]:
        """The candidates grouped by step, in step order, each step's in proposal order; a
        step's cells that an earlier step evaluated are among them (:attr:`reused`). Every step
        is :attr:`Step.decided` but the last of a search that has not ended, unless that step
        has all its candidates (``_complete``)."""
        by_step: dict[int, list[Candidate]] = {}
        for c in sorted([*self.candidates, *self.reused], key=lambda c: (c.step, c.index)):
            by_step.setdefault(c.step, []).append(c)
        last = max(by_step, default=None)
        over = self.finished or self._complete(by_step)
        return [Step(s, cs, over or s != last) for s, cs in sorted(by_step.items())]

    def _complete(self, by_step: dict[int, list[Candidate]]) -> bool:
        """Whether the last of the AutoShrink steps ``by_step`` has every candidate its step
        asks for: the start cell at step 0, then K removals from the cell the step before kept
        (fewer when it has fewer distinct ones), or at step 1 of a search without step 0
        (``score_start`` false) from the complete cell. A search killed between two steps, or
        stopped at a step where none scored without a ``result.json``, is past that step."""
        if self.config.get("strategy", "autoshrink") != "autoshrink" or not by_step:
            return False
        last = max(by_step)
        if last == 0:
            return True
        before = by_step.get(last - 1)
        if before is not None:
            parent = Step(last - 1, before).chosen.cell  # the strategy's rule (Step.chosen)
        elif last == 1 and self.config.get("score_start") is False:
            first = by_step[last][0].cell  # no step 0: step 1 shrinks the complete cell
            parent = Cell.complete(first.kind, first.ops, first.activation)
        else:
            return False
        wanted = min(int(self.config.get("k", 0)), len(removal_space(parent)))
        return len(by_step[last]) == wanted

    @property
    def kept_steps(self) -> list[Step]:
        """The steps that kept a cell (:attr:`Step.kept`)."""
        return [s for s in self.steps if s.kept]

    @property
    def best(self) -> Candidate | None:
        """The best candidate: ``result.json``'s (:func:`read_run` checks the journal holds
        it), else the best finite score so far."""
        if self.result and self.result.get("best"):
            key = self.result["best"]["key"]
            for c in self.candidates:
                if c.key == key:
                    return c
        scored = sorted((c for c in self.candidates if c.ok), key=lambda c: (c.step, c.index))
        return max(scored, key=Candidate.rank) if scored else None

    @property
    def ordered(self) -> list[Candidate]:
        """Every evaluation in the order the search made it (step, then proposal): the trained
        candidates and the re-proposed ones (:attr:`reused`, a cell seen again), as many as
        ``result.json`` counts in ``evaluations``."""
        return sorted([*self.candidates, *self.reused], key=lambda c: (c.step, c.index))

    def best_so_far(self) -> list[float]:
        """The best score after each evaluation of :attr:`ordered` (``-inf`` before any)."""
        out, best = [], -math.inf
        for c in self.ordered:
            best = max(best, c.score)
            out.append(best)
        return out

    @property
    def score(self) -> dict[str, Any]:
        """The config's score settings (metric, cost, weight, slope, offset)."""
        return dict(self.config.get("score") or {})

    @property
    def quality(self) -> str:
        """The quality metric the score reads (``accuracy`` unless the config names another)."""
        return str(self.score.get("metric") or "accuracy")


def read_json_lines(
    path: Path,
    what: str = "journal",
    check: Callable[[Path, int, dict[str, Any]], None] = check_record,
) -> list[dict[str, Any]]:
    """The JSON objects of the ``what`` file ``path``, one a line (none when there is no file
    yet), each passed to ``check`` with its line number (by default the journal's
    :func:`~autoshrink.journal.check_record`). A malformed last line without its newline is
    skipped: the writer is writing it now (read-only: nothing is cut). Any other line that is
    not a JSON object, and a file that is not UTF-8 (the writers write ASCII), is a one-line
    :class:`JournalError` naming the file (and the line)."""
    if not path.exists():
        return []
    lines = read_text_file(path, JournalError, what).split("\n")
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec: dict[str, Any] | None = parse_record(line)
        except ValueError as err:
            rec, why = None, str(err)
        if rec is None:
            if n == len(lines):  # no newline yet: the writer is writing it now
                log.info("%s: skipping a partly written last line", path)
                break
            raise JournalError(f"{path}: line {n} is not a JSON record ({why})")
        check(path, n, rec)
        records.append(rec)
    return records


def _cell(rec: dict[str, Any]) -> Cell:
    """The cell of a candidate or reuse record that :func:`~autoshrink.journal.check_record`
    passed (so a cell, and its key's)."""
    return Cell.from_dict(rec["cell"])


def _candidate(rec: dict[str, Any]) -> Candidate:
    """The :class:`Candidate` of a record that :func:`~autoshrink.journal.check_record` passed."""
    score = rec["score"]
    metrics = {k: (math.nan if v is None else float(v)) for k, v in rec["metrics"].items()}
    return Candidate(
        step=rec["step"],
        index=rec["index"],
        key=rec["key"],
        num_edges=rec["edges"],
        status=rec.get("status", "ok"),
        score=-math.inf if score is None else float(score),
        metrics=metrics,
        cell=_cell(rec),
        removed_edge=rec.get("removed_edge"),
        seconds=float(rec.get("seconds") or 0.0),
        detail=dict(rec.get("detail") or {}),
    )


@dataclass(frozen=True, kw_only=True)
class BestFields:
    """What the report reads of ``result.json``'s ``best``: its key (a schema, never built)."""

    key: str


@dataclass(frozen=True, kw_only=True)
class ResultFields:
    """The JSON types of what the report reads of ``result.json`` (a schema, never built)."""

    best: BestFields | None = None


def read_run(run_dir: str | Path) -> RunData:
    """Read ``run_dir`` (``config.json``, ``journal.jsonl``, ``result.json`` when present);
    anything malformed is a one-line error naming the file (and the key, or the line)."""
    from autoshrink.config import SearchConfig  # not for a bench folder's report

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG
    if not config_path.exists():
        raise JournalError(f"{run_dir}: not a run folder (no {CONFIG})")
    config = read_json_file(config_path, ConfigError, "config")
    SearchConfig.check_json(config, str(config_path))
    result_path = run_dir / RESULT
    result = None
    if result_path.exists():
        result = read_json_file(result_path, JournalError, "result")
        check_schema(result_path, result, ResultFields, JournalError)
    if result is not None and not (run_dir / JOURNAL).exists():
        raise JournalError(f"{run_dir}: {RESULT} says the search ended, but it has no {JOURNAL}")
    records = read_json_lines(run_dir / JOURNAL)
    run = _run_data(run_dir, config, records, result)
    best = (result or {}).get("best")
    if best and all(c.key != best["key"] for c in run.candidates):  # a cut or replaced journal
        raise JournalError(
            f"{run_dir / JOURNAL} holds no record of the best cell {best['key']} that {RESULT} "
            "names (cut short, or another run's?); restore it"
        )
    return run


def _run_data(
    run_dir: Path, config: dict[str, Any], records: list[dict[str, Any]], result: Any
) -> RunData:
    """The :class:`RunData` of a run folder's checked files; the records a path that a
    retrained candidate changed left behind (the last :class:`~autoshrink.journal.OffPathRecord`
    names them) are left out."""
    left = off_path(records)
    off_keys, off_reuses = set(left["keys"]), {(s, k) for s, k in left["reuses"]}
    candidates = [
        _candidate(r) for r in records if record_type(r) == "candidate" and r["key"] not in off_keys
    ]
    last = {c.key: i for i, c in enumerate(candidates)}  # --retry-failed: the last one counts
    candidates = [c for i, c in enumerate(candidates) if last[c.key] == i]
    events = [r for r in records if record_type(r) == "event"]
    by_key = {c.key: c for c in candidates}
    reused = {
        (r["step"], r["key"]): replace(
            by_key[r["key"]],
            step=r["step"],
            index=r["index"],
            removed_edge=r.get("removed_edge"),
            cell=_cell(r),
            seconds=0.0,
            first_step=r["first_step"],
        )
        for r in records
        if record_type(r) == "reuse"
        and r["key"] in by_key
        and (r["step"], r["key"]) not in off_reuses
    }
    return RunData(run_dir, config, candidates, events, result, list(reused.values()))
