"""``autoshrink singlepath --preset demo --out DIR``: Single-Path NAS against measured latency.

Measures (or reuses) the per-layer latency table of MobileNetV2's inverted-residual space on
this device at the deployment size, trains the superkernel supernet once with cross-entropy
plus a latency term, and writes the found network (``architecture.json``), its weights, the
table, ``decisions.jsonl`` (every layer's choice per epoch), checkpoints and ``result.json``
(predicted and measured latency, validation accuracy, wall time, images trained). See
:mod:`autoshrink.singlepath.search`.
"""

from __future__ import annotations

import argparse
import json

from autoshrink.cli import (
    SUBCOMMANDS,
    add_latency_table,
    count_number,
    data_path,
    folder_path,
    images_number,
    millions,
    seed_number,
)
from autoshrink.data.images import DATASETS, check_root
from autoshrink.devices import device_argument
from autoshrink.hardware.latency_settings import CLOCKS
from autoshrink.singlepath.search import run_singlepath
from autoshrink.singlepath.settings import singlepath_preset
from autoshrink.stop_signals import stop_says_resume
from autoshrink.training.checkpoint import newest_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``singlepath`` parser to ``sub``."""
    p = sub.add_parser(
        "singlepath",
        help=SUBCOMMANDS["singlepath"],
        description="Search MobileNetV2's space (per layer: depthwise 3x3/5x5, expansion 3/6, "
        "or skip) with one superkernel per layer, in one training run, against a latency "
        "table measured on this device at the deployment size.",
    )
    p.add_argument("--preset", choices=("demo", "paper"), default="demo")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: digits")
    p.add_argument("--data-dir", "--data", dest="data_dir", type=data_path, default=None)
    p.add_argument(
        "--latency-target",
        type=float,
        default=None,
        metavar="MS",
        help="penalise only latency above MS (λ·max(0, log(latency/MS))); "
        "without it the loss is CE + λ·log(latency)",
    )
    p.add_argument(
        "--lambda", dest="lam", type=float, default=None, metavar="LAMBDA", help="λ (default 0.5)"
    )
    p.add_argument("--backend", default="torch", help="torch or onnxruntime (default torch)")
    p.add_argument(
        "--device",
        type=device_argument,
        default="cpu",
        help="cpu, cuda, cuda:N or auto (default cpu)",
    )
    p.add_argument(
        "--batch", type=count_number, default=1, help="deployment batch size (default 1)"
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--clock", choices=CLOCKS, default="wall", help="see autoshrink latency")
    add_latency_table(p, "latency table to reuse and complete (default OUT/latency_table.json)")
    p.add_argument("--width", type=float, default=None, help="width multiplier (default 1.0)")
    p.add_argument(
        "--search-size", type=count_number, default=None, help="training image size (32)"
    )
    p.add_argument(
        "--deploy-size",
        type=count_number,
        default=None,
        help="deployment image size (224)",
    )
    p.add_argument(
        "--epochs", type=count_number, default=None, help="search epochs (preset: demo 6, paper 8)"
    )
    p.add_argument(
        "--warmup-epochs",
        type=count_number,
        default=None,
        help="epochs of weights only, thresholds frozen (preset: 2)",
    )
    p.add_argument("--batch-size", type=count_number, default=None, help="training batch")
    p.add_argument(
        "--train-images",
        type=images_number,
        default=None,
        help="seeded training images (preset: demo 1000; paper all but the validation ones)",
    )
    p.add_argument(
        "--val-images",
        type=images_number,
        default=None,
        help="seeded validation images, held out of the training split (preset: demo 400; "
        "paper a tenth)",
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips of the training images (preset: demo off, for its "
        "digits; paper on)",
    )
    p.add_argument("--threshold-lr", type=float, default=None)
    p.add_argument("--seed", type=seed_number, default=None)
    p.add_argument(
        "--train-threads",
        type=int,
        default=None,
        help="torch threads for the supernet's training (default: torch's; 1 on a busy box)",
    )
    p.add_argument("--out", type=folder_path, required=True, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--json", action="store_true", help="print result.json")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a Single-Path NAS search and print its network; 0."""
    given = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "latency_target_ms": args.latency_target,
        "lam": args.lam,
        "width": args.width,
        "search_size": args.search_size,
        "deploy_size": args.deploy_size,
        "epochs": args.epochs,
        "warmup_epochs": args.warmup_epochs,
        "batch_size": args.batch_size,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "flip": args.flip,
        "threshold_lr": args.threshold_lr,
        "seed": args.seed,
        "train_threads": args.train_threads,
        "latency": {
            "backend": args.backend,
            "device": args.device,
            "batch": args.batch,
            "threads": args.threads,
            "clock": args.clock,
        },
    }
    settings = singlepath_preset(  # the flags typed; the preset's settings for the others
        args.preset, **{k: v for k, v in given.items() if v is not None}
    )
    check_root(settings.dataset, settings.data_dir)  # before --out is made
    with stop_says_resume("the search", args.out, newest_checkpoint(args.out)):
        result = run_singlepath(args.out, settings, resume=args.resume, table=args.table)
    r = result.summary
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"found {','.join(r['layers'])}")
    print(
        f"latency at {r['deploy_size']} px ({settings.latency.backend}, {settings.latency.device},"
        f" batch {settings.latency.batch}): predicted {r['predicted_ms']:.2f} ms, measured "
        f"{r['measured_ms']:.2f} ms ({100 * r['relative_error']:+.1f}%)"
        + (f"; target {r['latency_target_ms']:g} ms" if r["latency_target_ms"] else "")
        + (f" (missed by {100 * over:.0f}%)" if (over := r.get("over_target") or 0) > 0 else "")
    )
    print(
        f"validation accuracy {r['val_accuracy']:.4f} ({millions(r['params'])} params, "
        f"{millions(r['macs'])} MACs); search {r['search_seconds']:.0f} s, "
        f"{r['images_trained']} images trained; files in {args.out}"
    )
    return 0
