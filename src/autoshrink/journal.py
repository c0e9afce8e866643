"""The run journal and the run folder's lock.

:class:`Journal`: one JSON line per evaluated candidate, appended as results arrive (and one
per cell a step re-proposes after an earlier step evaluated it, :class:`ReuseRecord`). Each
record goes to the file in one ``write`` and is fsynced before the search goes on, so a killed
run (even ``kill -9``) loses at most the candidate in flight; a write that fails (a full disk)
is undone -- the file is cut back to its last whole record -- and raised as a one-line
:class:`~autoshrink.errors.JournalError`. :meth:`Journal.records` reads the journal back for
``--resume``: a torn last line without its newline (a kill mid-write) is dropped with a
warning; malformed lines at the end of the file are an error that names the line, and
``repair=True`` (``--resume --repair``) cuts them off into ``journal.jsonl.torn``; a malformed
line followed by good records is always an error. Non-finite numbers are written as ``null``
so every JSON tool can read the file.

:class:`RunLock`: an exclusive ``flock`` on ``run.lock`` in the run folder, holding the pid of
its owner, so two processes never search in one folder. The kernel drops the lock when its
process dies, so the lock of a dead process is simply taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from autoshrink.errors import CellError, JournalError
from autoshrink.graph import Cell
from autoshrink.json_values import finite_or_none
from autoshrink.processes import process_running
from autoshrink.ranges import is_integer
from autoshrink.user_files import json_type_problem, unique_keys

log = logging.getLogger(__name__)

LOCK = "run.lock"
#: How many hex digits of the run's config hash (``fingerprint.json``) every record carries
#: as its ``config_hash``: a resume refuses a record of another config by it.
CONFIG_HASH_DIGITS = 12


@dataclass
class _Scan:
    """What :meth:`Journal.numbered` read: the lines, the ``(line number, record)`` of each
    good record, the bytes up to the end of the last, and the first malformed line after it
    (line number, offset, error)."""

    lines: int
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    good_bytes: int = 0
    bad: tuple[int, int, ValueError] | None = None


@dataclass(frozen=True, kw_only=True)
class RecordDetail:
    """The JSON types of the entries of a record's ``detail`` that are read back."""

    images_trained: int = 0
    class_accuracy: list[float | None] | None = None


@dataclass(frozen=True, kw_only=True)
class CandidateRecord:
    """The JSON types of the fields of a candidate record that ``--resume`` and the report read
    (one without a default must be there); a schema for :func:`check_record`, never built."""

    key: str
    step: int
    index: int
    edges: int
    score: float | None
    metrics: dict[str, float | None]
    cell: dict[str, Any]
    status: str = "ok"  # journals of early versions lack it
    detail: RecordDetail = field(default_factory=RecordDetail)
    removed_edge: list[int] | None = None
    seed: int | None = None
    seconds: float | None = None
    # the run's config hash (its first CONFIG_HASH_DIGITS); journals before 2026-12-07 lack it
    config_hash: str | None = None
    # the digest of its data (as many digits), where the evaluator has one (rnn text; since
    # 2026-12-07)
    data_hash: str | None = None


@dataclass(frozen=True, kw_only=True)
class StageRecord(CandidateRecord):
    """A progressive screening stage's record: a candidate record with its ``stage``."""

    stage: int


@dataclass(frozen=True, kw_only=True)
class ReuseRecord:
    """A step re-proposed a cell that an earlier step (``first_step``) evaluated: the search
    takes that record's result, and this record says the step had the cell (for the report)."""

    key: str
    step: int
    index: int
    first_step: int
    cell: dict[str, Any]  # as this step proposed it: the same key, perhaps other node numbers
    removed_edge: list[int] | None = None
    config_hash: str | None = None  # as a candidate record's
    data_hash: str | None = None  # as a candidate record's


@dataclass(frozen=True, kw_only=True)
class OffPathRecord:
    """The event a search that ended writes when a retrained candidate changed its path: the
    keys of the candidates, and the ``[step, key]`` of the reuse records, off its final path
    (the report leaves them out); the last one counts."""

    keys: list[str]
    reuses: list[tuple[int | str, ...]]


