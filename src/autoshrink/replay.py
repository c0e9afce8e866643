"""Resuming a search: the journal's records handed back as the strategy asks for them again.

The strategy of a resumed search is rebuilt from the seed and asks for the same candidates in
the same order; :class:`Replay` answers from the journal and refuses a journal the strategy
does not retrace (it was made by another config).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from autoshrink.errors import JournalError
from autoshrink.journal import Journal
from autoshrink.strategies.base import Proposal

log = logging.getLogger(__name__)


class Replay:
    """The journal's candidate records as the resumed strategy asks for them again.

    ``done`` maps each canonical key to its (last) record, ``stages`` each ``(key, stage)`` to
    its progressive screening stage record; a record with a field of the wrong JSON type is a
    :class:`JournalError` naming its line (:func:`~autoshrink.journal.check_record`), raised
    before anything trains. Every record must be asked for
    again: :meth:`asked` drops the keys of a batch, and :meth:`check` raises a
    :class:`JournalError` naming a record the strategy passed by -- the journal was not made
    by this config. With ``retry_failed``, ``"failed"`` records are left out of ``done`` (so
    they train again), and the records journalled after the first of them may go unasked:
    a retrained candidate can change the search's path.
    """

    def __init__(self, journal: Journal, repair: bool, retry_failed: bool) -> None:
        self.path = journal.path
        self.done: dict[str, dict[str, Any]] = {}
        self.stages: dict[tuple[str, int], dict[str, Any]] = {}  # progressive screening
        self._unasked: dict[str, tuple[int, int]] = {}  # key -> (line, step)
        for line, rec in journal.numbered(repair, check=True):  # each record read back checked
            if rec.get("type") == "stage":
                self.stages[rec["key"], rec["stage"]] = rec
            if rec.get("type") == "candidate":
                self.done[rec["key"]] = rec
                self._unasked.setdefault(rec["key"], (line, rec.get("step", -1)))
        failed = [k for k, rec in self.done.items() if rec["status"] == "failed"]
        self.horizon = min((self._unasked[k][0] for k in failed), default=math.inf)
        if retry_failed:
            for key in failed:
                del self.done[key]
            if failed:
                log.info("%s: retraining %d failed candidates", self.path, len(failed))
        else:
            self.horizon = math.inf

    def asked(self, proposals: list[Proposal]) -> None:
        """The strategy asked for ``proposals``; before any of them trains, every earlier
        record must have been asked for."""
        for p in proposals:
            self._unasked.pop(p.genotype.key, None)
        if any(p.genotype.key not in self.done for p in proposals):
            self.check()

    def check(self) -> None:
        strays = sorted(v + (k,) for k, v in self._unasked.items() if v[0] < self.horizon)
        if strays:
            line, step, key = strays[0]
            raise JournalError(
                f"{self.path}: line {line} holds candidate {key} (step {step}) that this "
                f"config's search did not ask for ({len(strays)} such); the journal was not "
                "made with this config"
            )

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
