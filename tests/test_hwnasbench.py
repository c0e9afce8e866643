"""HW-NAS-Bench loader on a small file of the official layout written here: the opt-in guard,
the restricted unpickler, index -> cell mapping, and the metric as a search's cost term."""

from __future__ import annotations

import pickle
import random
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from autoshrink import safe_pickle
from autoshrink.errors import BenchmarkError, CellError
from autoshrink.evaluators.costed import CostedEvaluator
from autoshrink.hardware.hwnasbench import METRICS, load_hwnasbench
from autoshrink.objectives import Score
from autoshrink.safe_pickle import PICKLE_LIMIT
from autoshrink.spaces.nb201 import NUM_CELLS, ArchIndex, NB201Cell
from autoshrink.strategies.random_search import RandomSearch
from autoshrink.tabular.comparison import run_once

STEP = 7  # official index i holds the cell of code (7 i) mod 5^6: a known permutation


def code_of_index(i: int) -> int:
    return (STEP * i) % NUM_CELLS


def index_of_code(code: int) -> int:
    return (pow(STEP, -1, NUM_CELLS) * code) % NUM_CELLS


def latency(i: int) -> float:
    return 1.0 + 0.001 * i  # ms


@pytest.fixture
def bench_file(tmp_path: Path) -> Path:
    """``[space][dataset][metric][arch index]``: lists for cifar10 (with ``config`` arch
    strings and one metric the loader ignores), a partial dict for cifar100."""
    config = [
        {"arch_str": NB201Cell.from_code(code_of_index(i)).arch_string(), "C": 16, "N": 5}
        for i in range(NUM_CELLS)
    ]
    data = {
        "nasbench201": OrderedDict(
            cifar10={
                "edgegpu_latency": [latency(i) for i in range(NUM_CELLS)],
                "fpga_energy": [2.0 * latency(i) for i in range(NUM_CELLS)],
                "eyeriss_arithmetic_intensity": [0] * NUM_CELLS,
                "config": config,
            },
            cifar100={"pixel3_latency": {0: 5.0, 3: 7.5}},
        ),
        "fbnet": {"edgegpu_latency": {"ConvNorm_H32": 0.1}},
    }
    path = tmp_path / "HW-NAS-Bench-v1_0.pickle"
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def test_loader_reads_the_layout_and_maps_indices_to_cells(bench_file: Path) -> None:
    hw = load_hwnasbench(bench_file, allow_pickle=True)
    assert set(hw.keys()) == {
        ("cifar10", "edgegpu_latency"),
        ("cifar10", "fpga_energy"),
        ("cifar100", "pixel3_latency"),
    }
    assert hw.query(42, dataset="cifar10", metric="edgegpu_latency") == pytest.approx(1.042)
    assert hw.query(3, dataset="CIFAR100", metric="pixel3_latency") == 7.5
    assert hw.query(0, dataset="cifar100", metric="pixel3_latency") == 5.0  # the first index
    with pytest.raises(BenchmarkError, match=r"^arch index must be in 0\.\.15624, got 15625$"):
        hw.query(NUM_CELLS, dataset="cifar100", metric="pixel3_latency")
    with pytest.raises(BenchmarkError, match="no pixel3_latency of"):
        hw.query(1, dataset="cifar100", metric="pixel3_latency")
    with pytest.raises(BenchmarkError, match="no edgetpu_latency"):
        hw.query(1, dataset="cifar10", metric="edgetpu_latency")
    with pytest.raises(BenchmarkError, match="unknown HW-NAS-Bench metric"):
        hw.query(1, dataset="cifar10", metric="watts")
    for index in (42.9, True, "42"):  # 42.9 read as 42, True as 1, "42" a bare ValueError
        with pytest.raises(
            CellError, match=re.escape(f"an official index (an int), got {index!r}")
        ):
            hw.query(index, dataset="cifar10", metric="edgegpu_latency")  # type: ignore[arg-type]
    assert hw.query(np.int64(42), dataset="cifar10", metric="edgegpu_latency") == pytest.approx(
        1.042
    )
    cost = hw.cost(dataset="cifar10", metric="fpga_energy")  # index from the file's config
    for code in (0, 1, 777, NUM_CELLS - 1):
        assert cost(NB201Cell.from_code(code)) == pytest.approx(2.0 * latency(index_of_code(code)))
    archs = [NB201Cell.from_code(code_of_index(i)).arch_string() for i in range(NUM_CELLS)]
    same = hw.cost(dataset="cifar10", metric="fpga_energy", index=ArchIndex(archs))
    assert np.array_equal(same.by_code, cost.by_code)
    # an index that disagrees with the file's own config: the file's order wins (the index the
    # bench passed was used, so a file in another order would have been read shifted)
    rotated = hw.cost(
        dataset="cifar10", metric="fpga_energy", index=ArchIndex(archs[1:] + archs[:1])
    )
    assert np.array_equal(rotated.by_code, cost.by_code)
    assert set(METRICS) >= {"edgegpu_latency", "eyeriss_energy", "fpga_latency"}
    partial = hw.cost(dataset="cifar100", metric="pixel3_latency", index=ArchIndex(archs))
    assert partial(NB201Cell.from_code(code_of_index(3))) == 7.5
    cell = NB201Cell.from_code(code_of_index(1))
    with pytest.raises(
        BenchmarkError, match=re.escape(f"no pixel3_latency of cifar100 for {cell}")
    ):
        partial(cell)


