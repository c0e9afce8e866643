"""The report of a NAS-Bench-201 bench folder (``autoshrink bench nb201 --out DIR``).

Reads ``bench.json``, ``curves.csv``, ``results.csv`` and, with the score objective,
``pareto.csv``; writes ``DIR/report/index.html`` with the test accuracy of the returned cell
against queries (mean and its standard error over the runs, the benchmark's optimum dashed),
the score against queries (score objective; the benchmark's best score dashed, and in the
summary), the returned cells' accuracy-vs-cost fronts (MACs
or the HW-NAS-Bench metric of ``--cost``), the table of checkpoints and the bench's settings.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoshrink.errors import BenchmarkError
from autoshrink.report import html
from autoshrink.report.bench_files import cost_label, plot_curves
from autoshrink.report.mpl import Figure, save_figure
from autoshrink.tabular.comparison import MACS
from autoshrink.user_files import check_schema, json_type_problem, read_json_file, read_text_file

log = logging.getLogger(__name__)

BENCH = "bench.json"


@dataclass(frozen=True, kw_only=True)
class BenchConfigFields:
    """What the report reads of ``bench.json``'s ``config`` (a schema, never built)."""

    runs: int = 1
    strategies: list[str] = field(default_factory=list)
    cost: str = MACS


@dataclass(frozen=True, kw_only=True)
class OptimumFields:
    """What the report reads of ``bench.json``'s ``optimum`` (a schema, never built)."""

    accuracy: float | None = None


@dataclass(frozen=True, kw_only=True)
class ScoreOptimumFields:
    """What the report reads of ``bench.json``'s ``score_optimum`` (score objective; older
    files have none): a schema, never built."""

    score: float | None = None


@dataclass(frozen=True, kw_only=True)
class BenchFields:
    """The JSON types of what the report reads of ``bench.json`` (a schema, never built)."""

    config: BenchConfigFields = field(default_factory=BenchConfigFields)
    optimum: OptimumFields | None = None
    score_optimum: ScoreOptimumFields | None = None