#: The ``event`` of an :class:`OffPathRecord`.
OFF_PATH = "off_path"


def off_path(records: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    """The last :class:`OffPathRecord` among ``records`` (checked ones) as ``{"keys": [...],
    "reuses": [[step, key], ...]}``; both empty when there is none."""
    last: dict[str, list[Any]] = {"keys": [], "reuses": []}
    for rec in records:
        if record_type(rec) == "event" and rec.get("event") == OFF_PATH:
            last = {"keys": rec["keys"], "reuses": rec["reuses"]}
    return last


#: The schema of each ``type`` of record that is read back (a record without one: candidate).
RECORD_SCHEMAS = {"candidate": CandidateRecord, "stage": StageRecord, "reuse": ReuseRecord}
#: Every ``type`` a journal holds: those read back, and ``event`` (a retry, say), which is not.
RECORD_TYPES = (*RECORD_SCHEMAS, "event")
#: The statuses an evaluator gives a candidate.
EVALUATED = ("ok", "diverged", "failed")
#: The statuses of a candidate: what an evaluation gave (:data:`EVALUATED`) and the search's
#: own verdicts before training (``rejected``, ``screened``).
STATUSES = (*EVALUATED, "rejected", "screened")
#: Fields that count from 0 (steps, positions, stages) or measure time: never negative.
NON_NEGATIVE = ("step", "index", "first_step", "stage", "edges", "seconds")


def record_type(rec: dict[str, Any]) -> Any:
    """The ``type`` of a journal record: ``"candidate"`` where it has none (journals of early
    versions wrote candidates without one)."""
    return rec.get("type", "candidate")


def check_record(path: Path, line: int, rec: dict[str, Any]) -> None:
    """Raise a one-line :class:`JournalError` naming ``path``, ``line`` and the field when the
    record ``rec`` lacks a field that is read back or holds one of the wrong JSON type."""
    problem = record_problem(rec)
    if problem is not None:
        raise JournalError(f"{path}: line {line}: {problem}")


def record_problem(rec: dict[str, Any]) -> str | None:
    """What keeps ``rec`` from being read back (:func:`check_record`), or ``None``."""
    kind = record_type(rec)
    problem = json_type_problem(str, kind, "type")
    if problem is None and kind not in RECORD_TYPES:
        problem = f"unknown record type {kind!r}; expected one of {', '.join(RECORD_TYPES)}"
    if problem is None and kind in RECORD_SCHEMAS:
        problem = json_type_problem(RECORD_SCHEMAS[kind], rec) or value_problem(rec)
        problem = problem or cell_problem(rec)
    if problem is None and kind == "event" and rec.get("event") == OFF_PATH:
        problem = json_type_problem(OffPathRecord, rec)
        pairs = rec.get("reuses", [])
        if problem is None and not all(
            len(p) == 2 and is_integer(p[0]) and isinstance(p[1], str) for p in pairs
        ):
            problem = '"reuses" must be a list of [step, key] pairs'
    return problem


def value_problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with the values of a record whose JSON types fit: a negative count or
    time (:data:`NON_NEGATIVE`), an unknown ``status``; ``None`` when nothing is."""
    for name in NON_NEGATIVE:
        value = rec.get(name)
        if value is not None and value < 0:
            return f'"{name}" must be >= 0, got {value}'
    status = rec.get("status", "ok")
    if status not in STATUSES:
        return f'"status" must be one of {", ".join(STATUSES)}, got {status!r}'
    return None


def cell_problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with the cell of a record whose JSON types fit: not a cell, not the cell
    of the record's ``key`` (a resume replays by key, the report draws the cell: each would
    read another candidate), or not of the record's number of ``edges``; ``None`` when
    nothing is."""
    try:
        cell = Cell.from_dict(rec["cell"], "its cell")
    except CellError as err:
        return str(err)
    if cell.key != rec["key"]:
        return (
            f'its cell is not the cell of its "key" {rec["key"]} (that cell\'s key is {cell.key})'
        )
    if "edges" in rec and rec["edges"] != cell.num_edges:
        return f'"edges" is {rec["edges"]}, its cell has {cell.num_edges}'
    return None


def _no_constant(name: str) -> float:
    """Refuse ``NaN`` and ``Infinity``: Python's JSON reads them, the journal never holds them
    (a non-finite number is written as ``null``)."""
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    """A JSON number as a float; one beyond float's range (``1e400``, which Python reads as
    infinity) is refused, as ``Infinity`` is."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond a float's range")
    return value


def record_line(record: dict[str, Any]) -> str:
    """``record`` as a journal line: its JSON, keys sorted, NumPy scalars as numbers and NaN or
    infinity as ``null`` (:func:`~autoshrink.json_values.finite_or_none`), with its newline; a
    :class:`TypeError` or :class:`ValueError` for what JSON cannot hold."""
    return json.dumps(finite_or_none(record), sort_keys=True, allow_nan=False) + "\n"


def parse_record(line: str | bytes) -> dict[str, Any]:
    """The record of one journal line: a JSON object of finite numbers, each key once, else a
    ``ValueError`` (also for nesting too deep for the parser)."""
    try:
        rec = json.loads(
            line, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=unique_keys
        )
    except RecursionError:
        raise ValueError("nested too deep") from None
    if not isinstance(rec, dict):
        raise ValueError("not an object")
    return rec


class Journal:
    """An append-only JSON-lines file of candidate records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """All complete records, read only (see :meth:`numbered`): safe beside a running
        search."""
        return [rec for _, rec in self.numbered()]

    def numbered(
        self, repair: bool = False, check: bool = False, tidy: bool = False
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(line number, record)`` of every complete record.

        A torn final line without its newline is dropped; malformed lines after the last good
        record are an error, and so is any other malformed line. The file is only read,
        unless ``tidy`` (the search does, with the run's lock, before it appends): then the
        torn final line is cut from the file, a whole last record without its newline gets
        one, and with ``repair`` the malformed lines at the end are cut and kept in
        ``<journal>.torn``. With ``check``, each record goes through :func:`check_record`
        before anything is cut.
        """
        raw = self.read()
        scan = self._scan(raw, check)
        if scan.bad is not None:
            self._cut_bad_tail(raw, scan.bad, last_line=scan.lines, repair=repair, tidy=tidy)
        elif tidy and scan.records and scan.good_bytes == len(raw) and not raw.endswith(b"\n"):
            with open(self.path, "ab") as f:  # a whole record without its newline: end it
                f.write(b"\n")
        return scan.records

    def _scan(self, raw: bytes, check: bool) -> _Scan:
        """The journal's records, and its first malformed line if nothing good follows it (a
        malformed line before a good record is a :class:`JournalError`)."""
        lines = raw.split(b"\n")
        scan = _Scan(lines=len(lines))
        offset = 0
        for n, line in enumerate(lines, start=1):
            end = offset + len(line) + (0 if n == len(lines) else 1)
            if line.strip():
                try:
                    rec = parse_record(line)
                except ValueError as err:
                    if scan.bad is None:
                        scan.bad = (n, offset, err)
                else:
                    if scan.bad is not None:  # a good record after a bad line: not a torn tail
                        raise JournalError(
                            f"{self.path}: line {scan.bad[0]} is not a JSON record ({scan.bad[2]})"
                        )
                    if check:
                        check_record(self.path, n, rec)
                    scan.records.append((n, rec))
                    scan.good_bytes = end
            offset = end
        return scan

    def _cut_bad_tail(
        self,
        raw: bytes,
        bad: tuple[int, int, ValueError],
        *,
        last_line: int,
        repair: bool,
        tidy: bool,
    ) -> None:
        """With ``tidy``, cut the malformed lines at the end of the file (a torn last line
        always, more with ``repair``, kept in ``<journal>.torn``); more than a torn last line
        without ``repair`` is a :class:`JournalError`."""
        n, start, error = bad
        if n == last_line:  # written without its newline: killed (or writing) mid-record
            if not tidy:
                return
            log.warning("%s: dropping a torn last record (line %d)", self.path, n)
        elif repair and tidy:
            torn = self.path.with_name(self.path.name + ".torn")
            with open(torn, "ab") as f:
                f.write(raw[start:])
            log.warning("%s: cut the torn tail from line %d into %s", self.path, n, torn)
        else:
            raise JournalError(
                f"{self.path}: line {n} is not a JSON record ({error}); it is the journal's "
                "torn tail: --resume --repair drops it"
            )
        with open(self.path, "r+b") as f:
            f.truncate(start)

    def read(self) -> bytes:
        """The journal's bytes (none when there is no journal yet); a folder in its place or
        an unreadable file is a :class:`JournalError`."""
        if not self.path.exists():
            return b""
        if not self.path.is_file():
            raise JournalError(f"{self.path}: not a file; the journal must be a file")
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise JournalError(f"{self.path}: cannot read the journal ({err.strerror})") from None

    def check_appendable(self) -> None:
        """Raise the :class:`JournalError` :meth:`append` would raise when the journal cannot be
        appended to (an immutable file, a read-only disk), before a resume trains anything."""
        os.close(self._open_to_append())

    def _open_to_append(self) -> int:
        """A descriptor that appends to the journal (made if need be), else the
        :class:`JournalError` that says so."""
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:  # the folder became unwritable, say
            raise JournalError(
                f"cannot append to {self.path}: {err.strerror or err}; the records before are "
                "intact, resume with --resume once it is fixed"
            ) from None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (one ``write``, then fsync); on failure (a full disk) cut
        the file back to what it held and raise a :class:`JournalError`; a record that would
        not read back (:func:`check_record`: a custom strategy's note of the wrong type, say)
        is refused before anything is written."""
        line = record_line(record)
        problem = record_problem(json.loads(line))
        if problem is not None:
            raise JournalError(
                f"{self.path}: refusing to append a record that could not be read back: {problem}"
            )
        data = line.encode("utf-8")
        fd = self._open_to_append()
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError as err:
                with contextlib.suppress(OSError):  # else resume drops the torn line
                    os.ftruncate(fd, size)
                why = "the disk is full" if err.errno == errno.ENOSPC else err.strerror or err
                # a new search that wrote no record takes its folder back: nothing to resume
                go_on = (
                    "the records before are intact, resume with --resume once it is fixed"
                    if size
                    else "no record was written yet: run the same command again once it is fixed"
                )
                raise JournalError(f"cannot append to {self.path}: {why}; {go_on}") from None
        finally:
            os.close(fd)


def lock_holder(run_dir: Path) -> int | None:
    """The pid of the live process whose search holds ``run_dir`` (its ``run.lock``), or
    ``None``: no lock file (a search removes it when it ends), or that of a dead process (a
    kill). Reads only; a process that is starting or ending at this moment may be missed."""
    try:
        text = (Path(run_dir) / LOCK).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and process_running(int(text)) else None


class RunLock:
    """An exclusive lock on a run folder (``run.lock``, holding the owner's pid).

    Use as a context manager; a second holder gets a :class:`JournalError` naming the pid of
    the first. The lock is an ``flock``, dropped by the kernel when its process dies, so a
    stale ``run.lock`` (of a dead pid) is taken over.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting and write this process's pid into ``run.lock``; a
        :class:`JournalError` naming the holder when another process has it (the lock of a dead
        process is taken over, with a warning)."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise JournalError(
                    f"{self.path.parent} is in use by {who} ({self.path}); wait for it to "
                    "end or stop it"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder unlinked after we opened it
                break
            os.close(fd)
        stale = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if stale.isdigit() and int(stale) != os.getpid():
            state = "alive, not searching" if process_running(int(stale)) else "dead"
            log.warning("%s: taking over the lock of process %s (%s)", self.path, stale, state)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:  # a full disk: name the file (the lock goes with the fd)
            with contextlib.suppress(OSError):  # held, so ours to remove (as release does)
                self.path.unlink()
            os.close(fd)
            raise OSError(err.errno, err.strerror, str(self.path)) from None
        self._fd = fd

    def release(self) -> None:
        """Delete ``run.lock`` and drop the lock; a no-op when it is not held. A ``run.lock``
        that cannot be deleted (the folder became read-only) is left with a warning: the lock
        itself goes with its descriptor, and the next search takes the file over."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as err:  # never hide the error that ends the search, if any
            log.warning("%s: cannot remove the lock file (%s)", self.path, err.strerror or err)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
