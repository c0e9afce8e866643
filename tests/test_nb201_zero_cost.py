"""The zero-cost-screened AutoShrink variant of ``autoshrink bench nb201`` (``autoshrink-zc``):
the ranked step, the on-demand scores and their cache, the bench wiring and its errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from autoshrink.cost.nb201 import topology_cost_table
from autoshrink.errors import BenchmarkError, ConfigError
from autoshrink.evaluators.nb201_zero_cost import NB201ZeroCost, read_cache
from autoshrink.spaces.nb201 import NUM_CELLS, NB201Cell
from autoshrink.strategies.autoshrink_nb201 import AutoShrinkNB201
from autoshrink.strategies.base import Observation
from autoshrink.tabular import load_flat_tables
from autoshrink.tabular.comparison import ZC_STRATEGY, run_bench


def convs(cell: NB201Cell) -> float:
    return float(sum(op == "nor_conv_3x3" for op in cell.ops))


def test_ranked_nb201_step_takes_the_k_best_decisions() -> None:
    strategy = AutoShrinkNB201(
        rng=random.Random(0), k=3, rank=lambda cells: [convs(c) for c in cells]
    )
    [start] = strategy.ask()
    strategy.tell([Observation(start, 0.5, {})])
    picks = strategy.ask()
    base = start.genotype
    # independently: the decisions that turn a non-conv3x3 edge into nor_conv_3x3 gain 1
    gaining = [e for e, op in enumerate(base.ops) if op != "nor_conv_3x3"]
    assert len(picks) == min(3, len(gaining))
    for p in picks:
        assert p.meta["op"] == "nor_conv_3x3" and p.meta["edge"] in gaining
    # ties keep the shrink-space order (edge-major): the first gaining edges
    assert [p.meta["edge"] for p in picks] == gaining[:3]


def test_the_fixed_batch_has_a_label_of_every_class() -> None:
    zc = NB201ZeroCost("synflow", "cifar10", batch=64)
    assert zc.batch_x.shape == (64, 3, 32, 32)
    assert sorted(set(zc.batch_y.tolist())) == list(range(10))  # class 0 too


def test_scores_are_computed_once_and_cached(tmp_path) -> None:
    params, _ = topology_cost_table("cifar10")
    cells = [NB201Cell.from_code(c) for c in (0, 1234, 15624)]
    # params comes from the analytic count; it must equal counting the built network
    from autoshrink.nn.nb201 import topology_network

    assert (
        NB201ZeroCost("params", "cifar10")(cells)
        == [
            float(sum(p.numel() for p in topology_network(c, num_classes=10).parameters()))
            for c in cells
        ]
        == [float(params[c.code]) for c in cells]
    )
    cache = tmp_path / "synflow.npz"
    zc = NB201ZeroCost("synflow", "cifar10", cache=cache)
    zc.load_cache()
    first = zc(cells[:2])
    assert zc.summary()["computed"] == 2 and zc(cells[:2]) == first
    zc.save()
    again = NB201ZeroCost("synflow", "cifar10", cache=cache)
    again.load_cache()
    assert again(cells[:2]) == first and again.summary()["computed"] == 0
    with pytest.raises(ConfigError, match=r"\.npz"):
        NB201ZeroCost("params", "cifar10", cache=tmp_path / "params.bin")
    # a cache of other settings is refused, never read as these nor overwritten
    kept = cache.read_bytes()
    for name, dataset, seed, differ in [
        ("params", "cifar10", 0, "proxy 'synflow', not 'params'"),
        ("synflow", "cifar100", 0, "dataset 'cifar10', not 'cifar100'"),
        ("synflow", "cifar10", 1, "seed 0, not 1"),
    ]:
        other = NB201ZeroCost(name, dataset, seed=seed, cache=cache)
        with pytest.raises(
            BenchmarkError, match=f"a zero-cost cache of other settings \\({differ}\\)"
        ):
            other.load_cache()
    assert cache.read_bytes() == kept
    # a cache recording a setting these lack: refused naming nothing ("other settings ()")
    extra = tmp_path / "extra.npz"
    with extra.open("wb") as f:
        np.savez(f, values=np.full(15625, np.nan), settings=np.array(json.dumps(
            {**NB201ZeroCost("synflow", "cifar10").settings, "threads": 4})))  # fmt: skip
    with pytest.raises(BenchmarkError, match=r"other settings \(threads 4, not None\)"):
        NB201ZeroCost("synflow", "cifar10", cache=extra).load_cache()


def test_two_benches_sharing_a_cache_keep_each_others_values(tmp_path) -> None:
    """Each bench wrote its own values over the file: the last to end erased the other's."""
    cache = tmp_path / "shared.npz"
    first, second = (NB201ZeroCost("synflow", "cifar10", cache=cache) for _ in range(2))
    for zc in (first, second):
        zc.load_cache()  # both start from no file
    first.values[15000], second.values[15001] = 1.5, 2.5  # what each computed meanwhile
    first.save()
    second.save()
    values, _ = read_cache(cache)
    assert np.flatnonzero(~np.isnan(values)).tolist() == [15000, 15001]
    assert values[15000] == 1.5 and values[15001] == 2.5


