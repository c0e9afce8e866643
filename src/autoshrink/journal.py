"""The run journal: one JSON line per evaluated candidate, appended as results arrive.

Each record is flushed and fsynced before the search goes on, so a killed run (even
``kill -9``) loses at most the candidate in flight. :meth:`Journal.records` reads the journal
back for ``--resume``; a torn last line (a kill mid-write) is dropped with a warning, any
other malformed line is an error that names the line. Non-finite numbers are written as
``null`` so every JSON tool can read the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from autoshrink.errors import JournalError

log = logging.getLogger(__name__)


def finite_or_none(value: Any) -> Any:
    """Replace non-finite floats (recursively) by ``None`` for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


class Journal:
    """An append-only JSON-lines file of candidate records."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """All complete records; a torn final line is dropped (and cut from the file)."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        records: list[dict[str, Any]] = []
        good_bytes = 0
        for n, line in enumerate(lines, start=1):
            last = n == len(lines)
            if not line.strip():
                good_bytes += len(line) + (0 if last else 1)
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as err:
                if last:  # written without its newline: the run was killed mid-write
                    log.warning("%s: dropping a torn last record (line %d)", self.path, n)
                    with open(self.path, "r+b") as f:
                        f.truncate(good_bytes)
                    break
                raise JournalError(f"{self.path}: line {n} is not a JSON record ({err})") from None
            records.append(rec)
            good_bytes += len(line) + (0 if last else 1)
            if last:  # a whole record without its newline: end the line before appending
                with open(self.path, "ab") as f:
                    f.write(b"\n")
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (flush + fsync)."""
        line = json.dumps(finite_or_none(record), sort_keys=True, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
