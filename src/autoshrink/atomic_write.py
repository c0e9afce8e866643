"""Files replaced in one step: written beside their place, then renamed over it.

A reader -- a report made while a search runs, a resume after a kill -- sees the old file or
the new one, never half of one. The temporary file is hidden (``.NAME.PID.tmp``) and named by
process, so two processes replacing the same file (a shared latency table) do not write into
each other's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Replace ``path`` by what ``write(tmp)`` writes into a temporary file beside it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one step."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
