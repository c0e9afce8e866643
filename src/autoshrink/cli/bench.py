"""``autoshrink bench nb201``: compare search strategies on NAS-Bench-201, simulated from tables.

Prints, for each strategy and at 25/50/100/200 queries (those within ``--queries``), the mean
and std over ``--runs`` seeded runs of the 200-epoch test accuracy of the cell the strategy
would return; the searches themselves see only validation accuracy and cost. ``--json``
prints one JSON object instead; ``--out DIR`` writes these files (shapes in the README):

- ``bench.json`` -- the ``--json`` object: ``config``, ``optimum``, ``score_optimum``,
  ``results`` (one row per strategy and checkpoint), ``pareto``, ``elapsed_s``;
- ``results.csv`` -- the ``results`` rows; ``curves.csv`` -- ``strategy,queries,mean,std`` after
  every query; ``runs.csv`` -- every run's returned cell at every checkpoint;
  ``pareto.csv`` -- the ``pareto`` rows (``--objective score`` only);
- ``curves.png`` -- accuracy vs queries, one line per strategy, the optimum dashed;
  ``pareto.png`` -- returned cells and the benchmark front, accuracy vs cost (score only).

The cost term of ``--objective score`` is the cell's MACs, or with ``--cost METRIC
--hwnasbench FILE --allow-pickle`` an HW-NAS-Bench metric (``edgegpu_latency``, ...; see
:data:`autoshrink.hwnasbench.METRICS`) of the same data set, read from the user's HW-NAS-Bench
pickle. The table, the plots and the files then follow that metric: result rows gain
``cost_mean``, pareto rows and ``score_optimum`` give the metric under its own name (beside
``macs``), ``runs.csv`` gains its column and ``config.cost`` names it (``"macs"`` otherwise).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.bench import (
    MACS,
    OBJECTIVES,
    STRATEGIES,
    BenchResult,
    cost_values,
    curves,
    objective_values,
    pareto_front,
    pareto_rows,
    run_bench,
    score_curves,
    score_optimum,
    summary_rows,
)
from autoshrink.errors import ConfigError
from autoshrink.hwnasbench import METRICS, HWNASBenchCost, load_hwnasbench
from autoshrink.spaces.nb201 import NB201Cell
from autoshrink.tabular import NB201Tables, load_tables

logger = logging.getLogger(__name__)
DEFAULT_STRATEGIES = "random,rea,local,autoshrink"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="compare search strategies on a tabular benchmark (NAS-Bench-201)",
        description="Run every strategy R times at a query budget on NAS-Bench-201 tables; "
        "searches see 12-epoch validation accuracy, the report gives the 200-epoch test "
        "accuracy of the returned cell.",
    )
    p.add_argument("benchmark", choices=["nb201"], help="the benchmark")
    p.add_argument(
        "--tables",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder with the flat CSVs (or an official archive, with --allow-pickle)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow reading pickles (an official .pickle.pbz2 archive, the --hwnasbench "
        "file) with the restricted reader",
    )
    p.add_argument(
        "--hwnasbench",
        type=Path,
        default=None,
        metavar="FILE",
        help="HW-NAS-Bench pickle (HW-NAS-Bench-v1_0.pickle) for --cost; needs --allow-pickle",
    )
    p.add_argument(
        "--cost",
        default=MACS,
        metavar="METRIC",
        help=f"cost term of --objective score: macs (default) or, with --hwnasbench, one of "
        f"{', '.join(METRICS)}",
    )
    p.add_argument(
        "--dataset", default="cifar10", help="cifar10, cifar100 or ImageNet16-120 (default cifar10)"
    )
    p.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help=f"comma-separated, from {','.join(STRATEGIES)} (default {DEFAULT_STRATEGIES})",
    )
    p.add_argument("--runs", type=int, default=100, help="seeded runs per strategy (default 100)")
    p.add_argument("--queries", type=int, default=200, help="query budget per run (default 200)")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="accuracy",
        help="what the searches maximise (default accuracy)",
    )
    p.add_argument(
        "--weight",
        type=float,
        default=0.1,
        help="lambda of --objective score: acc - lambda*(log10 cost - 6) (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="run r uses seed SEED+r (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write bench.json, CSVs and plots here",
    )
    p.set_defaults(handler=run)


def _cell_info(code: int, index_of_code: np.ndarray, **numbers: float) -> dict[str, Any]:
    cell = NB201Cell.from_code(code)
    return {"index": int(index_of_code[code]), "arch": cell.arch_string(), **numbers}


def report_object(result: BenchResult, index_of_code: np.ndarray, elapsed: float) -> dict[str, Any]:
    """The ``--json`` object."""
    best, cell = result.optimum
    out: dict[str, Any] = {
        "config": result.config,
        "optimum": _cell_info(cell.code, index_of_code, accuracy=best),
        "score_optimum": None,
        "results": summary_rows(result),
        "pareto": [],
        "elapsed_s": round(elapsed, 3),
    }
    if result.config["objective"] == "score":
        c = score_optimum(result)
        out["score_optimum"] = _cell_info(
            c,
            index_of_code,
            score=float(objective_values(result, np.array([c]))[0]),
            accuracy=float(result.test_by_code[c]),
            **cost_values(result, c),
        )
        out["pareto"] = pareto_rows(result, index_of_code)
    return out


def cost_label(name: str) -> tuple[str, str, float]:
    """``(label, unit, scale)`` of a cost for reports: MACs in millions, HW metrics as-is."""
    if name == MACS:
        return "MACs", "M", 1e6
    return name, METRICS.get(name, ""), 1.0


def cost_text(value: float, name: str, width: int = 0, *, unit: bool = True) -> str:
    """A cost for the table: MACs as ``12.3M``, an HW metric as ``3.46ms``."""
    _, suffix, scale = cost_label(name)
    digits = ".1f" if name == MACS else ".2f"
    return f"{value / scale:{width}{digits}}" + (suffix if unit else "")


def format_table(obj: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg, rows = obj["config"], obj["results"]
    qs = sorted({r["queries"] for r in rows})
    lines = [
        f"NAS-Bench-201 {cfg['dataset']}: {cfg['reported']} (%) of the returned cell, "
        f"mean ± std over {cfg['runs']} runs",
        f"search signal: {cfg['search_signal']}; objective: {cfg['objective']}"
        + (f" (lambda {cfg['weight']})" if cfg["objective"] == "score" else "")
        + f"; benchmark optimum {obj['optimum']['accuracy']:.2f}",
        f"{'strategy':18s}" + "".join(f"{q:>16d}" for q in qs),
    ]
    by = {(r["strategy"], r["queries"]): r for r in rows}
    for s in cfg["strategies"]:
        cells = "".join(f"{by[s, q]['mean']:>9.2f} ± {by[s, q]['std']:4.2f}" for q in qs)
        lines.append(f"{s:18s}{cells}")
    if cfg["objective"] == "score":
        so, cost = obj["score_optimum"], cfg["cost"]
        label, unit, _ = cost_label(cost)
        mean_key = "macs_mean" if cost == MACS else "cost_mean"
        lines.append(
            f"score (mean ± std) and {label} ({unit}, mean) of the returned cell; "
            f"best score {so['score']:.4f} ({cost_text(so[cost], cost)} {label})"
        )
        for s in cfg["strategies"]:
            cells = "".join(
                f"{by[s, q]['score_mean']:>8.4f}±{by[s, q]['score_std']:.3f} "
                f"{cost_text(by[s, q][mean_key], cost, 5)}"
                for q in qs
            )
            lines.append(f"{s:18s}{cells}")
        lines.append(f"accuracy-vs-{label} front of the returned cells ({label} {unit}: test %):")
        for s in cfg["strategies"]:
            pts = [p for p in obj["pareto"] if p["strategy"] == s]
            lines.append(
                f"{s:18s}"
                + ", ".join(
                    f"{cost_text(p[cost], cost, unit=False)}: {p['accuracy']:.2f}" for p in pts
                )
            )
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(
    result: BenchResult, obj: dict[str, Any], index_of_code: np.ndarray, out: Path
) -> list[Path]:
    """Write the files listed in the module docstring; returns their paths."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create --out folder {out}: {err}") from None
    written = [out / "bench.json", out / "results.csv", out / "curves.csv", out / "runs.csv"]
    written[0].write_text(json.dumps(obj, indent=1) + "\n")
    _write_csv(written[1], obj["results"], list(obj["results"][0]))
    curve_rows = []
    scores = score_curves(result)
    for name, (mean, std) in curves(result).items():
        smean, sstd = scores[name]
        curve_rows += [
            {
                "strategy": name,
                "queries": q + 1,
                "mean": float(mean[q]),
                "std": float(std[q]),
                "score_mean": float(smean[q]),
                "score_std": float(sstd[q]),
            }
            for q in range(len(mean))
        ]
    _write_csv(written[2], curve_rows, list(curve_rows[0]))
    run_rows = []
    for trace in result.traces:
        for r, seed in enumerate(trace.seeds):
            for q in result.checkpoints:
                code = int(trace.incumbent[r, q - 1])
                run_rows.append(
                    {
                        "strategy": trace.name,
                        "run": r,
                        "seed": seed,
                        "queries": q,
                        **_cell_info(code, index_of_code),
                        "valid": 100.0 * float(result.valid_by_code[code]),
                        "test": float(result.test_by_code[code]),
                        **cost_values(result, code),
                    }
                )
    _write_csv(written[3], run_rows, list(run_rows[0]))
    written.append(out / "curves.png")
    plot_curves(result, obj, written[-1])
    if obj["pareto"]:
        written.append(out / "pareto.csv")
        _write_csv(written[-1], obj["pareto"], list(obj["pareto"][0]))
        written.append(out / "pareto.png")
        plot_pareto(result, obj, written[-1])
    return written


