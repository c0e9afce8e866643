"""The ranges a setting must lie in, by name, and the checks that name what breaks one.

:data:`REQUIREMENTS` holds each range's test (NaN fails every one). :func:`check_fields`
checks the fields of a settings object (the proxy trainings, final training) and
:func:`check_at_most` their upper limits, :func:`require`
one value under the name the user typed it by (a command-line flag) when it is given, and
:func:`check_value` one that must be there (a count, a seed). No torch here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType

from autoshrink.errors import ConfigError

#: A count: an integer (NumPy's too), not a bool, and at least 1 (not 2.5, not NaN).
WHOLE = "a whole number >= 1"
#: A seed: an integer >= 0 (``random.Random(-s)`` draws what ``random.Random(s)`` does).
SEED = "a whole number >= 0"
#: The largest seed a seed checked by :func:`check_seed` may be (the command line's ``--seed``):
#: torch's generators take seeds of 64 bits.
MAX_SEED = 2**63 - 1
#: The largest image size, channel count, batch or repeat count a setting takes (an option, a
#: file's field): beyond it, sizes overflow torch's 64-bit shapes or a run would never end.
MAX_COUNT = 2**16
#: The most classes a network may have (ImageNet-21k has 21,841).
MAX_CLASSES = 2**24
#: The requirements :func:`check_fields` and :func:`require` know, with their tests.
REQUIREMENTS: Mapping[str, Callable[[float], bool]] = MappingProxyType(
    {
        WHOLE: lambda v: is_integer(v) and v >= 1,
        SEED: lambda v: is_integer(v) and v >= 0,
        ">= 1": lambda v: v >= 1,
        ">= 0": lambda v: v >= 0,
        "finite and > 0": lambda v: 0 < v < math.inf,
        "finite and >= 0": lambda v: 0 <= v < math.inf,
    }
)


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (NumPy's too) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is a Python int or float and not a bool (JSON's ``true`` is no
    number, though Python takes it for 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_fields(where: str, settings: object, rules: dict[str, tuple[str, ...]]) -> None:
    """Raise a ConfigError naming the first field of ``settings`` that breaks its rule
    (``{requirement: field names}``, requirements from :data:`REQUIREMENTS`) and its value."""
    for requirement, names in rules.items():
        for name in names:
            value = getattr(settings, name)
            if not REQUIREMENTS[requirement](value):
                raise ConfigError(f"{where}: {name} must be {requirement}, got {value!r}")


def check_at_most(where: str, settings: object, limits: dict[str, int]) -> None:
    """Raise a ConfigError naming the first field of ``settings`` above its limit (``limits``:
    ``{field name: the most it may be}``) and its value: a file's sizes beyond torch's shapes."""
    for name, most in limits.items():
        value = getattr(settings, name)
        if value > most:
            raise ConfigError(f"{where}: {name} must be at most {most}, got {value}")


def require(name: str, value: float | None, requirement: str) -> None:
    """Raise a ConfigError when ``value`` (``None``: not given, nothing to check) breaks
    ``requirement`` (a key of :data:`REQUIREMENTS`), naming it by ``name`` (a flag, say)."""
    if value is not None:
        check_value(name, value, requirement)


def check_seed(name: str, seed: object) -> None:
    """Raise a ConfigError naming ``name`` unless ``seed`` is one torch's generators take as
    given, a whole number in ``0..MAX_SEED`` (where it goes to ``torch.manual_seed`` itself,
    which raised its own error for a larger one, or a string, and took -1 for 2**64 - 1)."""
    check_value(name, seed, SEED)
    if seed > MAX_SEED:  # type: ignore[operator]
        raise ConfigError(f"{name} must be at most {MAX_SEED}, got {seed}")


def check_value(name: str, value: object, requirement: str) -> None:
    """Raise a ConfigError naming ``name`` when ``value`` breaks ``requirement`` (a key of
    :data:`REQUIREMENTS`); ``None``, or a value of another type, breaks every one."""
    try:
        holds = value is not None and REQUIREMENTS[requirement](value)  # type: ignore[arg-type]
    except TypeError:  # a string against a number's test, say
        holds = False
    if not holds:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        raise ConfigError(f"{name} must be {requirement}, got {shown}")