def test_the_proxies_run_on_the_threads_asked_for() -> None:
    """They ran on torch's own thread count: 2-4 times slower on a busy 2-core machine."""
    import torch

    zc = NB201ZeroCost("synflow", "cifar10", threads=1)
    zc._proxy = lambda net, x, y: float(torch.get_num_threads())
    assert zc([NB201Cell.from_code(99)]) == [1.0]


@pytest.mark.shared_data
def test_a_zero_cost_cache_of_another_layout_is_one_line_naming_it(tmp_path) -> None:
    from autoshrink.evaluators.nb201_zero_cost import read_cache

    path = tmp_path / "zc.npz"
    layout = f"{path}: not a zero-cost cache (an .npz file of 'values' and 'settings')"
    values, settings = np.full(NUM_CELLS, np.nan), np.array('{"proxy": "params"}')
    for arrays, says in (
        ({"values": values}, f"{layout}; it holds ['values']"),
        (
            {"values": values[:10], "settings": settings},
            f"{path}: expected {NUM_CELLS} numbers, got float64 (10,)",
        ),
        (
            {"values": values.astype(str), "settings": settings},
            f"{path}: expected {NUM_CELLS} numbers, got <U",
        ),
        ({"values": values, "settings": np.array("[1, 2]")}, f"{layout}; its 'settings' are"),
        ({"values": values, "settings": np.array("{cut")}, f"{layout}; its 'settings' are"),
    ):
        np.savez(path, **arrays)
        with pytest.raises(BenchmarkError) as caught:
            read_cache(path)
        assert str(caught.value).startswith(says)
    np.savez(path, values=values, settings=settings)
    got, read = read_cache(path)
    assert np.isnan(got).all() and read == {"proxy": "params"}
    with pytest.raises(BenchmarkError, match=f"{tmp_path}: cannot read the zero-cost cache"):
        read_cache(tmp_path)