def read_bench(path: Path) -> dict[str, Any]:
    """``bench.json``'s object; anything the report cannot read is a one-line
    :class:`BenchmarkError` naming the file (and the field)."""
    bench = read_json_file(path, BenchmarkError, "bench")
    check_schema(path, bench, BenchFields, BenchmarkError)
    return dict(bench)


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _rows(
    path: Path, need: tuple[str, ...] = (), numbers: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The rows of the CSV file ``path`` (none when there is no such file), values as floats
    where they read as numbers. The header must be there (an empty file is damaged) and have
    the columns ``need``, and the columns
    ``numbers`` it has must hold numbers. A row that does not fit -- values for another number
    of columns, text where a number belongs -- is a one-line :class:`BenchmarkError` naming the
    file and the line, except a last line without its newline, which is skipped: the file is
    being written now (read-only: nothing is cut)."""
    if not path.is_file():
        return []
    text = read_text_file(path, BenchmarkError, "CSV")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        lines = [(reader.line_num, row) for row in reader if row]
    except csv.Error as err:
        raise BenchmarkError(f"{path}: line {reader.line_num}: not CSV ({err})") from None
    if not lines:  # the bench writes each file with its header, in one step: emptied since
        raise BenchmarkError(f"{path}: empty: no header line; restore it or run the bench again")
    (_, header), *lines = lines
    missing = [c for c in need if c not in header]
    if missing:
        raise BenchmarkError(f"{path}: line 1: no column {missing[0]!r} in the header")
    out = []
    for i, (n, row) in enumerate(lines, start=1):
        problem = _row_problem(header, row, numbers)
        if problem is not None:
            if i == len(lines) and not text.endswith("\n"):  # the file is being written
                log.info("%s: skipping a partly written last line", path)
                break
            raise BenchmarkError(f"{path}: line {n}: {problem}")
        out.append({k: _number(v) for k, v in zip(header, row, strict=True)})
    return out


def _row_problem(header: list[str], row: list[str], numbers: tuple[str, ...]) -> str | None:
    """What is wrong with the CSV ``row`` under ``header``, as one phrase; ``None`` if nothing."""
    if len(row) != len(header):
        return f"{len(row)} values for {len(header)} columns"
    for column, value in zip(header, row, strict=True):
        if column in numbers and isinstance(_number(value), str):
            return json_type_problem(float, value, column)
    return None


def _plot_pareto(rows: list[dict[str, Any]], cost: str, path: Path) -> Path:
    """Each strategy's accuracy-vs-``cost`` front (``cost``: the column of pareto.csv)."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name in dict.fromkeys(r["strategy"] for r in rows):
        rs = sorted((r for r in rows if r["strategy"] == name), key=lambda r: r[cost])
        ax.plot([r[cost] for r in rs], [r["accuracy"] for r in rs], "-o", markersize=4, label=name)
    ax.set_xscale("log")
    ax.set_xlabel(f"{_cost_label(cost)} (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)
    return path


def write_bench_report(bench_dir: Path) -> Path:
    """Write ``bench_dir/report/index.html`` for an NB201 bench folder; returns its path."""
    bench_dir = Path(bench_dir)
    bench = read_bench(bench_dir / BENCH)
    for name in ("curves.csv", "results.csv"):  # written before bench.json, which ends a bench
        if not (bench_dir / name).is_file():
            raise BenchmarkError(f"{bench_dir}: {BENCH} is there but {name} is not; restore it")
    config = bench.get("config", {})
    runs = int(config.get("runs", 1))
    cost = str(config.get("cost", MACS))
    curves = _rows(
        bench_dir / "curves.csv",
        need=("strategy", "queries", "mean"),
        numbers=("queries", "mean", "std", "score_mean", "score_std"),
    )
    shown = ("queries", "runs", "mean", "std", "valid_mean", "macs_mean", "score_mean")
    results = _rows(
        bench_dir / "results.csv",
        need=("strategy", "queries", "mean"),
        numbers=(*shown, "score_std", "cost_mean"),
    )
    pareto = _rows(
        bench_dir / "pareto.csv", need=("strategy", "accuracy"), numbers=("accuracy", cost)
    )
    optimum = (bench.get("optimum") or {}).get("accuracy")
    best = bench.get("score_optimum") or {}  # the benchmark's best score (score objective)
    score_optimum = best.get("score")
    out = bench_dir / "report"
    html.page_folder(out)
    title = f"NAS-Bench-201 bench: {config.get('dataset', '?')}, {bench_dir.resolve().name}"
    summary = html.definitions(
        [
            ("strategies", ", ".join(config.get("strategies", []))),
            ("runs × queries", f"{runs} × {config.get('queries')}"),
            ("objective", config.get("objective")),
            ("search sees", config.get("search_signal")),
            ("reported", config.get("reported")),
            ("optimum", f"{fmt_opt(optimum)} ({(bench.get('optimum') or {}).get('arch', '')})"),
            *(
                [("score optimum", f"{score_optimum:.4f} ({best.get('arch', '')})")]
                if score_optimum is not None
                else []
            ),
            ("elapsed s", bench.get("elapsed_s")),
        ]
    )
    sections: list[tuple[str, str]] = [("", summary)]
    if curves:
        fig = plot_curves(curves, "mean", runs, optimum, "test accuracy (%)", out / "curves.svg")
        caption = (
            "200-epoch test accuracy of the cell each strategy would return after each "
            "query: mean over the runs, band ± one standard error; optimum dashed."
        )
        sections.append(("Accuracy vs queries", html.figure(fig, out, caption)))
        if config.get("objective") == "score" and "score_mean" in curves[0]:
            fig = plot_curves(
                curves, "score_mean", runs, score_optimum, "score", out / "score.svg", digits=4
            )
            caption = "search objective, mean ± s.e.m." + (
                "; the benchmark's best score dashed" if score_optimum is not None else ""
            )
            sections.append(("Score vs queries", html.figure(fig, out, caption)))
    if pareto and cost in pareto[0]:
        label = _cost_label(cost)
        fig = _plot_pareto(pareto, cost, out / "pareto.svg")
        caption = f"accuracy-vs-{label} front of the cells each strategy returned (all runs pooled)"
        sections.append((f"Returned cells: accuracy vs {label}", html.figure(fig, out, caption)))
    if results:
        header = [
            "strategy",
            "queries",
            "runs",
            "mean %",
            "std",
            "valid mean %",
            "MACs mean",
            "score mean",
            "score std",
        ] + ([f"{_cost_label(cost)} mean"] if cost != MACS else [])
        keys = [
            "strategy",
            "queries",
            "runs",
            "mean",
            "std",
            "valid_mean",
            "macs_mean",
            "score_mean",
            "score_std",
        ] + (["cost_mean"] if cost != MACS else [])
        rows = [
            [_count(r.get(k)) if k in ("queries", "runs") else r.get(k) for k in keys]
            for r in results
        ]
        sections.append(("Checkpoints (results.csv)", html.table(header, rows, left=1)))
    sections.append(("Settings (bench.json config)", html.pre(json.dumps(config, indent=2))))
    page = out / "index.html"
    html.write_page(page, title, sections)
    log.debug("wrote %s", page)  # the command line prints where
    return page


def _cost_label(cost: str) -> str:
    """``MACs``, or an HW-NAS-Bench metric with its unit (``edgegpu_latency, ms``)."""
    label, unit, _ = cost_label(cost)
    return label if cost == MACS or not unit else f"{label}, {unit}"


def fmt_opt(value: float | None) -> str:
    """A percentage with two decimals, or a dash for a missing value."""
    return "–" if value is None else f"{value:.2f}%"


def _count(v: Any) -> Any:
    """A count read from the CSV as a float (queries, runs), as an int for the table."""
    return int(v) if isinstance(v, float) and v.is_integer() else v
