"""The search's candidate seeds, its start from a failed cell and the NaN rank of ``top_k``: on
the toy evaluator of ``test_search``."""

from __future__ import annotations

import hashlib
import itertools
import math

from autoshrink.search import run_search
from autoshrink.strategies.base import top_k
from test_search import GOOD, ToyEvaluator, candidates, toy_config


def test_a_complete_cell_that_fails_at_step_0_does_not_stop_the_search(tmp_path):
    """Pins that only a failed step after step 0 ends the search: the start cell diverging
    leaves nothing to shrink from by score, yet its removals are tried and the toy's optimum
    is still found."""
    complete = frozenset(itertools.combinations(range(6), 2))  # every edge of 6 nodes
    ev = ToyEvaluator(diverge=complete)
    result = run_search(
        tmp_path / "run", toy_config(), evaluator_factory=lambda c: ev, progress=False
    )
    rows = candidates(tmp_path / "run" / "journal.jsonl")
    assert [r["status"] for r in rows if r["step"] == 0] == ["diverged"]
    assert max(r["step"] for r in rows) > 0
    assert result.stopped is None
    assert set(result.cell.edges) == GOOD


def test_a_candidates_seed_hashes_the_run_seed_with_the_cells_key(tmp_path):
    """Pins that the run seed enters each candidate's training seed: the same start cell gets
    another seed at run seed 1 than at 0, and at 0 the one of the documented hash (sha256 of
    ``"{run seed}:{key}"``, its first 4 bytes little-endian, 31 bits)."""
    starts = []
    for seed in (0, 1):
        run = tmp_path / f"seed{seed}"
        run_search(
            run, toy_config(seed=seed), evaluator_factory=lambda c: ToyEvaluator(), progress=False
        )
        (start,) = [r for r in candidates(run / "journal.jsonl") if r["step"] == 0]
        starts.append(start)
    assert starts[0]["key"] == starts[1]["key"]  # the toy's start cell does not depend on the seed
    assert starts[0]["seed"] != starts[1]["seed"]
    digest = hashlib.sha256(f"0:{starts[0]['key']}".encode()).digest()
    assert starts[0]["seed"] == int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def test_top_k_ranks_nan_last_and_keeps_ties_in_order():
    """Pins ``top_k``'s order: a NaN value is the worst, never the best, and the tie of the two
    3.0s keeps their positions' order."""
    assert top_k([math.nan, 1.0, 3.0, 3.0], 2) == [2, 3]
    assert top_k([math.nan, 1.0, 3.0, 3.0], 4) == [2, 3, 1, 0]