def test_a_damaged_zero_cost_cache_is_said_to_be_damaged(tmp_path) -> None:
    # the zip's CRC-32 tells a changed byte (an inf among the values too): it was called "not
    # a zero-cost cache (an .npz file of 'values' and 'settings')", which it is
    path = tmp_path / "zc.npz"
    values = np.full(NUM_CELLS, np.nan)
    values[7] = 1.5
    np.savez(path, values=values, settings=np.array('{"proxy": "synflow"}'))
    whole = path.read_bytes()
    at = whole.index(np.float64(1.5).tobytes())
    changed = whole[:at] + np.float64(np.inf).tobytes() + whole[at + 8 :]
    damaged = f"{path}: a damaged zero-cost cache ("
    for data, why in (
        (changed, "Bad CRC-32 for file 'values.npy'"),
        (whole[: len(whole) // 2], ""),
    ):
        path.write_bytes(data)
        with pytest.raises(BenchmarkError) as caught:
            read_cache(path)
        said = str(caught.value)
        assert said.startswith(damaged + why) and said.endswith(
            "; delete it: its values are computed again"
        ), said


def test_bench_runs_the_zero_cost_variant(shared_data) -> None:
    tables = load_flat_tables(shared_data / "nats-bench")
    params, _ = topology_cost_table("cifar10")
    met: set[int] = set()

    def rank(cells: list[NB201Cell]) -> list[float]:
        met.update(c.code for c in cells)
        return [float(params[c.code]) for c in cells]

    result = run_bench(
        tables,
        strategies=["autoshrink", ZC_STRATEGY],
        runs=2,
        queries=30,
        dataset="cifar10",
        zc_rank=rank,
    )
    zc = result.traces[1]
    assert zc.name == ZC_STRATEGY and (zc.queried >= 0).all()
    # every queried cell but the restarts' random starts was ranked first
    assert np.isin(zc.queried, list(met)).mean() > 0.8
    with pytest.raises(ConfigError, match="needs zero-cost scores"):
        run_bench(tables, strategies=[ZC_STRATEGY], runs=1, queries=5, dataset="cifar10")


@pytest.mark.shared_data
def test_bench_cli_zero_cost(cli, shared_data, tmp_path) -> None:
    tables = shared_data / "nats-bench"
    zc = ["--strategies", ZC_STRATEGY]
    code, _, err = cli("bench", "nb201", "--tables", tables, *zc, "--zc-proxy", "zen")
    assert code == 2 and "unknown zero-cost proxy 'zen'" in err and err.count("\n") == 1
    code, _, err = cli("bench", "nb201", "--tables", tables, "--strategies", "random",
                       "--zc-proxy", "params", "--zc-cache", tmp_path / "c.npz")  # fmt: skip
    assert code == 2 and err.count("\n") == 1  # both were ignored without a word
    assert "--zc-proxy, --zc-cache: only for the autoshrink-zc strategy, not run here" in err
    code, _, err = cli("bench", "nb201", "--tables", tables, "--strategies", "random",
                       "--threads", "1")  # fmt: skip
    assert code == 2 and "--threads: only for the autoshrink-zc strategy, not run here" in err
    # 0 was "not given" (ignored; with autoshrink-zc torch's RuntimeError and a traceback), and
    # an empty proxy was synflow
    for args, says in (
        (["--strategies", "random", "--threads", "0"], "--threads: only for the autoshrink-zc"),
        ([*zc, "--threads", "0"], "--threads must be an integer in 1..1024, got 0"),
        ([*zc, "--threads", "-2"], "--threads must be an integer in 1..1024, got -2"),
        ([*zc, "--zc-proxy", ""], "unknown zero-cost proxy ''"),
    ):
        code, _, err = cli("bench", "nb201", "--tables", tables, *args)
        assert code == 2 and err.count("\n") == 1 and says in err, err
    (tmp_path / "text.npz").write_text("hello\n")  # numpy's advice to unpickle is not passed on
    code, _, err = cli(
        "bench", "nb201", "--tables", tables, *zc, "--zc-cache", tmp_path / "text.npz"
    )
    assert (
        code == 2
        and "pickle" not in err
        and err.strip().endswith(
            "text.npz: not a zero-cost cache (an .npz file of 'values' and 'settings')"
        )
    )
    code, out, _ = cli(
        "bench",
        "nb201",
        "--tables",
        tables,
        "--strategies",
        ZC_STRATEGY,
        "--zc-proxy",
        "params",
        "--runs",
        "1",
        "--queries",
        "8",
        "--json",
        "--zc-cache",
        tmp_path / "p.npz",
    )
    assert code == 0
    obj = json.loads(out)
    assert obj["config"]["zero_cost"]["proxy"] == "params"
    assert (tmp_path / "p.npz").is_file()


@pytest.mark.shared_data
def test_a_cache_that_cannot_be_written_loses_no_bench_result(
    cli, shared_data, tmp_path, monkeypatch
) -> None:
    import errno

    import numpy as np

    def full(f, **arrays):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    cache, out = tmp_path / "p.npz", tmp_path / "bench"
    args = ["--strategies", ZC_STRATEGY, "--zc-proxy", "params", "--runs", "1", "--queries", "8"]
    code, _, err = cli(
        "bench", "nb201", "--tables", shared_data / "nats-bench", *args,
        "--zc-cache", cache, "--out", out,
    )  # fmt: skip
    assert code == 2 and err == f"autoshrink: error: {cache}: No space left on device\n"
    assert (out / "bench.json").is_file() and not cache.exists()  # no half cache either
    assert sorted(tmp_path.iterdir()) == [tmp_path / ".p.npz.lock", out]  # the cache's lock


@pytest.mark.shared_data
def test_a_stopped_bench_keeps_the_zero_cost_values_it_computed(
    cli, shared_data, tmp_path, monkeypatch, caplog
) -> None:
    """A Ctrl-C (or SIGTERM, which the bench now takes as one) after the proxies ran lost every
    value: the cache was written only at the very end."""
    from autoshrink.cli import bench

    def stopped(tables, *, zc_rank, **settings):  # two cells' proxies, then a Ctrl-C
        zc_rank([NB201Cell.from_code(7), NB201Cell.from_code(4321)])
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_bench", stopped)
    cache = tmp_path / "s.npz"
    args = ["--strategies", ZC_STRATEGY, "--zc-proxy", "synflow", "--zc-cache", cache]
    code, _, err = cli("bench", "nb201", "--tables", shared_data / "nats-bench", *args)
    assert code == 130 and err.endswith("autoshrink: interrupted\n")
    values, _ = read_cache(cache)
    assert np.flatnonzero(~np.isnan(values)).tolist() == [7, 4321]
    assert f"{cache}: kept the 2 zero-cost values computed before the stop" in caplog.text
