"""Resuming a search: the journal's records handed back as the strategy asks for them again.

The strategy of a resumed search is rebuilt from the seed and asks for the same candidates in
the same order; :class:`Replay` answers from the journal and refuses a journal the strategy
does not retrace (it was made by another config).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from autoshrink.errors import DataError, JournalError
from autoshrink.journal import CONFIG_HASH_DIGITS, OFF_PATH, Journal, off_path, record_type
from autoshrink.strategies.base import Proposal

log = logging.getLogger(__name__)

#: A search's score of a candidate's metrics (:class:`~autoshrink.objectives.Score`).
Scorer = Callable[[Mapping[str, float]], float]


class Replay:
    """The journal's candidate records as the resumed strategy asks for them again
    (:meth:`read` reads them from the journal).

    ``done`` maps each canonical key to its (last) record, ``stages`` each ``(key, stage)`` to
    its progressive screening stage record, ``reused`` holds the ``(step, key)`` of each
    :class:`~autoshrink.journal.ReuseRecord`; a record with a field of the wrong JSON type is a
    :class:`JournalError` naming its line (:func:`~autoshrink.journal.check_record`), raised
    before anything trains. Every record must be asked for
    again: :meth:`asked` drops the keys of a batch, and :meth:`check` raises a
    :class:`JournalError` naming a record the strategy passed by -- the journal was not made
    by this config. With ``retry_failed``, ``"failed"`` records are left out of ``done`` (so
    they train again).

    A retrained candidate can change the search's path, so two kinds of records may go
    unasked: those journalled while a candidate that has since been retrained with a result
    was ``"failed"`` (from its first ``"failed"`` record to the record that replaced it -- an
    earlier ``--retry-failed`` session, finished or killed, took another path from there), and
    with ``retry_failed`` those journalled from the first ``"failed"`` record of a candidate
    this session retrains (from the moment the strategy asks for it). Any other unasked record
    is refused, so a foreign record is caught whatever retries the journal went through.
    """

    @classmethod
    def read(
        cls,
        journal: Journal,
        repair: bool,
        retry_failed: bool,
        config_hash: str,
        score: Scorer | None = None,
    ) -> Replay:
        """The replay of ``journal``'s records, each checked as it is read back
        (:meth:`~autoshrink.journal.Journal.numbered`: a torn last line is
        cut from the file, and with ``repair`` malformed lines at its end too)."""
        records = journal.numbered(repair, check=True, tidy=True)
        return cls(journal.path, records, retry_failed, config_hash, score)

    def __init__(
        self,
        path: Path,
        records: Iterable[tuple[int, dict[str, Any]]],
        retry_failed: bool,
        config_hash: str,
        score: Scorer | None = None,
    ) -> None:
        """``records``: the journal's ``(line number, record)`` pairs, in order;
        ``config_hash``: the run's (``SearchConfig.fingerprint()``), whose first digits
        (:attr:`config_stamp`) a record's own ``config_hash`` must be, where it has one
        (:func:`check_belongs`); ``score``: the run's score, which gave each ``"ok"``
        candidate's from its metrics (:func:`check_score`; ``None``: not checked)."""
        self.path = path
        #: What every record of this run carries as its ``config_hash``: the first
        #: :data:`~autoshrink.journal.CONFIG_HASH_DIGITS` of the run's config hash.
        self.config_stamp = config_hash[:CONFIG_HASH_DIGITS]
        #: What this session's records carry as their ``data_hash`` (:meth:`check_data`).
        self.data_stamp: str | None = None
        self.done: dict[str, dict[str, Any]] = {}
        self.stages: dict[tuple[str, int], dict[str, Any]] = {}  # progressive screening
        self.reused: set[tuple[int, str]] = set()  # (step, key) of the reuse records
        self.reuses_met: set[tuple[int, str]] = set()  # ... that this session's path met
        records = list(records)
        self._off_path = off_path(rec for _, rec in records)  # the last one said
        self._unasked: dict[str, tuple[int, int]] = {}  # key -> (line, step)
        failed_since: dict[str, int] = {}  # key -> line of its first "failed" record since
        self._superseded: list[tuple[int, int]] = []  # [first failed line, replacing line)
        for line, rec in records:
            check_belongs(path, line, rec, self.config_stamp, self.done)
            check_score(path, line, rec, score)
            kind = record_type(rec)
            if kind == "stage":
                self.stages[rec["key"], rec["stage"]] = rec
            if kind == "reuse":
                self.reused.add((rec["step"], rec["key"]))
            if kind == "candidate":
                key = rec["key"]
                self.done[key] = rec
                self._unasked.setdefault(key, (line, rec.get("step", -1)))
                if rec.get("status", "ok") == "failed":
                    failed_since.setdefault(key, line)
                elif key in failed_since:  # retrained with a result: the old path is spent
                    self._superseded.append((failed_since.pop(key), line))
        # a key -> the line from which records may go unasked once this session retrains it
        self._retrying = failed_since if retry_failed else {}
        self.horizon = math.inf  # lowered as the strategy asks for candidates to retrain
        self._failed = {key: self.done.pop(key) for key in self._retrying}
        if self._retrying:
            log.info("%s: retraining %d failed candidates", self.path, len(self._retrying))

    def check_data(self, stamp: str | None, data: str | None) -> None:
        """Refuse a journal whose records carry another ``data_hash`` than ``stamp``, the digest
        of the data (the folder ``data``) this session trains on: they were trained on other
        data (a resume's ``--data`` naming another folder than the run's, moved); then stamp
        this session's records with it."""
        records = [*self.done.values(), *self._failed.values(), *self.stages.values()]
        other = sorted({str(h) for rec in records if (h := rec.get("data_hash")) is not None})
        other = [h for h in other if h != stamp]
        if stamp is not None and other:
            raise DataError(
                f"{self.path}: its candidates were trained on other data than {data} (data hash "
                f"{other[0]}, {stamp} now); resume with the run's own data (--data DIR)"
            )
        self.data_stamp = stamp

    @property
    def retrying(self) -> frozenset[str]:
        """The keys of the ``"failed"`` candidates this session trains again when asked."""
        return frozenset(self._retrying)

    def keep_failed(self, keys: Iterable[str]) -> None:
        """Train the candidates ``keys`` (of :attr:`retrying`) not again after all: their
        ``"failed"`` records stand (a one-shot search no longer has their parent's weights).
        Before the strategy's batch that holds them is :meth:`asked` for."""
        for key in keys:
            del self._retrying[key]
            self.done[key] = self._failed.pop(key)

    def asked(self, proposals: list[Proposal]) -> None:
        """The strategy asked for ``proposals``; before any of them trains, every earlier
        record must have been asked for."""
        for p in proposals:
            key = p.genotype.key
            self._unasked.pop(key, None)
            if key in self._retrying:  # it trains again: the path may change from here on
                self.horizon = min(self.horizon, self._retrying[key])
        if any(p.genotype.key not in self.done for p in proposals):
            self.check()

    def tolerated(self, line: int) -> bool:
        """Whether the record at ``line`` may go unasked: it is off the search's current
        path because a retrained candidate changed it."""
        return line >= self.horizon or any(a <= line < b for a, b in self._superseded)

    def check(self) -> None:
        """Raise a :class:`JournalError` naming the first record the strategy has not asked for and
        no retrained candidate excuses (:meth:`tolerated`): the journal was not made with this
        config."""
        strays = sorted(v + (k,) for k, v in self._unasked.items() if not self.tolerated(v[0]))
        if strays:
            line, step, key = strays[0]
            raise JournalError(
                f"{self.path}: line {line} holds candidate {key} (step {step}) that this "
                f"config's search did not ask for ({len(strays)} such); the journal was not "
                "made with this config"
            )

    def off_path_record(self) -> dict[str, Any] | None:
        """At the end of a search that ran its whole path (after :meth:`finish`): the event
        naming the records off that path -- the candidates never asked for again (by key) and
        the reuse records this path did not meet (``[step, key]``), left by a path that a
        retrained candidate changed -- for the report to leave out; ``None`` when the journal
        says so already (or there are none)."""
        now: dict[str, list[Any]] = {
            "keys": sorted(self._unasked, key=lambda k: self._unasked[k]),
            "reuses": [list(r) for r in sorted(self.reused - self.reuses_met)],
        }
        if now == self._off_path:
            return None
        self._off_path = now
        return {"type": "event", "event": OFF_PATH, **now}

    def finish(self) -> None:
        """At the end of the search: no record may be left unasked (but those superseded by
        retrained candidates, which are logged)."""
        self.check()
        if self._unasked:
            log.warning(
                "%s: %d records after the retrained candidates were not asked for again "
                "(the search took another path); they stay in the journal, unused",
                self.path,
                len(self._unasked),
            )


