"""Plain AutoShrink against screened AutoShrink (zero-cost, progressive), paired by seed.

For each seed, searches on the same start cell and proxy task (the seed fixes both), on the
digits demo or, with ``--dataset fashion-mnist --data DIR``, on Fashion-MNIST:

- ``plain``: K removals of each step drawn uniformly (the method), K = ``--k``;
- ``zc-K``: the whole shrink space of each step ranked by ``--zc-proxy``, the K best trained;
- ``zc-K/2``: the same with half the candidates per step (``K // 2``) -- about half the images;
- ``prog``: progressive screening with the default schedule
  (:func:`autoshrink.screening.default_stages`: half the classes, a quarter of the epochs,
  a quarter of the candidates kept);
- ``prog-1/2``: the same stage keeping half of the candidates.

Both schedules were fixed before any of the reported seeds ran (``--modes`` picks modes).

Printed per mode: images trained and wall time as ratios to ``plain`` of the same seed (mean
over seeds), and the paired difference of the best cell's score (the full proxy protocol, as
every trained candidate gets it) to ``plain``: mean and 95% t-interval. With
``--faithful N`` also, for the first N seeds, how faithful the screen is at step 1: every
single-edge removal of the start cell is trained in full, and the Kendall tau between the
proxy's ranking and the trained scores is printed with whether the trained winner is among
the proxy's top K and top K/2. Candidates train with one thread, in-process; wall time is
each search's ``seconds_this_session``. ``--summarise`` reads finished run folders instead
of searching, ``--faithful-only`` runs only the faithfulness check.

``--faithful-steps S`` checks the progressive screen on the plain searches: at each of their
steps 1..S, whose K candidates were all trained in full, the K candidates also train the
screen's stage (easiest classes measured from the plain run's own step 0, as the screen does)
and the Kendall tau between stage and full scores is printed, with whether the full winner
is among the stage's survivors.

    python benchmarks/bench_screening.py --seeds 0 1 2 --faithful 1 --faithful-steps 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from scipy.stats import kendalltau, t

from autoshrink.config import SearchConfig
from autoshrink.executors.factory import build_executor
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.screening import ClassDifficulty, ScreeningStage, default_stages, stage_evaluator
from autoshrink.search import run_search
from autoshrink.search_loop import candidate_seed, make_strategy
from machine import print_machine, run_main

MODES = ("plain", "zc-K", "zc-K/2", "prog", "prog-1/2")


def stages_for(args: argparse.Namespace, mode: str) -> tuple[ScreeningStage, ...]:
    (stage,) = default_stages(args.epochs)
    return (replace(stage, keep=0.5),) if mode == "prog-1/2" else (stage,)


def config_for(args: argparse.Namespace, seed: int, mode: str) -> SearchConfig:
    screening = {"plain": "none", "prog": "progressive", "prog-1/2": "progressive"}
    return preset(
        "demo",
        seed=seed,
        dataset=args.dataset,
        data_dir=args.data,
        nodes=args.nodes,
        k=args.k // 2 if mode == "zc-K/2" else args.k,
        per_class=args.per_class,
        val_size=args.val_size,
        training_epochs=args.epochs,
        threads=1,
        screening=screening.get(mode, "zero-cost"),
        screening_stages=stages_for(args, mode) if mode.startswith("prog") else (),
        zc_proxy=args.zc_proxy,
    )


def one_run(args: argparse.Namespace, seed: int, mode: str, out: Path) -> dict:
    run_dir = out / f"{mode.replace('/', '_')}-s{seed}"
    if not args.summarise and not (run_dir / "result.json").is_file():  # else done before
        config = config_for(args, seed, mode)
        resume = (run_dir / "journal.jsonl").is_file()
        run_search(
            run_dir,
            None if resume else config,
            resume=resume,
            executor=build_executor("inprocess"),
            progress=False,
        )
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "mode": mode,
        "seed": seed,
        "score": result["best"]["score"],
        "images": result["images_trained"],
        "seconds": result["seconds_this_session"],
        "evaluations": result["evaluations"],
    }


def faithfulness(args: argparse.Namespace, seed: int) -> list[dict]:
    """Per proxy (``--faithful-proxies``), the Kendall tau of its ranking against the trained
    score over step 1's whole shrink space, and whether the trained winner is in its top K
    and top K/2 (the trainings are shared by all proxies)."""
    from autoshrink.evaluators.factory import build_evaluator, build_ranker

    config = config_for(args, seed, "zc-K")
    strategy = make_strategy(config)
    cells = [cell for _, cell in strategy.shrink_space()]
    evaluator = build_evaluator(config)
    full = [config.score(evaluator.evaluate(c, candidate_seed(seed, c.key)).metrics) for c in cells]
    winner = max(range(len(cells)), key=lambda i: full[i])
    rows = []
    for name in args.faithful_proxies.split(","):
        ranker = build_ranker(replace(config, zc_proxy=name), lambda key: candidate_seed(seed, key))
        screen = ranker(cells)
        rank = sorted(range(len(cells)), key=lambda i: -screen[i])
        rows.append(
            {
                "seed": seed,
                "proxy": name,
                "space": len(cells),
                "kendall_tau": float(kendalltau(screen, full).statistic),
                "winner_in_top_k": winner in rank[: args.k],
                "winner_in_top_k2": winner in rank[: args.k // 2],
            }
        )
    return rows


def stage_faithfulness(args: argparse.Namespace, seed: int, out: Path) -> list[dict]:
    """On the plain search of ``seed``: at its steps 1..``--faithful-steps``, the Kendall tau
    between the progressive screen's stage scores and the full scores of the step's K
    candidates, and whether the full winner survives the stage (``prog`` and ``prog-1/2``)."""
    from autoshrink.evaluators.factory import build_evaluator

    config = config_for(args, seed, "prog")
    evaluator = build_evaluator(config)
    run_dir = out / f"plain-s{seed}"
    records = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    records = [r for r in records if r["type"] == "candidate"]
    difficulty = ClassDifficulty.from_records(
        [r for r in records if r["step"] == 0], evaluator.num_classes
    )
    (stage,) = config.stages()
    classes = difficulty.easiest(stage.class_count(evaluator.num_classes))
    screen = stage_evaluator(evaluator, classes, stage.epochs)
    rows = []
    for step in range(1, args.faithful_steps + 1):
        batch = [r for r in records if r["step"] == step and r["status"] == "ok"]
        if len(batch) < 2:
            break
        full = [r["score"] for r in batch]
        staged = []
        for r in batch:
            metrics = screen.evaluate(Cell.from_dict(r["cell"]), r["seed"]).metrics
            staged.append(config.score(metrics))
        order = sorted(range(len(batch)), key=lambda i: -staged[i])
        winner = max(range(len(batch)), key=lambda i: full[i])
        row = {"seed": seed, "step": step, "k": len(batch)}
        row["kendall_tau"] = float(kendalltau(staged, full).statistic)
        for mode in ("prog", "prog-1/2"):
            keep = stages_for(args, mode)[0].survivors(len(batch))
            row[f"winner_survives_{mode}"] = winner in order[:keep]
        rows.append(row)
    return rows


def interval(diffs: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (NaN half-width for one seed)."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, float("nan")
    return mean, t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5


def check_finished(parser: argparse.ArgumentParser, args: argparse.Namespace, modes: list[str]
                   ) -> None:  # fmt: skip
    """``--summarise`` reads finished runs only: each seed's and mode's folder in ``--out``
    must hold its result.json, else a usage error names the first that does not."""
    if args.out is None:
        parser.error("--summarise reads the run folders in --out: name it")
    for seed in [] if args.faithful_only else args.seeds:
        for mode in modes:
            run_dir = args.out / f"{mode.replace('/', '_')}-s{seed}"
            if not (run_dir / "result.json").is_file():
                parser.error(f"--summarise: {run_dir} holds no finished run (result.json)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dataset", default="digits", help="digits or fashion-mnist")
    parser.add_argument("--data", default=None, help="the data set's folder (fashion-mnist)")
    parser.add_argument("--faithful-steps", type=int, default=0, metavar="S")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("-k", "--k", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--zc-proxy", default="synflow")
    parser.add_argument("--faithful", type=int, default=0, metavar="N")
    parser.add_argument("--faithful-proxies", default="synflow", metavar="A,B")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--summarise", action="store_true", help="only read the finished run folders in --out"
    )
    parser.add_argument(
        "--faithful-only", action="store_true", help="only the --faithful check, no searches"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    info = print_machine(sys.stderr if args.json else None)
    modes = ["plain", *(m for m in args.modes if m != "plain")]
    if args.summarise:
        check_finished(parser, args, modes)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_screening_"))
    rows = [
        one_run(args, s, m, out)
        for i, s in enumerate([] if args.faithful_only else args.seeds)
        # no mode always runs first, carrying the process's first-call costs (~1 s)
        for m in modes[i % len(modes) :] + modes[: i % len(modes)]
    ]
    by = {(r["mode"], r["seed"]): r for r in rows}
    summary = {}
    for m in modes if rows else ():
        img = [by[m, s]["images"] / by["plain", s]["images"] for s in args.seeds]
        sec = [by[m, s]["seconds"] / by["plain", s]["seconds"] for s in args.seeds]
        d_mean, d_half = interval([by[m, s]["score"] - by["plain", s]["score"] for s in args.seeds])
        summary[m] = {
            "images_ratio": statistics.fmean(img),
            "wall_ratio": statistics.fmean(sec),
            "score_diff_mean": d_mean,
            "score_diff_ci95": d_half,
        }
    faithful = [row for s in args.seeds[: args.faithful] for row in faithfulness(args, s)]
    staged = []
    if args.faithful_steps:
        staged = [row for s in args.seeds for row in stage_faithfulness(args, s, out)]
    report = {
        "machine": info,
        "settings": vars(args) | {"out": str(out)},
        "runs": rows,
        "summary": summary,
        "faithfulness": faithful,
        "stage_faithfulness": staged,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.dataset}, nodes {args.nodes}, K {args.k}, {args.epochs} epochs, "
        f"{args.per_class}/class, proxy {args.zc_proxy}, seeds {args.seeds}"
    )
    print(f"{'mode':<8} {'images/plain':>12} {'wall/plain':>10} {'d score (95% CI)':>24}")
    for m, row in summary.items():
        print(
            f"{m:<8} {row['images_ratio']:>12.3f} {row['wall_ratio']:>10.3f} "
            f"{row['score_diff_mean']:>+12.4f} ± {row['score_diff_ci95']:.4f}"
        )
    for r in rows:
        print(
            f"  seed {r['seed']} {r['mode']:<7} score {r['score']:.4f} images {r['images']} "
            f"{r['seconds']:.1f} s, {r['evaluations']} candidates"
        )
    if staged:
        taus = [r["kendall_tau"] for r in staged if r["kendall_tau"] == r["kendall_tau"]]
        print(
            f"progressive stage vs full, {len(staged)} steps: Kendall tau mean "
            f"{statistics.fmean(taus):+.3f} (median {statistics.median(taus):+.3f}); full winner "
            f"survives prog {sum(r['winner_survives_prog'] for r in staged)}/{len(staged)}, "
            f"prog-1/2 {sum(r['winner_survives_prog-1/2'] for r in staged)}/{len(staged)}"
        )
    for f in faithful:
        print(
            f"step 1, seed {f['seed']}, {f['proxy']}: {f['space']} removals, "
            f"Kendall tau {f['kendall_tau']:+.3f}, trained winner in proxy "
            f"top-K {f['winner_in_top_k']}, top-K/2 {f['winner_in_top_k2']}"
        )


if __name__ == "__main__":
    run_main(main)