def test_pickle_needs_the_opt_in(bench_file: Path) -> None:
    with pytest.raises(BenchmarkError, match="allow_pickle=True"):
        load_hwnasbench(bench_file)
    with pytest.raises(BenchmarkError, match="not found"):
        load_hwnasbench(bench_file.with_name("nope.pickle"), allow_pickle=True)


class _Hostile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_restricted_unpickler_refuses_any_other_global(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"nasbench201": {"cifar10": {"x": _Hostile(target)}}}))
    with pytest.raises(BenchmarkError, match=r"pathlib\.Path.touch|not allowed"):
        load_hwnasbench(path, allow_pickle=True)
    assert not target.exists()
    path.write_bytes(pickle.dumps({"nasbench201": {"cifar10": {"edgegpu_latency": np.ones(3)}}}))
    with pytest.raises(BenchmarkError, match="not allowed"):
        load_hwnasbench(path, allow_pickle=True)
    scalars = {"nasbench201": {"cifar10": {"edgegpu_latency": [np.float64(1.5), np.float32(2)]}}}
    path.write_bytes(pickle.dumps(scalars))  # numpy scalars are decoded from their bytes
    hw = load_hwnasbench(path, allow_pickle=True)
    assert hw.query(1, dataset="cifar10", metric="edgegpu_latency") == 2.0


