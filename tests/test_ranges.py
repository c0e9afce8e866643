"""The shared range checks: a value of the wrong type breaks every requirement, with the
name it was given by."""

from __future__ import annotations

import math
import re

import pytest

from autoshrink.errors import ConfigError
from autoshrink.ranges import REQUIREMENTS, SEED, WHOLE, check_value, require


@pytest.mark.parametrize("requirement", sorted(REQUIREMENTS))
@pytest.mark.parametrize("value", ["abc", [1], None, math.nan])
def test_a_value_of_another_type_breaks_every_requirement(requirement, value) -> None:
    with pytest.raises(ConfigError, match=f"^--x must be {re.escape(requirement)}, got "):
        check_value("--x", value, requirement)


def test_counts_and_seeds_are_whole_numbers() -> None:
    check_value("k", 1, WHOLE)
    check_value("seed", 0, SEED)
    for value, requirement in ((0, WHOLE), (2.5, WHOLE), (True, WHOLE), (-1, SEED)):
        with pytest.raises(ConfigError, match="must be a whole number"):
            check_value("n", value, requirement)
    require("--lr", None, "finite and > 0")  # not given: nothing to check
    with pytest.raises(ConfigError, match=r"^--lr must be finite and > 0, got inf$"):
        require("--lr", math.inf, "finite and > 0")