def plot_curves(result: BenchResult, obj: dict[str, Any], path: Path) -> None:
    """Test accuracy of the returned cell vs queries: mean over runs with a band of one
    standard error of the mean; the benchmark optimum dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    runs = obj["config"]["runs"]
    lows = []
    for name, (mean, std) in curves(result).items():
        x = np.arange(1, len(mean) + 1)
        sem = std / np.sqrt(runs)
        (line,) = ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.2)
        lows.append(float(mean[min(9, len(mean) - 1)]))
    best = obj["optimum"]["accuracy"]
    ax.axhline(best, color="black", linestyle="--", linewidth=1, label=f"optimum {best:.2f}")
    lo = min(lows)
    ax.set_ylim(lo, best + 0.08 * (best - lo) + 0.05)
    cfg = obj["config"]
    ax.set_xlabel("queries")
    ax.set_ylabel(f"{cfg['reported']} (%)")
    cost = "" if cfg["cost"] == MACS else f" ({cfg['cost']})"
    ax.set_title(
        f"NAS-Bench-201 {cfg['dataset']}, objective {cfg['objective']}{cost}: "
        f"mean of {runs} runs ± s.e.m."
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_pareto(result: BenchResult, obj: dict[str, Any], path: Path) -> None:
    """Returned cells' test accuracy vs the cost per strategy, with the benchmark's own
    front."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    label, unit, scale = cost_label(result.cost_name)
    ok = np.isfinite(result.test_by_code) & np.isfinite(result.cost_by_code)
    acc, cost = result.test_by_code[ok], result.cost_by_code[ok]
    front = pareto_front(acc, cost)
    ax.step(
        cost[front] / scale,
        acc[front],
        where="post",
        color="black",
        linewidth=1,
        label="benchmark front",
    )
    for trace in result.traces:
        codes = trace.incumbent[:, -1]
        ax.scatter(
            result.cost_by_code[codes] / scale,
            result.test_by_code[codes],
            s=12,
            alpha=0.5,
            label=trace.name,
        )
    ax.set_xscale("log")
    detail = "official flop convention" if result.cost_name == MACS else "HW-NAS-Bench"
    ax.set_xlabel(f"{label} ({unit}, {detail})")
    ax.set_ylabel(f"{obj['config']['reported']} (%)")
    ax.set_title(
        f"returned cells at {obj['config']['queries']} queries, lambda {obj['config']['weight']}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def check_cost_args(args: argparse.Namespace) -> None:
    """One-line errors for a ``--cost``/``--hwnasbench`` combination that cannot work."""
    if args.cost != MACS and args.cost not in METRICS:
        raise ConfigError(
            f"--cost must be {MACS} or an HW-NAS-Bench metric ({', '.join(METRICS)}), "
            f"got {args.cost!r}"
        )
    if args.cost != MACS and args.objective != "score":
        raise ConfigError(
            f"--cost {args.cost} is the cost term of --objective score, "
            f"but --objective is {args.objective}"
        )
    if args.cost != MACS and args.hwnasbench is None:
        raise ConfigError(f"--cost {args.cost} needs --hwnasbench FILE (an HW-NAS-Bench pickle)")
    if args.cost == MACS and args.hwnasbench is not None:
        raise ConfigError(
            f"--hwnasbench is only read for --cost METRIC (one of {', '.join(METRICS)})"
        )


def hw_cost(args: argparse.Namespace, tables: NB201Tables) -> HWNASBenchCost | None:
    """The ``--cost`` HW-NAS-Bench metric read from ``--hwnasbench`` (``None`` for MACs)."""
    if args.cost == MACS:
        return None
    hw = load_hwnasbench(args.hwnasbench, allow_pickle=args.allow_pickle)
    return hw.cost(dataset=args.dataset, metric=args.cost, index=tables.index)


def run(args: argparse.Namespace) -> int:
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    check_cost_args(args)
    start = time.perf_counter()
    tables = load_tables(args.tables, allow_pickle=args.allow_pickle)
    result = run_bench(
        tables,
        strategies=names,
        runs=args.runs,
        queries=args.queries,
        dataset=args.dataset,
        objective=args.objective,
        weight=args.weight,
        seed=args.seed,
        progress=lambda name: logger.debug("running %s", name),
        cost=hw_cost(args, tables),
    )
    obj = report_object(result, tables.index.index_of_code, time.perf_counter() - start)
    print(json.dumps(obj) if args.json else format_table(obj))
    if args.out is not None:
        written = write_outputs(result, obj, tables.index.index_of_code, args.out)
        if not args.json:
            print("wrote " + ", ".join(str(p) for p in written))
    return 0
