"""``autoshrink train CELL.json``: train a found cell on a whole data set, report test accuracy."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from autoshrink.cost import count
from autoshrink.data.images import DATASETS, load_images
from autoshrink.graph import Cell
from autoshrink.macros import cifar_proxy
from autoshrink.nn.cnn import build_network
from autoshrink.training.final import SmallImageRecipe, train_final

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a cell's network on a data set and report test accuracy",
        description="Train the proxy-style network (stem, three stages, classifier) built from "
        "a cell on the whole training set with SGD + cosine and crop/flip augmentation; "
        "writes weights (safetensors), the cell and metrics.json into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("cell", type=Path, help="a cell JSON file")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="learning rate per 128 images")
    p.add_argument("--width", type=float, default=1.0, help="network width multiplier")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (e.g. digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/train"))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cell = Cell.load(args.cell)
    data = load_images(args.dataset, args.data_dir)
    spec = cifar_proxy(
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        width=args.width,
    )
    torch.manual_seed(args.seed)
    model = build_network(cell, spec).to(args.device)
    recipe = SmallImageRecipe(
        epochs=args.epochs, batch_size=args.batch_size, lr_per_128=args.lr, flip=not args.no_flip
    )
    result = train_final(
        model,
        data,
        recipe,
        seed=args.seed,
        device=args.device,
        on_epoch=lambda r: log.info(
            "epoch %d: train loss %.4f, test accuracy %.4f",
            r["epoch"],
            r["train_loss"],
            r["test_accuracy"],
        ),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(args.out / "weights.safetensors"),
    )
    cell.save(args.out / "cell.json")
    c = count(cell, spec)
    metrics = {
        "dataset": args.dataset,
        "test_accuracy": result.test_accuracy,
        "params": c.params,
        "macs": c.macs,
        "epochs": args.epochs,
        "history": result.history,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"test accuracy {result.test_accuracy:.4f} on {args.dataset} "
        f"({c.params} params, {c.macs} MACs); weights in {args.out / 'weights.safetensors'}"
    )
    return 0
