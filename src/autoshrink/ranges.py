"""The ranges a setting must lie in, by name, and the checks that name what breaks one.

:data:`REQUIREMENTS` holds each range's test (NaN fails every one). :func:`check_fields`
checks the fields of a settings object (the RNN proxy and final training), :func:`require`
one value under the name the user typed it by (a command-line flag). No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

from autoshrink.errors import ConfigError

#: The requirements :func:`check_fields` and :func:`require` know, with their tests.
REQUIREMENTS: Mapping[str, Callable[[float], bool]] = MappingProxyType(
    {
        ">= 1": lambda v: v >= 1,
        ">= 0": lambda v: v >= 0,
        "finite and > 0": lambda v: 0 < v < math.inf,
        "finite and >= 0": lambda v: 0 <= v < math.inf,
    }
)


def check_fields(where: str, settings: object, rules: dict[str, tuple[str, ...]]) -> None:
    """Raise a ConfigError naming the first field of ``settings`` that breaks its rule
    (``{requirement: field names}``, requirements from :data:`REQUIREMENTS`) and its value."""
    for requirement, names in rules.items():
        for name in names:
            value = getattr(settings, name)
            if not REQUIREMENTS[requirement](value):
                raise ConfigError(f"{where}: {name} must be {requirement}, got {value!r}")


def require(name: str, value: float | None, requirement: str) -> None:
    """Raise a ConfigError when ``value`` (``None``: not given, nothing to check) breaks
    ``requirement`` (a key of :data:`REQUIREMENTS`), naming it by ``name`` (a flag, say)."""
    if value is not None and not REQUIREMENTS[requirement](value):
        raise ConfigError(f"{name} must be {requirement}, got {value:g}")
