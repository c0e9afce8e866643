"""Benchmark scripts given what they cannot use: a usage error (status 2) naming the culprit,
not a traceback, and not an empty table with status 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'benchmarks'}"}
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("script", "args", "said"),
    [
        ("bench_oneshot.py", ["--summarize", "{tmp}"], "--summarize {tmp}: no seed*.json"),
        ("bench_screening.py", ["--summarise", "--seeds", "1", "--out", "{tmp}"],
         "--summarise: {tmp}/plain-s1 holds no finished run"),
        ("bench_screening.py", ["--summarise"], "--summarise reads the run folders in --out"),
        ("bench_ood.py", ["--summary-only", "--out", "{tmp}/none.jsonl"],
         "--summary-only: {tmp}/none.jsonl holds no results"),
        ("bench_ood.py", ["--settings", "9", "--out", "{tmp}/o.jsonl"], "--settings 9: expected"),
        ("bench_ood.py", ["--settings", "0,x", "--out", "{tmp}/o.jsonl"], "--settings 0,x:"),
        # counts are checked by machine.count, in every script alike (three checked by hand)
        ("bench_cli_startup.py", ["--repeats", "0"], "argument --repeats: expected a whole "
         "number >= 1, got '0'"),
        ("bench_executors.py", ["--candidates", "0"], "argument --candidates: expected a whole"),
        ("bench_executors.py", ["--repeat", "0"], "argument --repeat: expected a whole number"),
        ("bench_executors.py", ["--workers", "-2"], "argument --workers: expected a whole"),
        ("bench_gpu_engine.py", ["--device", "cpu", "--quick", "--k", "0"],
         "argument --k: expected a whole number >= 1, got '0'"),
        ("bench_gpu_engine.py", ["--device", "cpu", "--steps", "-1"], "argument --steps: expected"),
        ("bench_gpu_engine.py", ["--device", "cpu", "--threads", "0"], "argument --threads: exp"),
        ("bench_nb201_repeats.py", ["--runs", "0"], "argument --runs: expected a whole"),
        ("bench_zero_cost.py", ["--cells", "0"], "argument --cells: expected a whole number >= 1"),
        ("bench_rnn_engine.py", ["--repeats", "0"], "argument --repeats: expected a whole"),
        ("bench_node_inputs.py", ["--rounds", "0"], "argument --rounds: expected a whole"),
        ("bench_optimizers.py", ["--rounds", "0"], "argument --rounds: expected a whole number"),
        ("bench_nb201_speed.py", ["--tables", "{tmp}/nb201"],
         "bench_nb201_speed.py: error: {tmp}/nb201: no such folder"),
        ("bench_final_training.py", ["--data", "{tmp}/fm", "--device", "cpu"],
         "bench_final_training.py: error: {tmp}/fm: no such folder"),
    ],
)  # fmt: skip
def test_bad_input_is_a_usage_error(
    tmp_path: Path, script: str, args: list[str], said: str
) -> None:
    done = bench(script, *(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert said.format(tmp=tmp_path) in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("cells", ["1", "725"])
def test_zero_cost_cells_outside_the_file_are_a_usage_error(shared_data: Path, cells: str) -> None:
    """A rank correlation of one cell was a table of NaN with status 0, and more cells than
    NASLib's file scores (724 on CIFAR-10) random.sample's traceback."""
    done = bench("bench_zero_cost.py", "--data", str(shared_data / "nats-bench"), "--cells", cells)
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert f"--cells {cells}: expected 2 to 724" in done.stderr
    assert "Traceback" not in done.stderr and "nan" not in done.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--cells", "1"], "--cells 1: the MACs baseline needs 2 or more test cells"),
        (["--cells", "0"], "argument --cells: expected a whole number >= 1"),
        (["--profile-cells", "0"], "argument --profile-cells: expected a whole number >= 1"),
    ],
)
def test_latency_table_counts_it_cannot_use_are_refused_before_measuring(
    args: list[str], said: str
) -> None:
    """Such counts were refused with status 1 only after the test cells were measured and the
    table built (minutes at the default 150 profiled networks)."""
    done = bench("bench_latency_table.py", *args)
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert said in done.stderr and "latency profile" not in done.stderr


def test_the_rnn_benchmark_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """bench_rnn_engine.py's temporary folder (its synthetic text) stayed behind when the run
    failed; one that holds a search (--search without --out) stays, and is named."""
    env = {**os.environ, "TMPDIR": str(tmp_path),
           "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'benchmarks'}"}  # fmt: skip
    script = str(REPO / "benchmarks" / "bench_rnn_engine.py")
    failed = subprocess.run([sys.executable, script, "--device", "cpu", "--data",
                             str(tmp_path / "nowhere")], capture_output=True, text=True,
                            env=env, timeout=120)  # fmt: skip
    assert failed.returncode == 2 and "nowhere: no such folder" in failed.stderr
    assert list(tmp_path.iterdir()) == []
    searched = subprocess.run([sys.executable, script, "--device", "cpu", "--quick", "--threads",
                               "1", "--no-table", "--search"], capture_output=True, text=True,
                              env=env, timeout=300)  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-2000:]
    (kept,) = tmp_path.glob("autoshrink-rnn-bench-*")
    assert f"the search's run folder (kept): {kept / 'search'}" in searched.stdout
    assert (kept / "search" / "journal.jsonl").is_file()


def test_quick_sizes_give_way_to_the_sizes_given() -> None:
    """``bench_stacked_ops.py --quick --k 2 --batch 8`` timed K = 4 and batch 16 without a
    word: --quick set them over the flags given."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_stacked_ops import parse_args
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    def sizes(*argv: str) -> tuple[int, int, int]:
        args = parse_args(list(argv))
        return args.k, args.batch, args.image_size

    # the sizes the script's docstring and --help give: K 10, batch 128, 32 px; quick 4, 16, 16
    assert sizes() == (10, 128, 32)
    assert sizes("--quick") == (4, 16, 16)
    assert sizes("--quick", "--k", "2", "--batch", "8") == (2, 8, 16)
    assert sizes("--quick", "--image-size", "24") == (4, 16, 24)
    assert sizes("--k", "3") == (3, 128, 32)


def test_quick_sizes_of_the_oneshot_engine_bench_give_way_to_those_given() -> None:
    """``bench_oneshot_engine.py --quick --k 5`` fine-tuned K = 3 without a word."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_oneshot_engine import parse_args
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    names = ("k", "nodes", "per_class", "val_size", "parent_epochs", "batch_size")

    def sizes(*argv: str) -> tuple[int, ...]:
        args = parse_args(list(argv))
        return tuple(getattr(args, name) for name in names)

    assert sizes() == (10, 8, 500, 1000, 2, 128)  # what the script took before, and quick's
    assert sizes("--quick") == (3, 5, 10, 50, 1, 32)
    assert sizes("--quick", "-k", "5", "--nodes", "6", "--batch-size", "8") == (5, 6, 10, 50, 1, 8)
    assert sizes("--per-class", "20") == (10, 8, 20, 1000, 2, 128)
