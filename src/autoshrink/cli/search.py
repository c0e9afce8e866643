"""``autoshrink search``: run or resume an AutoShrink search and print the best cell."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoshrink.config import PRESETS, preset
from autoshrink.data.images import DATASETS
from autoshrink.errors import ConfigError
from autoshrink.executors.factory import EXECUTORS, build_executor
from autoshrink.objectives import COSTS, Score
from autoshrink.picture import to_text
from autoshrink.search import run_search

# Settings that come from the preset and may be overridden; with --resume they come from the
# run's config.json instead.
OVERRIDES = {
    "dataset": "dataset",
    "data_dir": "data_dir",
    "nodes": "nodes",
    "k": "k",
    "keep_fraction": "keep_fraction",
    "patience": "patience",
    "per_class": "per_class",
    "val_size": "val_size",
    "width": "width",
    "activation": "activation",
    "seed": "seed",
    "device": "device",
    "epochs": "training_epochs",
    "batch_size": "training_batch_size",
    "lr": "training_lr",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="run (or resume) an AutoShrink search",
        description="Shrink a complete cell one edge at a time, keeping the best of K "
        "single-edge removals under score = accuracy - lambda * (log10(cost) - 6). "
        "Writes config.json, journal.jsonl, best_cell.json (+ picture) and result.json "
        "into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        help="demo: digits, minutes on a CPU; paper: the paper's CIFAR-10 protocol",
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<preset>)")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the search in RUN_DIR from its journal",
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None)
    g.add_argument("--data-dir", default=None, help="folder of the data set (not for digits)")
    g.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-10 into --data-dir if it is not there (needs internet)",
    )
    g.add_argument("--per-class", type=int, default=None, help="proxy training images per class")
    g.add_argument("--val-size", type=int, default=None, help="proxy validation images")
    g = p.add_argument_group("search")
    g.add_argument("--nodes", type=int, default=None, help="nodes per cell (N)")
    g.add_argument("-k", "--k", type=int, default=None, help="candidates per step (K)")
    g.add_argument(
        "--keep-fraction", type=float, default=None, help="stop at round(E0 * keep_fraction) edges"
    )
    g.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many steps without a better score",
    )
    g.add_argument(
        "--lambda",
        dest="weight",
        type=float,
        default=None,
        help="weight of the cost term (default 0.1)",
    )
    g.add_argument("--cost", choices=COSTS, default=None, help="cost term (default macs)")
    g.add_argument(
        "--max-macs",
        type=float,
        default=None,
        help="hard constraint: reject (never train) candidates above this many MACs",
    )
    g.add_argument(
        "--max-params",
        type=float,
        default=None,
        help="hard constraint on parameters, as --max-macs",
    )
    g.add_argument("--activation", choices=("relu", "swish"), default=None)
    g.add_argument("--seed", type=int, default=None)
    g = p.add_argument_group("proxy training")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--width", type=float, default=None, help="proxy network width multiplier")
    g = p.add_argument_group("execution")
    g.add_argument("--device", default=None, help="cpu or cuda[:N]")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="default: pool on the CPU, inprocess on a GPU",
    )
    g.add_argument("--workers", type=int, default=None, help="pool workers (default: one per core)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    given = {dest: getattr(args, name) for name, dest in OVERRIDES.items()}
    given = {k: v for k, v in given.items() if v is not None}
    limits = {"macs": args.max_macs, "params": args.max_params}
    constraints = {k: v for k, v in limits.items() if v is not None}
    if constraints:
        given["constraints"] = constraints
    if args.resume is not None:
        if given or args.weight is not None or args.cost is not None:
            raise ConfigError(
                "--resume takes its settings from the run's config.json; "
                f"drop {sorted(given) + (['lambda'] if args.weight is not None else [])}"
            )
        run_dir, config = args.resume, None
    else:
        config = preset(args.preset, **given)
        if args.weight is not None or args.cost is not None:
            config = preset(
                args.preset,
                **given,
                score=Score.cnn(
                    weight=args.weight if args.weight is not None else config.score.weight,
                    cost=args.cost or config.score.cost,
                ),
            )
        if args.download:
            from autoshrink.data.images import load_images

            load_images(config.dataset, config.data_dir, download=True)
        run_dir = args.out or Path("runs") / args.preset
    executor = build_executor(args.executor, args.workers, device=args.device or "cpu")
    result = run_search(
        run_dir,
        config,
        resume=args.resume is not None,
        executor=executor,
        progress=not args.no_progress,
    )
    best = result.best
    print(to_text(result.cell), end="")
    acc = best.metrics.get("accuracy")
    start = result.start
    print(
        f"best score {best.score:.4f} (accuracy {acc:.4f}, {best.metrics.get('macs', 0):.0f} MACs, "
        f"{result.cell.num_edges} edges, step {best.proposal.step})"
    )
    if start is not None:
        print(
            f"complete cell score {start.score:.4f} (accuracy {start.metrics.get('accuracy'):.4f})"
        )
    print(
        f"{result.evaluations} candidates, {result.trained} trained now, "
        f"{result.seconds:.1f} s; results in {result.run_dir}"
    )
    return 0
