"""One-shot against standalone evaluation on the digits demo (issue 17).

Per seed, three searches of the same demo configuration, one after another in this process
(in-process executor, one torch thread each, so their wall times are comparable; the order
rotates with the seed):

- ``standalone``: every candidate trained from scratch (the default);
- ``oneshot-1`` and ``oneshot-0``: ``--evaluator oneshot`` with 1 and 0 fine-tuning epochs.

Reported per seed: images trained and wall time, as ratios standalone / one-shot; the ranking
agreement; the best cells retrained.

Ranking agreement (Kendall tau-b, winner agreement) is measured on the standalone search's own
trajectory, which ranked its K candidates by training each from scratch: at each of its steps,
the current cell is trained again from its seed (the same weights the search trained), and the
step's K candidates are scored one-shot from those weights (0 and 1 epochs). This costs one
training per step instead of K per step; it measures the one-shot ranking from standalone-
trained parents, not from the fine-tuned parents a one-shot search carries (see the README).

Retrained best cells: the best cell of each search is trained again from scratch with the full
protocol and a seed none of the searches used (both the standalone search's best and the
one-shot searches' bests, so that none has the winner's-curse advantage of a selected score);
the paired difference one-shot - standalone over seeds is reported with a 95% t interval, and
so is the issue's literal comparison: the retrained one-shot best against the standalone
search's recorded (selected, hence optimistic) best score.

    python benchmarks/bench_oneshot.py --seeds 0 1 --out /tmp/bos   # one JSON per seed there
    python benchmarks/bench_oneshot.py --summarize /tmp/bos          # the table over all seeds

``--fashion DIR`` runs the same on Fashion-MNIST (the idx files in DIR) at a CPU-sized proxy:
6 nodes, K = 4, 3 epochs, 50 images per class, 200 validation images.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

from autoshrink.config import SearchConfig
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.factory import build_evaluator
from autoshrink.evaluators.oneshot import CURRENT, OneShotEvaluator, save_cell_weights
from autoshrink.executors.base import InProcessExecutor
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.search import run_search
from autoshrink.search_loop import candidate_seed
from machine import print_machine, run_main

MODES = {"standalone": ("standalone", 1), "oneshot-1": ("oneshot", 1), "oneshot-0": ("oneshot", 0)}
RETRAIN_SALT = 1_000_003  # retraining seeds: candidate_seed(seed + salt, key), unused by searches
#: ``--quick``: a smoke-test scale (minutes become seconds); figures are not comparable.
QUICK = dict(nodes=5, k=3, per_class=10, val_size=100, training_epochs=2)
#: ``--fashion DIR``: Fashion-MNIST at a CPU-sized proxy (the data folder is added).
FASHION = dict(dataset="fashion-mnist", nodes=6, k=4, per_class=50, val_size=200, training_epochs=3)


def demo(seed: int, scale: dict, **kw: object) -> SearchConfig:
    return preset("demo", seed=seed, threads=1, **scale, **kw)


def kendall_tau_b(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two paired score lists (ties counted as in scipy's default)."""
    conc = disc = ties_a = ties_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return (conc - disc) / denom if denom else float("nan")


def journal(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines()]
    return [r for r in rows if r["type"] == "candidate"]


def search(out: Path, seed: int, mode: str, scale: dict) -> dict:
    evaluator, epochs = MODES[mode]
    config = demo(seed, scale, evaluator=evaluator, oneshot_epochs=epochs)
    t0 = time.perf_counter()
    result = run_search(out / mode, config, executor=InProcessExecutor(), progress=False)
    return {
        "seconds": time.perf_counter() - t0,
        "images_trained": result.images_trained,
        "candidates": result.evaluations,
        "best_key": result.cell.key,
        "best_cell": result.cell.to_dict(),
        "best_score": result.best.score,
        "best_edges": result.cell.num_edges,
    }


