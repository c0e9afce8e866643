"""What the NAS-Bench-201 strategies share: uniform random cells not seen before."""

from __future__ import annotations

import random

from autoshrink.spaces.nb201 import NUM_CELLS, NB201Cell


def draw_unseen(rng: random.Random, seen: set[int]) -> NB201Cell | None:
    """A uniform cell whose code is not in ``seen`` (and add it); ``None`` once all are seen."""
    if len(seen) >= NUM_CELLS:
        return None
    while True:
        code = rng.randrange(NUM_CELLS)
        if code not in seen:
            seen.add(code)
            return NB201Cell.from_code(code)
