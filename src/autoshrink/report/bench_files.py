"""The outputs of a NAS-Bench-201 strategy comparison: the JSON object, the text table, files.

:func:`report_object` is the ``autoshrink bench nb201 --json`` object, :func:`format_table` the
human-readable table, :func:`write_outputs` the ``--out`` folder: ``bench.json``,
``results.csv``, ``curves.csv``, ``runs.csv``, ``curves.png`` and, with the score objective,
``pareto.csv`` and ``pareto.png`` (shapes in docs/nb201.md). Costs are shown as MACs in millions
or as an HW-NAS-Bench metric in its unit (:func:`cost_label`). Test accuracies appear here,
after the searches, never inside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.atomic_write import write_csv, write_json
from autoshrink.errors import ConfigError
from autoshrink.hardware.hwnasbench import METRICS
from autoshrink.nouns import count
from autoshrink.outputs import mark_unfinished
from autoshrink.spaces.nb201 import NB201Cell
from autoshrink.tabular.comparison import (
    MACS,
    BenchResult,
    cost_values,
    curves,
    objective_values,
    pareto_front,
    pareto_rows,
    score_curves,
    score_optimum,
    summary_rows,
)


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
    by = {(r["strategy"], r["queries"]): r for r in rows}
    scores: dict[str, list[str]] = {}  # the score objective's cells, per strategy
    cost = cfg.get("cost", MACS)
    if cfg["objective"] == "score":
        mean_key = "macs_mean" if cost == MACS else "cost_mean"
        for s in cfg["strategies"]:
            scores[s] = [
                f"{by[s, q]['score_mean']:.4f}±{by[s, q]['score_std']:.3f} "
                f"{cost_text(by[s, q][mean_key], cost, 5)}"
                for q in qs
            ]
    # one column width for both tables, so that a checkpoint's columns line up
    width = max([16, *(len(c) + 2 for cells in scores.values() for c in cells)])
    header = f"{'strategy':18s}" + "".join(f"{q:>{width}d}" for q in qs)
    lines = [
        f"NAS-Bench-201 {cfg['dataset']}: {cfg['reported']} (%) of the returned cell, "
        f"mean ± std over {count(cfg['runs'], 'run')}",
        f"search signal: {cfg['search_signal']}; objective: {cfg['objective']}"
        + (f" (lambda {cfg['weight']})" if cfg["objective"] == "score" else "")
        + f"; benchmark optimum {obj['optimum']['accuracy']:.2f}",
        header,
    ]
    for s in cfg["strategies"]:
        cells = [f"{by[s, q]['mean']:.2f} ± {by[s, q]['std']:4.2f}" for q in qs]
        lines.append(f"{s:18s}" + "".join(f"{c:>{width}}" for c in cells))
    if cfg["objective"] == "score":
        so = obj["score_optimum"]
        label, unit, _ = cost_label(cost)
        lines.append(
            f"score (mean ± std) and {label} ({unit}, mean) of the returned cell; "
            f"best score {so['score']:.4f} ({cost_text(so[cost], cost)} {label})"
        )
        lines.append(header)
        for s in cfg["strategies"]:
            lines.append(f"{s:18s}" + "".join(f"{c:>{width}}" for c in scores[s]))
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
    write_csv(path, fields, ([row.get(k, "") for k in fields] for row in rows))


#: Every file a bench writes into its ``--out`` folder (``pareto.*`` with a score objective).
FILES = (
    *("bench.json", "results.csv", "curves.csv", "runs.csv", "curves.png"),
    *("pareto.csv", "pareto.png"),
)


def write_outputs(
    result: BenchResult, obj: dict[str, Any], index_of_code: np.ndarray, out: Path
) -> list[Path]:
    """Write the files listed in the module docstring, each in one step and ``bench.json``
    last; returns their paths."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create --out folder {out}: {err}") from None
    written = [out / "bench.json", out / "results.csv", out / "curves.csv", out / "runs.csv"]
    mark_unfinished(written[0], "bench")  # until its end: the folder stays the bench's
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
    cfg, runs = obj["config"], obj["config"]["runs"]
    cost = "" if cfg["cost"] == MACS else f" ({cfg['cost']})"
    title = (
        f"NAS-Bench-201 {cfg['dataset']}, objective {cfg['objective']}{cost}: "
        f"mean of {count(runs, 'run')} ± s.e.m."
    )
    label = f"{cfg['reported']} (%)"
    plot_curves(curve_rows, "mean", runs, obj["optimum"]["accuracy"], label, written[-1], title)
    if obj["pareto"]:
        written.append(out / "pareto.csv")
        _write_csv(written[-1], obj["pareto"], list(obj["pareto"][0]))
        written.append(out / "pareto.png")
        plot_pareto(result, obj, written[-1])
    else:  # an earlier (killed) score bench's front is not this bench's
        for stale in ("pareto.csv", "pareto.png"):
            (out / stale).unlink(missing_ok=True)
    # last: bench.json marks the folder as a finished bench's (outputs.SIGNATURES); a bench
    # killed before it leaves the note, and the next bench writes over the folder
    write_json(written[0], obj, indent=1)
    return written