def rankings(run: Path, config: SearchConfig) -> list[dict]:
    """Per step of the standalone search in ``run``: standalone and one-shot (0, 1 epoch)
    scores of its K candidates, all one-shot ones from the step's parent trained again."""
    rows = journal(run)
    proxy = build_evaluator(config)
    assert isinstance(proxy, CNNProxyEvaluator)
    steps = sorted({r["step"] for r in rows})
    by_step = {s: [r for r in rows if r["step"] == s] for s in steps}
    out = []
    parent = Cell.from_dict(by_step[0][0]["cell"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for s in steps[1:]:
            seed = candidate_seed(config.seed, parent.key)
            evaluation, model = proxy.fit(parent, seed)
            assert model is not None
            save_cell_weights(folder / CURRENT, parent, model)
            cands = [r for r in by_step[s] if r["status"] == "ok"]
            row: dict = {"step": s, "k": len(cands), "standalone": [r["score"] for r in cands]}
            for epochs in (0, 1):
                one = OneShotEvaluator(proxy, epochs, folder)
                row[f"oneshot-{epochs}"] = [
                    config.score(one.evaluate(Cell.from_dict(r["cell"]), r["seed"]).metrics)
                    for r in cands
                ]
            out.append(row)
            winner = max(by_step[s], key=lambda r: (r["score"], -r["edges"]))
            parent = Cell.from_dict(winner["cell"])
    return out


def retrain(cell: dict, seed: int, config: SearchConfig) -> float:
    proxy = build_evaluator(config)
    c = Cell.from_dict(cell)
    evaluation = proxy.evaluate(c, candidate_seed(seed + RETRAIN_SALT, c.key))
    return config.score(evaluation.metrics) if evaluation.status == "ok" else float("-inf")


def run_seed(seed: int, out: Path, scale: dict) -> dict:
    torch.set_num_threads(1)
    order = list(MODES)[seed % 3 :] + list(MODES)[: seed % 3]  # no mode always runs first
    runs = {mode: search(out / f"seed{seed}", seed, mode, scale) for mode in order}
    runs = {mode: runs[mode] for mode in MODES}
    config = demo(seed, scale)
    t0 = time.perf_counter()
    ranks = rankings(out / f"seed{seed}" / "standalone", config)
    for r in runs.values():
        r["retrained_score"] = retrain(r["best_cell"], seed, config)
    return {
        "seed": seed,
        "runs": runs,
        "rankings": ranks,
        "analysis_seconds": time.perf_counter() - t0,
    }


def ci95(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval (nan for fewer than 2 values)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))


def summarize(folder: Path) -> dict:
    seeds = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*.json"))]
    lines = ["| seed | mode | candidates | images trained | wall s | best score (edges) | "
             "retrained |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    summary: dict = {"seeds": [s["seed"] for s in seeds], "modes": {}}
    for s in seeds:
        for mode, r in s["runs"].items():
            lines.append(
                f"| {s['seed']} | {mode} | {r['candidates']} | {r['images_trained']:,} | "
                f"{r['seconds']:.0f} | {r['best_score']:.4f} ({r['best_edges']}) | "
                f"{r['retrained_score']:.4f} |"
            )
    for mode in ("oneshot-1", "oneshot-0"):
        img = [s["runs"]["standalone"]["images_trained"] / s["runs"][mode]["images_trained"]
               for s in seeds]  # fmt: skip
        wall = [s["runs"]["standalone"]["seconds"] / s["runs"][mode]["seconds"] for s in seeds]
        per = [
            (s["runs"]["standalone"]["images_trained"] / s["runs"]["standalone"]["candidates"])
            / (s["runs"][mode]["images_trained"] / s["runs"][mode]["candidates"])
            for s in seeds
        ]
        diff = [s["runs"][mode]["retrained_score"] - s["runs"]["standalone"]["retrained_score"]
                for s in seeds]  # fmt: skip
        recorded = [s["runs"][mode]["retrained_score"] - s["runs"]["standalone"]["best_score"]
                    for s in seeds]  # fmt: skip
        taus, agree, steps = [], 0, 0
        for s in seeds:
            for row in s["rankings"]:
                if row["k"] < 2:
                    continue
                taus.append(kendall_tau_b(row["standalone"], row[mode]))
                steps += 1
                agree += max(range(row["k"]), key=lambda i: row["standalone"][i]) == max(
                    range(row["k"]), key=lambda i: row[mode][i]
                )
        taus = [t for t in taus if not math.isnan(t)]
        m, h = ci95(diff)
        m2, h2 = ci95(recorded)
        summary["modes"][mode] = {
            "images_ratio_mean": statistics.fmean(img),
            "images_ratio_min": min(img),
            "images_per_candidate_ratio_mean": statistics.fmean(per),
            "wall_ratio_mean": statistics.fmean(wall),
            "wall_ratio_min": min(wall),
            "tau_mean": statistics.fmean(taus) if taus else float("nan"),
            "tau_median": statistics.median(taus) if taus else float("nan"),
            "steps": steps,
            "winner_agreement": agree / steps if steps else float("nan"),
            "retrained_diff_mean": m,
            "retrained_diff_ci95": h,
            "vs_recorded_best_mean": m2,
            "vs_recorded_best_ci95": h2,
        }
        lines.append("")
        lines.append(
            f"{mode}: images trained standalone/one-shot {statistics.fmean(img):.1f}x "
            f"(min {min(img):.1f}x), per candidate {statistics.fmean(per):.1f}x; "
            f"wall {statistics.fmean(wall):.1f}x (min {min(wall):.1f}x); "
            f"Kendall tau over {steps} steps mean {summary['modes'][mode]['tau_mean']:.3f} "
            f"(median {summary['modes'][mode]['tau_median']:.3f}); same winner in "
            f"{agree}/{steps} steps; retrained best one-shot - standalone "
            f"{m:+.4f} +- {h:.4f} (95% t, {len(diff)} seeds); retrained one-shot best - "
            f"standalone search's recorded best {m2:+.4f} +- {h2:.4f}"
        )
    summary["table"] = "\n".join(lines)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_oneshot"))
    ap.add_argument("--summarize", type=Path, default=None, help="print the table of a folder")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke-test scale (not comparable)")
    ap.add_argument("--fashion", type=Path, default=None, metavar="DIR", help="Fashion-MNIST")
    args = ap.parse_args()
    info = print_machine(sys.stderr if args.json else None)
    scale = dict(QUICK) if args.quick else {}
    if args.fashion is not None:
        scale |= FASHION | {"data_dir": str(args.fashion)}
    if args.summarize is not None:
        if not any(args.summarize.glob("seed*.json")):
            ap.error(f"--summarize {args.summarize}: no seed*.json results there")
        summary = summarize(args.summarize)
        print(json.dumps(summary, indent=1) if args.json else summary["table"])
        return
    taken = [str(args.out / f"seed{s}") for s in args.seeds if (args.out / f"seed{s}").exists()]
    if taken:
        ap.error(f"already run: {', '.join(taken)}; choose another --out or other --seeds")
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        result = {"machine": info, **run_seed(seed, args.out, scale)}
        (args.out / f"seed{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
        runs = result["runs"]
        print(
            f"seed {seed}: "
            + "; ".join(
                f"{m} {r['images_trained']:,} img {r['seconds']:.0f} s best {r['best_score']:.4f}"
                f" retrained {r['retrained_score']:.4f}"
                for m, r in runs.items()
            ),
            flush=True,
        )


if __name__ == "__main__":
    run_main(main)