def test_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.pickle"
    for data, match in (
        ([1, 2], "expected a dict"),
        ({"nasbench201": {"cifar10": {"edgegpu_latency": ["fast"]}}}, "finite number"),
        ({"nasbench201": {"cifar10": {"edgegpu_latency": [1.0, -2.0]}}}, r"\[1\]: .* >= 0, got -2"),
        (
            {"nasbench201": {"cifar10": {"edgegpu_latency": {99999: 1.0}}}},
            r"\['edgegpu_latency'\]: arch index 99999 is not in 0\.\.15624",
        ),
        ({"nasbench201": {"mnist": {"edgegpu_latency": [1.0]}}}, "mnist"),
        ({"nasbench201": {"cifar10": {"config": []}}}, "no HW-NAS-Bench metric"),
        ({"nasbench201": {"cifar10": [1.0]}}, r"\['cifar10'\]: expected a dict of metrics"),
        (
            {"nasbench201": {"cifar10": {"edgegpu_latency": 1.0}}},
            r"\['edgegpu_latency'\]: expected a list or dict",
        ),
    ):
        path.write_bytes(pickle.dumps(data))
        with pytest.raises(BenchmarkError, match=match):
            load_hwnasbench(path, allow_pickle=True)
    path.write_bytes(b"not a pickle")
    with pytest.raises(BenchmarkError, match=f"^{path}: not a readable HW-NAS-Bench file"):
        load_hwnasbench(path, allow_pickle=True)
    with pytest.raises(
        BenchmarkError, match=f"^{tmp_path}: cannot read the HW-NAS-Bench file \\(Is a dir"
    ):
        load_hwnasbench(tmp_path, allow_pickle=True)  # a folder
    with pytest.raises(BenchmarkError, match=f"^{tmp_path}/none.pickle: HW-NAS-Bench file not fo"):
        load_hwnasbench(tmp_path / "none.pickle", allow_pickle=True)
    archs = [{"arch_str": NB201Cell.from_code(c).arch_string()} for c in range(NUM_CELLS)]
    archs[5] = {"arch_str": "|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|"}
    data = {"edgegpu_latency": [1.0] * NUM_CELLS, "config": archs}
    path.write_bytes(pickle.dumps({"nasbench201": {"cifar10": data}}))
    with pytest.raises(BenchmarkError, match="bogus"):
        load_hwnasbench(path, allow_pickle=True).cost(dataset="cifar10", metric="edgegpu_latency")
    for config in (None, [{}] * NUM_CELLS):  # no config; one without arch strings
        data = {"edgegpu_latency": [1.0], "config": config}
        path.write_bytes(pickle.dumps({"nasbench201": {"cifar10": data}}))
        hw = load_hwnasbench(path, allow_pickle=True)
        assert hw.arch_index() is None
        with pytest.raises(BenchmarkError, match="tables' index"):
            hw.cost(dataset="cifar10", metric="edgegpu_latency")
    column = hw.column(dataset="cifar10", metric="edgegpu_latency")
    with pytest.raises(ValueError, match="read-only"):
        column[0] = 0.0


def test_a_device_or_huge_file_named_as_the_file_is_refused_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--hwnasbench /dev/zero`` read without end: "out of memory: the sizes asked for (--runs
    times --queries) do not fit this machine" under a memory limit, else all the memory."""
    assert PICKLE_LIMIT >= 2**30  # HW-NAS-Bench's file is under 100 MB, a CIFAR-10 batch 31 MB
    monkeypatch.setattr(safe_pickle, "PICKLE_LIMIT", 2**20)  # reading 1 GiB of zeros is slow
    big = tmp_path / "big.pickle"
    big.write_bytes(pickle.dumps([0.5] * 2**18))  # 2.3 MB
    for path in (Path("/dev/zero"), big):
        with pytest.raises(BenchmarkError, match=f"^{path}: larger than 1 MiB; expected a HW-NAS"):
            load_hwnasbench(path, allow_pickle=True)


def test_hw_metric_as_the_cost_term_of_a_search(bench_file: Path) -> None:
    """Equal accuracy everywhere: the score prefers the lowest edge-GPU latency, so the cell a
    search returns is the queried cell of smallest latency (the lowest official index)."""
    hw = load_hwnasbench(bench_file, allow_pickle=True)
    cost = hw.cost(dataset="cifar10", metric="edgegpu_latency")
    evaluate = CostedEvaluator(lambda cell: {"accuracy": 0.9}, [cost])
    assert evaluate(NB201Cell.from_code(0)) == {"accuracy": 0.9, "edgegpu_latency": 1.0}
    score = Score(metric="accuracy", cost="edgegpu_latency", weight=1.0)
    incumbent, queried = run_once(RandomSearch(rng=random.Random(0)), evaluate, score, 60)
    best_index = min(index_of_code(int(c)) for c in queried)
    assert index_of_code(int(incumbent[-1])) == best_index