def standard_error(std: np.ndarray, runs: int) -> np.ndarray:
    """The standard error of a mean over ``runs`` from the population standard deviation
    ``std`` (``ddof=0``, as the bench files hold it): ``std / sqrt(runs - 1)``, which is the
    sample standard deviation over ``sqrt(runs)``; zero for one run."""
    return std / math.sqrt(runs - 1) if runs > 1 else np.zeros_like(std)


#: Curves of more queries than this have a log axis of queries: at 15,000 queries the
#: checkpoints that tell strategies apart (25 to 200) were the leftmost 1% of a linear axis.
LOG_QUERIES = 1000


def plot_curves(
    rows: list[dict[str, Any]],
    column: str,
    runs: int,
    optimum: float | None,
    label: str,
    path: Path,
    title: str = "",
    digits: int = 2,
) -> Path:
    """``column`` of the curve ``rows`` (those of ``curves.csv``) against queries, a line per
    strategy with a band of one standard error of the mean over ``runs``
    (:func:`standard_error`); ``optimum`` dashed (when given; ``digits`` decimals in the legend);
    a log axis of queries beyond :data:`LOG_QUERIES`. Written to ``path`` (SVG or PNG, by its
    suffix)."""
    from autoshrink.report.mpl import Figure, MaxNLocator, plain_numbers, save_figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    std = "std" if column == "mean" else column.replace("mean", "std")
    for name in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == name]
        q = np.array([r["queries"] for r in rs])
        m = np.array([r[column] for r in rs])
        sem = standard_error(np.array([r.get(std, 0.0) for r in rs], dtype=float), runs)
        ax.plot(q, m, marker="o" if len(q) == 1 else None, label=name)  # a lone point: a dot
        ax.fill_between(q, m - sem, m + sem, alpha=0.2)
    if optimum is not None:
        ax.axhline(
            optimum, color="k", linestyle="--", linewidth=1, label=f"optimum {optimum:.{digits}f}"
        )
    many = max((r["queries"] for r in rows), default=0) > LOG_QUERIES
    if many:
        ax.set_xscale("log")
    else:  # whole queries (one query was 0.96 to 1.04)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
    ax.set_xlabel("queries (log)" if many else "queries")
    ax.set_ylabel(label)
    plain_numbers(ax)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path, dpi=120)
    return path


def plot_pareto(result: BenchResult, obj: dict[str, Any], path: Path) -> None:
    """Returned cells' test accuracy vs the cost per strategy, with the benchmark's own
    front."""
    from autoshrink.report.mpl import Figure, save_figure

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
    save_figure(fig, path, dpi=120)
