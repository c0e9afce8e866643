"""Values as strict JSON holds them: :func:`finite_or_none` turns NumPy and torch scalars into
Python numbers and non-finite floats into ``null``; :func:`as_read_back` is a value as a JSON
file gives it back, to compare with what a file holds; :func:`not_json` finds the value of a
mapping that JSON cannot hold."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """For strict JSON, recursively: NumPy and torch scalars (an evaluator's metrics, say) as
    the Python numbers they hold, and non-finite floats as ``None``."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a 0-d array
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def as_read_back(value: Any) -> Any:
    """``value`` as a JSON file gives it back once written and read (tuples as lists, keys as
    strings, non-finite numbers as ``None``: :func:`finite_or_none`), to compare with what a
    file holds."""
    return json.loads(json.dumps(finite_or_none(value)))


def not_json(value: Any, key: str = "") -> str | None:
    """The dotted key and type of the first value in ``value`` (nested dicts, lists) that
    ``json.dumps`` refuses, as ``"data_dir (PosixPath)"``; ``None`` when there is none."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = not_json(v, f"{key}.{k}" if key else str(k))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next((f for f in (not_json(v, key) for v in value) if f is not None), None)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return f"{key} ({type(value).__name__})"
    return None
