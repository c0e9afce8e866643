"""Files replaced in one step: written beside their place, then renamed over it.

A reader -- a report made while a search runs, a resume after a kill -- sees the old file or
the new one, never half of one. :func:`write_json` is how the package writes its JSON files:
whole, and strict (a non-finite number is ``null``). The temporary file is hidden
(``.NAME.PID.tmp``) and named by process, so two processes replacing the same file (a shared
latency table) do not write into each other's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoshrink.journal import finite_or_none


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


def write_json(path: str | Path, value: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Replace ``path`` by ``value`` as strict JSON in one step: NumPy and torch scalars as the
    numbers they hold, a non-finite number as ``null`` (:func:`finite_or_none`)."""
    text = json.dumps(finite_or_none(value), indent=indent, sort_keys=sort_keys, allow_nan=False)
    write_text_atomic(path, text + "\n")
