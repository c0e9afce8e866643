"""The statistics of benchmarks/bench_oneshot.py's summary, against published t-table values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_oneshot  # noqa: E402


@pytest.mark.parametrize(
    ("seeds", "t975"),
    [(2, 12.706), (10, 2.262), (16, 2.131), (20, 2.093), (31, 2.042)],
)
def test_the_95_percent_interval_is_students_t_at_any_number_of_seeds(seeds, t975) -> None:
    # 0, 1, 0, 1, ...: mean 1/2 (for an even count), each value 1/2 from it; t975: the 0.975
    # quantile of Student's t with seeds - 1 degrees of freedom, from a printed t table
    # (beyond 15 seeds the summary used the normal's 1.96: intervals 8% too narrow at 16)
    xs = [float(i % 2) for i in range(seeds)]
    sd = math.sqrt(sum((x - sum(xs) / seeds) ** 2 for x in xs) / (seeds - 1))
    mean, half = bench_oneshot.ci95(xs)
    assert mean == pytest.approx(sum(xs) / seeds)
    assert half == pytest.approx(t975 * sd / math.sqrt(seeds), rel=5e-4)  # the table has 3 decimals


def test_one_seed_has_no_interval() -> None:
    mean, half = bench_oneshot.ci95([0.25])
    assert mean == 0.25 and math.isnan(half)
