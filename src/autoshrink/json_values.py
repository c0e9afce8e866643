"""Values as strict JSON holds them: :func:`finite_or_none` turns NumPy and torch scalars into
Python numbers and non-finite floats into ``null``; :func:`as_read_back` is a value as a JSON
file gives it back, to compare with what a file holds."""

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
