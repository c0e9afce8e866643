"""What differs between two saved settings, named for a one-line error.

A run that resumes must have the settings it was made with; when they differ, the error names
what changed, value by value (``k: 4 -> 3``), the first three of them (:func:`first_three`).
"""

from __future__ import annotations

import json
from typing import Any


def differences(recorded: Any, current: Any, path: str = "") -> list[str]:
    """What differs between two JSON values, leaf by leaf: ``"path: old -> new"`` (the values
    as JSON; ``"path changed"`` when one is long), in the order of ``recorded``'s keys."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        keys = [*recorded, *(k for k in current if k not in recorded)]
        found: list[str] = []
        for key in keys:
            where = f"{path}.{key}" if path else str(key)
            found += differences(recorded.get(key), current.get(key), where)
        return found
    if recorded == current:
        return []
    old, new = json.dumps(recorded), json.dumps(current)
    if max(len(old), len(new)) > 40:
        return [f"{path} changed"]
    return [f"{path}: {old} -> {new}"]


def first_three(changed: list[str]) -> str:
    """The first three of :func:`differences`, and how many more there are."""
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return ", ".join(changed[:3]) + more
