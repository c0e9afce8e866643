"""``autoshrink bench nb201``: the JSON on a small run, the output files, the score objective,
clear errors, the published sanity figures (random ~93.7, REA ~93.9 at 100 queries), and an
HW-NAS-Bench metric (synthetic pickles of the official layout) as the score's cost term."""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from autoshrink.cost.nb201 import topology_cost_table
from autoshrink.errors import ConfigError
from autoshrink.hardware.hwnasbench import load_hwnasbench
from autoshrink.report.bench_files import cost_text, format_table
from autoshrink.report.folder import write_report
from autoshrink.spaces.nb201 import NUM_CELLS, NB201Cell
from autoshrink.strategies.autoshrink_nb201 import AutoShrinkNB201
from autoshrink.tabular import SearchEvaluator, load_flat_tables
from autoshrink.tabular.comparison import (
    ZC_STRATEGY,
    make_score,
    run_bench,
    run_once,
    summary_rows,
)


@pytest.fixture
def bench(cli):
    """``autoshrink bench nb201 ARGS...`` in-process."""
    return lambda *args: cli("bench", "nb201", *args)


@pytest.fixture
def tables_dir(shared_data):
    return shared_data / "nats-bench"


def test_json_small_run(bench, tables_dir) -> None:
    code, out, err = bench("--tables", tables_dir, "--runs", "3", "--queries", "30", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["optimum"]["accuracy"] == pytest.approx(94.3733, abs=1e-4)
    assert obj["optimum"]["index"] == 6111
    rows = obj["results"]
    assert {(r["strategy"], r["queries"]) for r in rows} == {
        (s, q) for s in ("random", "rea", "local", "autoshrink") for q in (25, 30)
    }
    for r in rows:
        assert {"strategy", "queries", "mean", "std"} <= set(r)
        assert r["runs"] == 3 and 80.0 < r["mean"] <= 94.3734 and r["std"] >= 0
    assert obj["config"]["search_signal"] == "12-epoch validation accuracy"
    assert obj["pareto"] == [] and obj["score_optimum"] is None


def test_out_files(bench, tables_dir, tmp_path) -> None:
    out = tmp_path / "bench"
    code, text, err = bench(
        "--tables", tables_dir, "--runs", "2", "--queries", "26",
        "--strategies", "random,autoshrink-edges", "--dataset", "imagenet16-120", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "autoshrink-edges" in text and "ImageNet16-120" in text
    for name in ("bench.json", "results.csv", "curves.csv", "runs.csv", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "pareto.csv").exists()
    # an earlier score bench killed before its bench.json left its front: not this bench's
    (out / "bench.json").write_text('{"status": "incomplete"}')
    for stale in ("pareto.csv", "pareto.png"):
        (out / stale).write_text("strategy,accuracy\nrandom,1\n")
    code, _, err = bench(
        "--tables", tables_dir, "--runs", "2", "--queries", "26",
        "--strategies", "random,autoshrink-edges", "--dataset", "imagenet16-120", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert not (out / "pareto.csv").exists() and not (out / "pareto.png").exists()
    with (out / "curves.csv").open() as f:
        curve = list(csv.DictReader(f))
    assert list(curve[0]) == ["strategy", "queries", "mean", "std", "score_mean", "score_std"]
    assert len(curve) == 2 * 26
    with (out / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert list(runs[0])[:6] == ["strategy", "run", "seed", "queries", "index", "arch"]
    assert len(runs) == 2 * 2 * 2  # strategies x runs x checkpoints (25, 26)
    assert json.loads((out / "bench.json").read_text())["config"]["dataset"] == "ImageNet16-120"


def test_a_bench_stopped_before_its_end_is_not_taken_for_a_finished_one(
    bench, tables_dir, tmp_path, monkeypatch
) -> None:
    from autoshrink.report import bench_files

    def full_disk(*args, **kwargs):
        raise OSError(27, "File too large", str(tmp_path / "bench" / "curves.png"))

    out = tmp_path / "bench"
    args = ["--tables", tables_dir, "--runs", "1", "--queries", "5", "--strategies", "random"]
    with monkeypatch.context() as m:
        m.setattr(bench_files, "plot_curves", full_disk)
        code, _, err = bench(*args, "--out", out)
    assert code == 2 and "curves.png: File too large" in err
    note = json.loads((out / "bench.json").read_text())  # the finished one is written last
    assert note["status"] == "incomplete" and "results" not in note
    from autoshrink.cli import main

    assert main(["report", str(out)]) == 2  # nothing finished to report, and it says so
    code, _, err = bench(*args, "--out", out)  # so the next bench may write over the rest
    assert code == 0, err
    assert (out / "bench.json").is_file() and (out / "curves.png").is_file()


def test_a_bench_writes_over_no_file_of_someone_elses(bench, tables_dir, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "curves.csv").write_text("my own data\n")
    args = ["--tables", tables_dir, "--runs", "1", "--queries", "5", "--strategies", "random"]
    code, _, err = bench(*args, "--out", out)
    assert code == 2 and "holds curves.csv, which no `autoshrink bench` wrote" in err
    assert (out / "curves.csv").read_text() == "my own data\n"
    (out / "curves.csv").unlink()
    (out / "notes.txt").write_text("kept\n")  # a file of another name is no bother
    assert bench(*args, "--out", out)[0] == 0 and (out / "notes.txt").read_text() == "kept\n"


def test_score_objective(bench, tables_dir, tmp_path) -> None:
    code, out, err = bench(
        "--tables", tables_dir, "--runs", "4", "--queries", "50", "--objective", "score",
        "--lambda", "0.05", "--json", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    obj = json.loads(out)
    best = obj["score_optimum"]
    assert best is not None and obj["config"]["weight"] == 0.05
    for r in obj["results"]:
        assert r["score_mean"] <= best["score"] + 1e-12 and r["macs_mean"] > 7e6
    assert obj["pareto"], "a front per strategy"
    for s in obj["config"]["strategies"]:
        pts = sorted((p["macs"], p["accuracy"]) for p in obj["pareto"] if p["strategy"] == s)
        assert all(a2 > a1 for (_, a1), (_, a2) in zip(pts, pts[1:], strict=False))
    assert (tmp_path / "pareto.csv").exists() and (tmp_path / "pareto.png").exists()
    table = format_table(obj)  # what the bench prints without --json
    for r in obj["results"]:
        assert cost_text(r["macs_mean"], "macs", 5) in table


def test_a_bench_of_one_query_writes_its_one_curve_point(bench, tables_dir, tmp_path) -> None:
    out = tmp_path / "one"
    args = ("--tables", tables_dir, "--strategies", "random", "--queries", "1", "--runs", "2")
    code, _, err = bench(*args, "--out", out)
    assert code == 0, err
    with (out / "curves.csv").open() as f:
        assert [(r["strategy"], r["queries"]) for r in csv.DictReader(f)] == [("random", "1")]
    code, _, err = bench(*args, "--out", out)  # a finished bench is kept
    assert code == 2
    assert "already holds the results of an `autoshrink bench` run (bench.json)" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--strategies", "random,bogus"), "unknown strategies ['bogus']"),
        # run twice, with results.csv and curves.csv disagreeing; an empty list said "unknown []"
        (("--strategies", "random,rea,random"), "strategies named twice: random"),
        (("--strategies", ","), "no strategy given"),
        (("--runs", "0"), "runs must be a whole number >= 1, got 0"),
        (("--dataset", "svhn"), "unknown NAS-Bench-201 data set"),
        (("--objective", "score", "--lambda", "-1"), "--lambda must be finite and >= 0, got -1"),
        (("--lambda", "0.5"), "--lambda weighs the cost term of --objective score, but"),  # unread
    ],
)
def test_bad_arguments(bench, tables_dir, args, message) -> None:
    code, _, err = bench("--tables", tables_dir, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_tables_are_required_and_the_defaults_are_those_the_help_names(capsys) -> None:
    from autoshrink.cli import build_parser

    parser = build_parser("bench")
    args = parser.parse_args(["bench", "nb201", "--tables", "t"])
    settings = (args.runs, args.queries, args.seed, args.objective, args.cost, args.dataset)
    assert settings == (100, 200, 0, "accuracy", "macs", "cifar10")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["bench", "nb201"])
    assert stop.value.code == 2
    assert "the following arguments are required: --tables" in capsys.readouterr().err


def test_curves_of_thousands_of_queries_have_a_log_axis_of_queries(tmp_path, monkeypatch) -> None:
    """Pins that the checkpoints which tell strategies apart (25 to 200 queries) are not
    squeezed into the left edge of a plot of 15,000 queries: beyond ``LOG_QUERIES`` the axis of
    queries is logarithmic; the default 200 keep a linear one."""
    from autoshrink.report import bench_files, mpl

    saved: list = []
    monkeypatch.setattr(mpl, "save_figure", lambda fig, path, **kw: saved.append(fig))
    for last in (200, bench_files.LOG_QUERIES + 1):
        rows = [
            {"strategy": s, "queries": q, "mean": 90.0 + math.log(q), "std": 1.0}
            for s in ("random", "rea")
            for q in range(1, last + 1)
        ]
        bench_files.plot_curves(rows, "mean", 10, 94.37, "test accuracy (%)", tmp_path / "c.svg")
    (linear,), (log,) = (fig.axes for fig in saved)
    assert linear.get_xscale() == "linear" and linear.get_xlabel() == "queries"
    assert log.get_xscale() == "log" and log.get_xlabel() == "queries (log)"


def test_curves_of_one_query_draw_each_strategy_at_whole_queries(tmp_path, monkeypatch) -> None:
    # --queries 1: a line through one point drew nothing, the legend named four strategies
    # that were not on the plot, and the axis of queries read 0.96 to 1.04
    from autoshrink.report import bench_files, mpl

    saved: list = []
    monkeypatch.setattr(mpl, "save_figure", lambda fig, path, **kw: saved.append(fig))
    rows = [
        {"strategy": s, "queries": 1, "mean": m, "std": 0.0} for s, m in (("a", 91.7), ("b", 80.3))
    ]
    bench_files.plot_curves(rows, "mean", 1, 94.37, "test accuracy (%)", tmp_path / "c.svg")
    ((ax,),) = (fig.axes for fig in saved)
    a, b, _ = ax.get_lines()  # the optimum last
    for line, mean in ((a, 91.7), (b, 80.3)):
        assert line.get_marker() not in (None, "", "None", " ")
        assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == [(1, mean)]
    saved[0].canvas.draw()  # the ticks as drawn
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown == [1]


def test_bad_tables(bench, tmp_path, tables_dir) -> None:
    code, _, err = bench("--tables", tmp_path / "missing")  # said "no tables in": a folder?
    assert code == 2 and f"{tmp_path / 'missing'}: no such folder; expected a folder of NAS" in err
    (tmp_path / "file").write_text("")
    code, _, err = bench("--tables", tmp_path / "file")
    assert (
        code == 2 and f"{tmp_path / 'file'}: a file, not a folder; expected a folder of NAS" in err
    )
    code, _, err = bench("--tables", tmp_path)
    assert code == 2 and "no NAS-Bench-201 tables" in err and err.count("\n") == 1
    (tmp_path / "nb201_12epoch_valtest.csv").write_text("arch,cellstr\n0,x\n")
    code, _, err = bench("--tables", tmp_path)
    assert code == 2 and "nb201_12epoch_valtest.csv lacks the columns" in err
    archive = tables_dir / "official-sample" / "NATS-tss-v1_0-3ffb9-simple"
    code, _, err = bench("--tables", archive)
    assert code == 2 and "--allow-pickle" in err
    # opted in: read, but a 3-cell sample cannot serve a search
    code, _, err = bench("--tables", archive, "--allow-pickle", "--runs", "1", "--queries", "5")
    assert code == 2 and "no 12-epoch validation accuracy" in err


def test_published_sanity_figures(tables_dir) -> None:
    """CIFAR-10, 12-epoch validation as the signal, 200-epoch test at 100 queries: REA ~93.9,
    random ~93.7 (NATS-Bench); plain edge shrinking ~93.03 (the issue's 500-run reference)."""
    tables = load_flat_tables(tables_dir)
    result = run_bench(
        tables, strategies=["random", "rea", "autoshrink-edges"], runs=200, queries=100,
        dataset="cifar10", seed=0,
    )  # fmt: skip
    at100 = {r["strategy"]: r["mean"] for r in summary_rows(result) if r["queries"] == 100}
    assert at100["random"] == pytest.approx(93.7, abs=0.2)
    assert at100["rea"] == pytest.approx(93.9, abs=0.2)
    assert at100["autoshrink-edges"] == pytest.approx(93.03, abs=0.25)
    again = run_bench(
        tables, strategies=["rea"], runs=5, queries=100, dataset="cifar10", seed=0
    )  # fmt: skip
    assert (again.traces[0].incumbent == result.traces[1].incumbent[:5]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # Random(-s) draws what Random(s) does: seeds -2..2 made runs 0 and 4 the same run
        ({"seed": -2}, "seed must be a whole number >= 0, got -2"),
        ({"strategies": "rea"}, "strategies must be a list of names, got the string 'rea'"),
        ({"queries": 2.5}, "queries must be a whole number >= 1, got 2.5"),
        ({"runs": 0}, "runs must be a whole number >= 1, got 0"),
        ({"objective": "score", "weight": -1.0}, "weight must be finite and >= 0, got -1"),
        ({"strategies": [ZC_STRATEGY]}, "strategy autoshrink-zc needs zero-cost scores"),
    ],
)
def test_run_bench_refuses_bad_arguments(tables_dir, kwargs, message) -> None:
    tables = load_flat_tables(tables_dir)
    settings = {"strategies": ["random"], "runs": 2, "queries": 5, "dataset": "cifar10"}
    with pytest.raises(ConfigError, match=message):
        run_bench(tables, **{**settings, **kwargs})


def test_runs_are_seeded_seed_plus_r_and_the_zero_cost_strategy_is_autoshrink_with_k_4(
    tables_dir, capsys
) -> None:
    tables = load_flat_tables(tables_dir)

    def rank(cells: list[NB201Cell]) -> list[float]:  # any fixed ranking
        return [float(c.code % 7) for c in cells]

    result = run_bench(
        tables, strategies=["random", ZC_STRATEGY], runs=2, queries=30, dataset="cifar10",
        seed=3, zc_rank=rank,
    )  # fmt: skip
    assert [t.seeds for t in result.traces] == [[3, 4], [3, 4]]
    search = SearchEvaluator(tables, dataset="cifar10", epochs=12)
    for run, seed in enumerate([3, 4]):
        alone = AutoShrinkNB201(rng=random.Random(seed), k=4, mode="ops", rank=rank)
        _, queried = run_once(alone, search, make_score("accuracy", 0.1), 30)
        assert (result.traces[1].queried[run] == queried).all()
    assert capsys.readouterr().err == ""  # no progress bar unless asked for


# -- an HW-NAS-Bench metric as the cost term ---------------------------------------------------


def write_hw(path: Path, column, *, dataset: str = "cifar10", metric: str = "edgegpu_latency"):
    """An HW-NAS-Bench pickle of the official layout with one metric (by official index)."""
    data = {"nasbench201": {dataset: {metric: column}}}
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def macs_by_index(tables, dataset: str = "cifar10") -> np.ndarray:
    """MACs (official flop) of every cell, by official index."""
    _, flop = topology_cost_table(dataset)
    return flop.astype(np.float64)[tables.index.codes]


def test_hw_cost_proportional_to_macs_gives_the_macs_run(bench, tables_dir, tmp_path) -> None:
    """latency = c * MACs shifts every score by the constant -w log10 c: the same searches and
    returned cells as the MACs run, with every reported cost c times the MACs."""
    c = 2.0**-20  # a power of two: c * x is exact, so the costs compare exactly
    tables = load_flat_tables(tables_dir)
    macs = macs_by_index(tables)
    hw_path = write_hw(tmp_path / "hw.pickle", (c * macs).tolist())
    cost = load_hwnasbench(hw_path, allow_pickle=True).cost(
        dataset="cifar10", metric="edgegpu_latency", index=tables.index
    )
    common = dict(
        strategies=["random", "rea", "local", "autoshrink"], runs=4, queries=60,
        dataset="cifar10", objective="score", weight=0.1, seed=3,
    )  # fmt: skip
    by_macs = run_bench(tables, **common)
    by_hw = run_bench(tables, **common, cost=cost)
    for a, b in zip(by_macs.traces, by_hw.traces, strict=True):
        assert np.array_equal(a.incumbent, b.incumbent) and np.array_equal(a.queried, b.queried)
    assert by_hw.cost_name == "edgegpu_latency" and by_macs.cost_name == "macs"

    args = ("--tables", tables_dir, "--runs", "3", "--queries", "40", "--objective", "score",
            "--json")  # fmt: skip
    code, out, err = bench(*args)
    assert code == 0, err
    macs_obj = json.loads(out)
    code, out, err = bench(
        *args, "--cost", "edgegpu_latency", "--hwnasbench", hw_path, "--allow-pickle"
    )
    assert code == 0, err
    hw_obj = json.loads(out)
    assert macs_obj["config"]["cost"] == "macs" and hw_obj["config"]["cost"] == "edgegpu_latency"
    shift = 0.1 * 20 * math.log10(2.0)  # -w log10 c
    for m, h in zip(macs_obj["results"], hw_obj["results"], strict=True):
        assert "cost_mean" not in m
        for key in ("strategy", "queries", "mean", "std", "valid_mean", "macs_mean"):
            assert h[key] == m[key]
        assert h["cost_mean"] == c * m["macs_mean"]
        assert h["score_mean"] == pytest.approx(m["score_mean"] + shift, abs=1e-9)
    assert [(p["strategy"], p["index"], p["accuracy"]) for p in hw_obj["pareto"]] == [
        (p["strategy"], p["index"], p["accuracy"]) for p in macs_obj["pareto"]
    ]
    for p in hw_obj["pareto"]:
        assert p["edgegpu_latency"] == c * macs[p["index"]] and p["macs"] == macs[p["index"]]
    best_m, best_h = macs_obj["score_optimum"], hw_obj["score_optimum"]
    assert best_h["index"] == best_m["index"] and "edgegpu_latency" not in best_m
    assert best_h["edgegpu_latency"] == c * best_m["macs"]
    assert best_h["score"] == pytest.approx(best_m["score"] + shift, abs=1e-9)


@pytest.mark.parametrize(
    ("zero_at", "more"),
    [(None, f" and {NUM_CELLS - 1} more cells"), ((9056, 9057), " and 1 more cell"), (9056, "")],
)
def test_a_hw_cost_that_is_not_positive_is_refused_by_name(
    bench, tables_dir, tmp_path, zero_at, more
):
    """Every cost 0: every score was -inf, and the code -1 failed far from its cause. One cost
    0 (index 9056, the score optimum): that cell scored -inf, silently out of the search and
    of the reported optimum."""
    column = np.zeros(NUM_CELLS) if zero_at is None else np.ones(NUM_CELLS)
    if zero_at is not None:
        column[np.array(zero_at)] = 0.0
    hw_path = write_hw(tmp_path / "hw.pickle", column.tolist())
    code, _, err = bench("--tables", tables_dir, "--runs", "1", "--queries", "5", "--objective",
                         "score", "--cost", "edgegpu_latency", "--hwnasbench", hw_path,
                         "--allow-pickle")  # fmt: skip
    index = 0 if zero_at is None else np.min(zero_at)
    assert code == 2 and err.count("\n") == 1
    assert f"hw.pickle: edgegpu_latency of cifar10 is 0 for official index {index} (|" in err
    assert f"|){more}; the score's cost term is its log10, so costs must be > 0" in err


def test_score_optimum_and_files_follow_the_hw_cost(bench, tables_dir, tmp_path) -> None:
    """The score optimum is the argmax over all cells of 12-epoch validation accuracy against a
    synthetic latency column (computed here with numpy), and the files report that latency."""
    tables = load_flat_tables(tables_dir)
    latency = np.random.default_rng(7).uniform(0.5, 20.0, NUM_CELLS)  # ms by official index
    hw_path = write_hw(tmp_path / "hw.pickle", latency.tolist(), dataset="cifar100")
    valid = tables.column(dataset="cifar100", metric="accuracy", epochs=12, split="valid")
    test = tables.column(dataset="cifar100", metric="accuracy", epochs=200, split="test")
    score = valid / 100.0 - 0.2 * (np.log10(latency) - 6.0)
    best = int(np.nanargmax(score))
    assert best != int(np.nanargmax(valid))  # the latency term matters here
    out = tmp_path / "out"
    code, text, err = bench(
        "--tables", tables_dir, "--dataset", "cifar100", "--runs", "3", "--queries", "30",
        "--objective", "score", "--lambda", "0.2", "--cost", "edgegpu_latency",
        "--hwnasbench", hw_path, "--allow-pickle", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "edgegpu_latency (ms, mean)" in text and "accuracy-vs-edgegpu_latency front" in text
    obj = json.loads((out / "bench.json").read_text())
    so = obj["score_optimum"]
    assert so["index"] == best and so["edgegpu_latency"] == latency[best]
    assert so["score"] == pytest.approx(score[best], abs=1e-12)
    assert so["accuracy"] == test[best]
    with (out / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    for r in runs:  # the returned cell's cost, search signal (valid, %) and test accuracy
        assert float(r["edgegpu_latency"]) == latency[int(r["index"])]
        assert float(r["valid"]) == pytest.approx(valid[int(r["index"])], rel=1e-9)
        assert float(r["test"]) == pytest.approx(test[int(r["index"])], rel=1e-12)
    for row in obj["results"]:
        lat = [
            latency[int(r["index"])]
            for r in runs
            if r["strategy"] == row["strategy"] and int(r["queries"]) == row["queries"]
        ]
        assert row["cost_mean"] == pytest.approx(np.mean(lat), rel=1e-12)
        assert cost_text(row["cost_mean"], "edgegpu_latency", 5) in text  # the table says it
    for p in obj["pareto"]:
        assert p["edgegpu_latency"] == latency[p["index"]] and p["accuracy"] == test[p["index"]]
    for s in obj["config"]["strategies"]:
        pts = [(p["edgegpu_latency"], p["accuracy"]) for p in obj["pareto"] if p["strategy"] == s]
        steps = zip(pts, pts[1:], strict=False)
        assert pts and all(a2 > a1 and l2 > l1 for (l1, a1), (l2, a2) in steps)
    with (out / "pareto.csv").open() as f:
        assert "edgegpu_latency" in next(csv.reader(f))
    assert (out / "pareto.png").stat().st_size > 0
    page = write_report(out).read_text()  # the HTML report plots and tabulates the latency
    assert "accuracy vs edgegpu_latency, ms" in page and "edgegpu_latency, ms mean" in page
    assert (out / "report" / "pareto.svg").stat().st_size > 0


def test_run_bench_rejects_a_cost_it_cannot_use(tables_dir, tmp_path) -> None:
    tables = load_flat_tables(tables_dir)
    hw = load_hwnasbench(write_hw(tmp_path / "hw.pickle", [1.0] * NUM_CELLS), allow_pickle=True)
    cost = hw.cost(dataset="cifar10", metric="edgegpu_latency", index=tables.index)
    common = dict(strategies=["random"], runs=1, queries=5, cost=cost)
    with pytest.raises(ConfigError, match="needs objective 'score'"):
        run_bench(tables, dataset="cifar10", **common)
    with pytest.raises(ConfigError, match="is for cifar10, but the bench runs cifar100"):
        run_bench(tables, dataset="cifar100", objective="score", **common)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--objective", "score", "--cost", "edgegpu_latency"),
         "--cost edgegpu_latency needs --hwnasbench FILE"),
        (("--objective", "score", "--cost", "edgegpu_latency", "--hwnasbench", "{full}"),
         "--allow-pickle"),
        (("--cost", "edgegpu_latency", "--hwnasbench", "{full}", "--allow-pickle"),
         "--cost edgegpu_latency is the cost term of --objective score"),
        (("--objective", "score", "--cost", "watts"),
         "--cost must be macs or an HW-NAS-Bench metric"),
        (("--objective", "score", "--hwnasbench", "{full}", "--allow-pickle"),
         "--hwnasbench is only read for --cost METRIC"),
        (("--objective", "score", "--cost", "edgegpu_latency", "--hwnasbench", "{gap}",
          "--allow-pickle"),
         "has no edgegpu_latency of cifar10 for 1 of 15625 cells, e.g. official index 5 (|"),
        (("--objective", "score", "--cost", "fpga_energy", "--hwnasbench", "{full}",
          "--allow-pickle"),
         "has no fpga_energy for cifar10"),
        (("--objective", "score", "--cost", "edgegpu_latency", "--hwnasbench", "{full}",
          "--allow-pickle", "--dataset", "cifar100"),
         "has no edgegpu_latency for cifar100"),
        (("--objective", "score", "--cost", "edgegpu_latency", "--hwnasbench", "{missing}",
          "--allow-pickle"),
         "not found"),
    ],
)  # fmt: skip
def test_bad_cost_arguments(bench, tables_dir, tmp_path, args, message) -> None:
    files = {
        "full": write_hw(tmp_path / "full.pickle", [1.0] * NUM_CELLS),
        "gap": write_hw(tmp_path / "gap.pickle", {i: 1.0 for i in range(NUM_CELLS) if i != 5}),
        "missing": tmp_path / "missing.pickle",
    }
    args = [a.format(**files) for a in args]
    code, _, err = bench("--tables", tables_dir, "--runs", "1", "--queries", "5", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


# -- a query is one distinct cell, for every strategy -------------------------------------------


def test_every_strategy_pays_one_query_per_distinct_cell(tables_dir) -> None:
    tables = load_flat_tables(tables_dir)
    result = run_bench(
        tables, strategies=["random", "rea", "local", "autoshrink", "autoshrink-edges"],
        runs=20, queries=200, dataset="cifar10", seed=0,
    )  # fmt: skip
    for trace in result.traces:
        for row in trace.queried:
            assert len(set(row.tolist())) == len(row) and (row >= 0).all(), trace.name


class Repeater:
    """Proposes the cells ``codes`` in turn, one per ask, forever (so it repeats them)."""

    def __init__(self, codes: list[int]) -> None:
        self.codes, self.i, self.told = codes, 0, []

    @property
    def best(self):
        return None

    def ask(self):
        from autoshrink.spaces.nb201 import NB201Cell
        from autoshrink.strategies.base import Proposal

        code = self.codes[self.i % len(self.codes)]
        self.i += 1
        return [Proposal(NB201Cell.from_code(code), self.i)]

    def tell(self, observations) -> None:
        self.told += [o.proposal.genotype.code for o in observations]


def test_repeated_proposals_are_answered_but_not_counted() -> None:
    from autoshrink.objectives import Score
    from autoshrink.tabular.comparison import MAX_REPEATS, run_once

    looked_up: list[int] = []

    def evaluate(cell):
        looked_up.append(cell.code)
        return {"accuracy": cell.code / 100.0}

    score = Score(metric="accuracy", weight=0.0)
    strategy = Repeater([5, 7, 5, 5, 9, 7, 11])
    incumbent, queried = run_once(strategy, evaluate, score, 4)
    assert queried.tolist() == [5, 7, 9, 11] and looked_up == [5, 7, 9, 11]
    assert incumbent.tolist() == [5, 7, 9, 11]
    assert strategy.told == [5, 7, 5, 5, 9, 7, 11]  # repeats are told, from the history
    stuck = Repeater([3, 4])  # only two distinct cells: the run stops after MAX_REPEATS
    incumbent, queried = run_once(stuck, evaluate, score, 5)
    assert queried.tolist() == [3, 4, -1, -1, -1] and incumbent.tolist() == [3, 4, 4, 4, 4]
    assert stuck.i == 2 + MAX_REPEATS


def test_the_curves_band_is_the_standard_error_of_the_mean() -> None:
    from autoshrink.report.bench_files import standard_error

    runs = np.array([[93.1, 91.4, 94.0], [90.2, 92.8, 93.3]])  # two checkpoints, three runs
    population = runs.std(axis=1)  # what results.csv and curves.csv hold (ddof=0)
    expected = runs.std(axis=1, ddof=1) / np.sqrt(3)  # the textbook standard error
    assert np.allclose(standard_error(population, 3), expected)
    assert standard_error(np.array([0.0]), 1).tolist() == [0.0]  # one run: no band


def test_a_bench_too_large_for_the_memory_names_its_own_sizes(bench, tables_dir, monkeypatch):
    # the line named "(batch, image size, width, nodes)", settings a bench does not have
    import autoshrink.cli.bench as cli_bench

    def too_large(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli_bench, "run_bench", too_large)
    code, _, err = bench("--tables", tables_dir, "--runs", "65536", "--queries", "65536")
    assert code == 2 and err == (
        "autoshrink: error: out of memory: the sizes asked for (--runs times --queries) do not "
        "fit this machine\n"
    )


def test_the_score_table_has_a_header_and_lines_up_with_the_accuracy_table() -> None:
    cfg = {"dataset": "cifar10", "reported": "test accuracy", "runs": 3, "search_signal": "s"}
    cfg |= {"objective": "score", "weight": 0.1, "cost": "macs", "strategies": ["rea", "local"]}
    results = [
        {"strategy": s, "queries": q, "mean": 90.5 + q / 100, "std": 1.25, "score_mean": 0.65,
         "score_std": 0.004, "macs_mean": 2.88e7}
        for s in cfg["strategies"] for q in (25, 300)
    ]  # fmt: skip
    obj = {"config": cfg, "results": results, "pareto": [], "optimum": {"accuracy": 94.37}}
    obj["score_optimum"] = {"score": 0.6741, "macs": 1.56e7}
    lines = format_table(obj).splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("strategy")]
    assert len(headers) == 2  # one above each table, naming the query checkpoints
    accuracy, score = lines[headers[0] : headers[0] + 3], lines[headers[1] : headers[1] + 3]
    assert accuracy[0] == score[0] and accuracy[0].split() == ["strategy", "25", "300"]
    for table in (accuracy, score):  # every row as long as its header: the columns line up
        assert {len(line) for line in table} == {len(accuracy[0])}, table
    assert score[1].endswith("0.6500±0.004  28.8M")
