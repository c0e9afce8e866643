"""AutoShrink against random search and regularized evolution on the same cells, equal budgets.

For each seed: an AutoShrink search with the preset's settings, then random search and REA
(population 10, tournament 3) on the same start cell (the seed draws the node ops) with a
budget equal to the number of distinct cells that AutoShrink evaluated (its ``evaluations``
less the cells a later step proposed again, which it does not train twice: a baseline never
proposes a cell twice; until 2026-12-08 the budget was ``evaluations``, 1-2% more), asking K
at a time. Printed:
per strategy the mean ± std over seeds of the best score, and the mean accuracy, MACs and edges
of the returned cell, candidates and wall time; and per seed the best scores side by side.
Run folders go under ``--out`` (each can be opened with ``autoshrink report``, and several
compared with ``autoshrink report RUN... --out DIR``), with ``comparison.png``: the best score
so far against candidates evaluated, mean over the seeds, one line per strategy.

    python benchmarks/bench_cell_baselines.py                       # demo preset, seeds 0 1 2
    python benchmarks/bench_cell_baselines.py --seeds 0 1 2 3 4 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autoshrink.config import BUILT_IN_STRATEGIES
from autoshrink.executors.factory import build_executor
from autoshrink.presets import preset
from autoshrink.report.reading import read_run
from autoshrink.search import run_search
from machine import print_machine, run_main


def one_run(name: str, seed: int, budget: int | None, args: argparse.Namespace, out: Path) -> dict:
    config = preset(args.preset, seed=seed, strategy=name, budget=budget)
    t0 = time.perf_counter()
    folder = out / f"{name}-seed{seed}"
    result = run_search(
        folder, config, executor=build_executor(args.executor, args.workers), progress=False
    )
    best = result.best
    return {
        "strategy": name,
        "seed": seed,
        "score": best.score,
        "accuracy": best.metrics.get("accuracy"),
        "macs": best.metrics.get("macs"),
        "edges": result.cell.num_edges,
        "candidates": result.evaluations,
        "cells": len(read_run(folder).candidates),  # distinct: without the re-proposed ones
        "seconds": round(time.perf_counter() - t0, 1),
    }


def plot_comparison(rows: list[dict], out: Path) -> Path:
    """Best score so far against candidates, mean over seeds; a seed whose budget is used up
    keeps its final best (budgets follow AutoShrink's count, so they differ between seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for name in BUILT_IN_STRATEGIES:
        runs = [r for r in rows if r["strategy"] == name]
        curves = [read_run(out / f"{name}-seed{r['seed']}").best_so_far() for r in runs]
        n = max(len(c) for c in curves)
        curves = [c + [c[-1]] * (n - len(c)) for c in curves]
        mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
        ax.plot(range(1, n + 1), mean, label=f"{name} ({len(curves)} seeds)")
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("best score so far (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    path = out / "comparison.png"
    fig.savefig(path, dpi=120)
    return path


def summary(rows: list[dict]) -> list[dict[str, Any]]:
    out = []
    for name in BUILT_IN_STRATEGIES:
        rs = [r for r in rows if r["strategy"] == name]
        scores = [r["score"] for r in rs]
        out.append(
            {
                "strategy": name,
                "runs": len(rs),
                "score_mean": statistics.mean(scores),
                "score_std": statistics.pstdev(scores),
                "accuracy_mean": statistics.mean(r["accuracy"] for r in rs),
                "macs_mean": statistics.mean(r["macs"] for r in rs),
                "edges_mean": statistics.mean(r["edges"] for r in rs),
                "candidates_mean": statistics.mean(r["candidates"] for r in rs),
                "seconds_mean": statistics.mean(r["seconds"] for r in rs),
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="demo", help="search preset (default demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--executor", default=None, help="default: the CPU default (pool)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    info = print_machine(sys.stderr if args.json else None)
    out = args.out or Path(tempfile.mkdtemp(prefix="cell_baselines_"))
    rows = []
    for seed in args.seeds:
        shrink = one_run("autoshrink", seed, None, args, out)
        rows.append(shrink)
        for name in BUILT_IN_STRATEGIES[1:]:
            rows.append(one_run(name, seed, shrink["cells"], args, out))
        if not args.json:
            scores = "  ".join(f"{r['strategy']} {r['score']:.4f}" for r in rows[-3:])
            print(f"seed {seed} ({shrink['cells']} distinct cells each): {scores}", flush=True)
    table = summary(rows)
    picture = plot_comparison(rows, out)
    if args.json:
        print(json.dumps({"machine": info, "preset": args.preset, "seeds": args.seeds,
                          "summary": table, "runs": rows, "run_folders": str(out)}))  # fmt: skip
        return
    print(f"\npreset {args.preset}, seeds {args.seeds}; equal budgets; run folders in {out}")
    print(f"best score so far against candidates: {picture}")
    print(f"{'strategy':12s} {'best score':>17s} {'accuracy':>9s} {'MACs':>9s} {'edges':>6s} "
          f"{'cands':>6s} {'wall s':>7s}")  # fmt: skip
    for r in table:
        print(
            f"{r['strategy']:12s} {r['score_mean']:8.4f} ± {r['score_std']:6.4f} "
            f"{r['accuracy_mean']:9.4f} {r['macs_mean']:9.0f} {r['edges_mean']:6.1f} "
            f"{r['candidates_mean']:6.1f} {r['seconds_mean']:7.1f}"
        )


if __name__ == "__main__":
    run_main(main)