def check_belongs(
    path: Path,
    line: int,
    rec: dict[str, Any],
    config_stamp: str,
    done: dict[str, dict[str, Any]],
) -> None:
    """Raise a :class:`JournalError` naming ``line`` when the record ``rec`` is not one of this
    run's: its ``config_hash`` is another config's than the run's ``config_stamp`` (a journal
    copied from another run, a record appended from one), or it is a second record of a
    candidate (``done``: those read so far) whose earlier record did not fail -- only a failed
    candidate is ever trained again."""
    stamp = rec.get("config_hash")
    if stamp is not None and stamp != config_stamp:
        raise JournalError(
            f"{path}: line {line} holds a record of another config (config hash {stamp}, this "
            f"run's {config_stamp}); the journal was not made with this config"
        )
    if record_type(rec) != "candidate" or (earlier := done.get(rec["key"])) is None:
        return
    if earlier.get("status", "ok") != "failed":
        raise JournalError(
            f"{path}: line {line} holds a second record of candidate {rec['key']}, whose earlier "
            f"one is {earlier.get('status', 'ok')!r}, not 'failed'; the journal was not made by "
            "this search alone"
        )


def check_score(path: Path, line: int, rec: dict[str, Any], score: Scorer | None) -> None:
    """Raise a :class:`JournalError` naming ``line`` when the ``"ok"`` candidate record
    ``rec``'s score is not what ``score`` gives its metrics (edited by hand: the resumed search
    would follow it); a last digit of another machine's ``log10`` passes."""
    if score is None or record_type(rec) != "candidate" or rec.get("status", "ok") != "ok":
        return
    metrics = {k: math.nan if v is None else float(v) for k, v in rec["metrics"].items()}
    right, saved = score(metrics), rec["score"]
    said = -math.inf if saved is None else float(saved)
    if said == right or math.isclose(said, right, rel_tol=1e-9):
        return
    raise JournalError(
        f"{path}: line {line}: candidate {rec['key']}'s score {saved} is not what this config's "
        f"score gives its metrics ({right:.6g}); edited? restore the line, or delete it and the "
        "lines after it to train from there again"
    )
