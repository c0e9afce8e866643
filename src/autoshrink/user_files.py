"""Files a user can edit (``config.json``, recipes, journal records, ``result.json``, text
corpora): read them, and check JSON values against Python type annotations, with one-line
errors.

:func:`read_text_file` and :func:`read_json_file` read one, every way it can fail named with
the file; :func:`parse_json` parses JSON text the same way.
:func:`json_type_problem` walks ``bool``, ``int``, ``float``, ``str``, ``None``, ``Any``,
unions, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]`` and dataclasses (their fields by
dotted key) and says, as one phrase, the first value that does not fit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from autoshrink.errors import AutoshrinkError

_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    NoneType: "null",
    Any: "any value",
}


def _show(value: Any) -> str:
    """``value`` as JSON for an error message (Python's ``repr`` for what is no JSON, as a
    NumPy number given in code), cut to 40 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(expected: Any) -> str:
    """The JSON type ``expected`` names, in words (``a number or null``)."""
    if get_origin(expected) in (Union, UnionType):
        return " or ".join(_describe(a) for a in get_args(expected))
    if expected in _NAMES:
        return _NAMES[expected]
    return "a list" if get_origin(expected) in (list, tuple) else "an object"


def _float_sized(number: float) -> bool:
    """Whether ``number`` (an integer, say) can be read as a float: not beyond its range."""
    try:
        float(number)
    except OverflowError:
        return False
    return True


def _fits(expected: Any, value: Any) -> bool:
    """Whether the JSON ``value`` is of the outer type of ``expected`` (items not looked at)."""
    origin = get_origin(expected)
    if origin in (Union, UnionType):
        return any(_fits(a, value) for a in get_args(expected))
    if expected in (int, float):  # JSON has no separate booleans among its numbers
        fits = isinstance(value, (int, expected)) and not isinstance(value, bool)
        return fits and (expected is int or _float_sized(value))
    if expected in (bool, str):
        return isinstance(value, expected)
    if expected is NoneType:
        return value is None
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or is_dataclass(expected):
        return isinstance(value, dict)
    return True  # Any, or an annotation that is not checked


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _first(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p), None)


def json_type_problem(expected: Any, value: Any, key: str = "") -> str | None:
    """What is wrong with the JSON ``value`` of ``key`` as an ``expected`` -- an annotation:
    ``bool``, ``int``, ``float``, ``str``, ``None``, ``Any``, a union, ``list[X]``,
    ``tuple[X, ...]``, ``dict[str, X]`` or a dataclass, whose fields are checked by their dotted
    key and must be there unless they have a default (keys it lacks are not looked at) --
    as one phrase (``"k" must be an integer, got "four"``); ``None`` when it fits."""
    if not _fits(expected, value):
        return f'"{key}" must be {_describe(expected)}, got {_show(value)}'
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, UnionType):
        return json_type_problem(next(a for a in args if _fits(a, value)), value, key)
    if is_dataclass(expected):
        return _first(_field_problem(expected, f, value, key) for f in fields(expected))
    if origin is dict and len(args) == 2:
        return _first(json_type_problem(args[1], v, _key(key, k)) for k, v in value.items())
    if origin in (list, tuple) and args:
        return _first(json_type_problem(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    return None


def fields_type_problem(settings: Any, skip: Iterable[str] = ()) -> str | None:
    """:func:`json_type_problem` of a dataclass instance's own fields (those not in ``skip``),
    as a settings object built in code must fit what its JSON file would hold: a tuple is read
    as JSON's list. ``None`` when every field fits."""
    values = {
        f.name: list(v) if isinstance(v := getattr(settings, f.name), tuple) else v
        for f in fields(settings)
        if f.name not in skip
    }
    return json_type_problem(type(settings), values)


def check_schema(
    source: str | Path,
    value: Any,
    schema: Any,
    error: type[AutoshrinkError],
    what: str | None = None,
) -> None:
    """Raise a one-line ``error`` naming ``source`` (a file, or ``FILE: line N``) and the
    field when the JSON ``value`` is not an object or does not fit ``schema``, a dataclass of
    the JSON types of what is read of it (:func:`json_type_problem`); with ``what``, the line
    says the file is not one (``runs/x/fingerprint.json: not a fingerprint file (...)``)."""
    problem = (
        f"expected a JSON object, got {type(value).__name__}"
        if not isinstance(value, dict)
        else json_type_problem(schema, value)
    )
    if problem is not None:
        said = problem if what is None else f"not a {what} ({problem})"
        raise error(f"{source}: {said}")


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """The resolved annotations of dataclass ``cls`` (resolving them is slow; they never
    change)."""
    return get_type_hints(cls)


def _field_problem(cls: Any, f: Any, value: dict[str, Any], prefix: str) -> str | None:
    """:func:`json_type_problem` of the field ``f`` of dataclass ``cls`` in the object ``value``."""
    key = _key(prefix, f.name)
    if f.name in value:
        return json_type_problem(_hints(cls)[f.name], value[f.name], key)
    if f.default is MISSING and f.default_factory is MISSING:
        return f'"{key}" is missing'
    return None


#: The largest JSON file read (a cell, a config, a latency table): an endless pipe or a
#: device named by mistake (``/dev/zero``) is refused instead of filling the memory.
JSON_LIMIT = 256 * 2**20


def require_folder(path: Path, error: type[AutoshrinkError], expected: str) -> None:
    """Raise a one-line ``error`` naming ``path`` unless it is a folder: it is a file, or
    nothing is there; ``expected`` says what it should be (``"a search run folder"``)."""
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise error(f"{path}: {what}; expected {expected}")


def read_text_file(
    path: str | Path, error: type[AutoshrinkError], what: str, limit: int | None = None
) -> str:
    """The UTF-8 text of the ``what`` file ``path`` (``"config"``, ``"text"``, ...); a missing
    file, a folder in its place, an unreadable file, bytes that are not UTF-8 or more than
    ``limit`` bytes is a one-line ``error`` naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise error(f"{path}: larger than {limit // 2**20} MiB; expected a {what} file")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, not a file; expected a {what} file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}); expected a {what} file") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} file ({err.strerror})") from None


def read_json_file(path: str | Path, error: type[AutoshrinkError], what: str) -> Any:
    """The JSON value in the ``what`` file ``path``: :func:`read_text_file`'s errors (at most
    :data:`JSON_LIMIT` bytes), and malformed JSON as a one-line ``error`` naming the file and
    the line."""
    return parse_json(read_text_file(path, error, what, JSON_LIMIT), str(path), error)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members, refusing a key given twice (``json`` keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_json(text: str, source: str, error: type[AutoshrinkError]) -> Any:
    """The JSON value of ``text``; malformed JSON, or arrays and objects nested too deep for
    the parser, is a one-line ``error`` naming ``source`` (and the line)."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as err:
        raise error(f"{source}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deep to parse") from None
    except ValueError as err:  # a key twice; an integer of more digits than Python converts
        why = "a number of too many digits" if "digits" in str(err) else str(err)
        raise error(f"{source}: not valid JSON ({why})") from None
