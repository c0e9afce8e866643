"""The JSON type checks behind every file a user edits (:func:`json_type_problem`): each
annotation it walks, the dotted key it names and how it shows the value it refuses.

The files that use it (cells, configs, recipes, journals, tables) test their own messages;
here the walk itself, on annotations built for the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from autoshrink.user_files import json_type_problem


@dataclass
class Inner:
    rate: float
    tags: list[str] = field(default_factory=list)


@dataclass
class Outer:
    name: str
    inner: Inner
    sizes: tuple[int, ...] = ()
    extra: dict[str, int | None] = field(default_factory=dict)
    anything: Any = None


@pytest.mark.parametrize(
    ("expected", "value"),
    [
        (int, 3),
        (float, 3),  # JSON's 3 is a number too
        (float, 2.5),
        (float, 2**1023),  # an integer a float can hold
        (bool, False),
        (str, ""),
        (type(None), None),
        (int | None, None),
        (list[int] | None, [1, 2]),
        (dict[str, float], {"a": 1, "b": 0.5}),
        (Outer, {"name": "n", "inner": {"rate": 1}}),  # fields with defaults may be absent
        (Outer, {"name": "n", "inner": {"rate": 1, "tags": ["x"]}, "anything": [{}]}),
    ],
)
def test_values_of_their_type_fit(expected: Any, value: Any) -> None:
    assert json_type_problem(expected, value, "k") is None


@pytest.mark.parametrize(
    ("expected", "value", "problem"),
    [
        (int, 2.5, '"k" must be an integer, got 2.5'),
        (int, True, '"k" must be an integer, got true'),  # JSON's true is no number
        (float, "1", '"k" must be a number, got "1"'),
        # an integer beyond a float's range: an OverflowError where it was read as one
        (float, 10**400, '"k" must be a number, got ' + "1" + "0" * 36 + "..."),
        (
            float | None,
            -(2**1024),
            '"k" must be a number or null, got -179769313486231590772930519078902473...',
        ),
        (bool, 0, '"k" must be true or false, got 0'),
        (str, None, '"k" must be a string, got null'),
        (int | None, "x", '"k" must be an integer or null, got "x"'),
        (list[int], {"a": 1}, '"k" must be a list, got {"a": 1}'),
        (dict[str, int], [], '"k" must be an object, got []'),
        # the problem inside a union's member, a list's item, an object's value
        (list[int] | None, [1, "x"], '"k[1]" must be an integer, got "x"'),
        (tuple[int, ...], [1, 2, 3.5], '"k[2]" must be an integer, got 3.5'),
        (dict[str, int | None], {"a": None, "b": []}, '"k.b" must be an integer or null, got []'),
    ],
)
def test_the_first_value_that_does_not_fit_is_named_by_its_key(
    expected: Any, value: Any, problem: str
) -> None:
    assert json_type_problem(expected, value, "k") == problem


def test_a_dataclass_names_missing_and_wrong_fields_by_their_dotted_key() -> None:
    assert json_type_problem(Outer, {"inner": {"rate": 1}}) == '"name" is missing'
    assert json_type_problem(Outer, {"name": "n", "inner": {}}) == '"inner.rate" is missing'
    bad_tag = {"name": "n", "inner": {"rate": 1, "tags": ["a", 2]}}
    assert json_type_problem(Outer, bad_tag) == '"inner.tags[1]" must be a string, got 2'
    bad_extra = {"name": "n", "inner": {"rate": 1}, "extra": {"x": "y"}}
    assert json_type_problem(Outer, bad_extra) == '"extra.x" must be an integer or null, got "y"'
    assert json_type_problem(Outer, {"name": "n", "inner": 3}) == '"inner" must be an object, got 3'


def test_a_long_value_is_cut_to_40_characters() -> None:
    fits = "a" * 38  # 40 characters with its quotes: shown whole
    assert json_type_problem(int, fits, "k") == f'"k" must be an integer, got "{fits}"'
    cut = json_type_problem(int, "b" * 39, "k")  # 41 characters: 37 of them and "..."
    assert cut == '"k" must be an integer, got "' + "b" * 36 + "..."
    assert json_type_problem(int, object, "k") == "\"k\" must be an integer, got <class 'object'>"
