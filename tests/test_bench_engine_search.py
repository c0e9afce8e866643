"""The benchmarks' search helper: a search stopped at its time limit reports its best score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from engine_search import best_so_far  # noqa: E402


def test_a_stopped_search_reports_the_best_score_of_its_journal(tmp_path: Path) -> None:
    assert best_so_far(tmp_path) is None  # no journal yet
    records = [
        {"type": "candidate", "step": 0, "score": -44.6},
        {"type": "candidate", "step": 1, "score": -39.6},
        {"type": "candidate", "step": 1, "score": None},  # diverged
        {"type": "step", "step": 1},
        {"type": "candidate", "step": 2, "score": -42.0},
    ]
    (tmp_path / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert best_so_far(tmp_path) == -39.6
