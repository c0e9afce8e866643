"""One-shot fine-tuning of a step's K candidates: one by one against stacked, in the same run.

The complete cell (the step's parent) is trained first (not timed). Then its K first
single-edge removals inherit its weights and are fine-tuned for ``--epochs`` epochs: one after
another by :class:`~autoshrink.evaluators.oneshot.OneShotEvaluator` (what the in-process and
pool executors run), then together by
:class:`~autoshrink.evaluators.batched_oneshot.BatchedOneShotEvaluator` (what the batched
executor runs). Each is run once untimed (CUDA set-up), then timed. Prints candidate-images/s
for both and ``oneshot speedup: X``. With ``--check``, the same in float64 on the device, and
the largest difference of the evaluations and of the saved weights (PASS under 1e-6).

    python benchmarks/bench_oneshot_engine.py --device cuda --check --data data/fashion-mnist
    python benchmarks/bench_oneshot_engine.py --device cpu --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoshrink.data.images import load_images, proxy_split
from autoshrink.devices import local_device_argument
from autoshrink.evaluators.batched_oneshot import BatchedOneShotEvaluator
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.oneshot import (
    CANDIDATES,
    CURRENT,
    OneShotEvaluator,
    read_cell_weights,
    save_cell_weights,
)
from autoshrink.graph import Cell
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.proxy_settings import ProxyTraining
from machine import fill_sizes, print_machine, run_main


def setting(args: argparse.Namespace, dtype: torch.dtype) -> tuple[CNNProxyEvaluator, Cell]:
    """The proxy evaluator (on ``args.device``, images in ``dtype``) and the parent cell."""
    data = load_images("fashion-mnist" if args.data else "digits", args.data)
    split = proxy_split(data, per_class=args.per_class, val_size=args.val_size, seed=0)
    as_np = np.float64 if dtype == torch.float64 else np.float32
    split = replace(split, train_x=split.train_x.astype(as_np), val_x=split.val_x.astype(as_np))
    macro = cifar_proxy(
        in_channels=data.in_channels, image_size=data.image_size, num_classes=data.num_classes
    )
    training = ProxyTraining(epochs=args.parent_epochs, batch_size=args.batch_size)
    proxy = CNNProxyEvaluator(split, macro, training, device=args.device)
    return proxy, start_cell("cnn", args.nodes, random.Random(args.seed))


def fine_tune(
    proxy: CNNProxyEvaluator, parent: Cell, model: torch.nn.Module, args: argparse.Namespace
) -> dict[str, Any]:
    """Both ways, each once untimed and once timed; their evaluations and saved weights."""
    cells = [parent.remove_edge(e) for e in parent.edges[: args.k]]
    seeds = [1000 + i for i in range(len(cells))]
    out: dict[str, Any] = {"k": len(cells)}
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("one_by_one", "stacked"):
            for run in ("warm-up", "timed"):
                folder = Path(tmp) / way / run
                (folder / CANDIDATES).mkdir(parents=True)
                save_cell_weights(folder / CURRENT, parent, model)
                one = OneShotEvaluator(proxy, args.epochs, folder)
                sync(args.device)
                t0 = time.perf_counter()
                if way == "stacked":
                    evals = BatchedOneShotEvaluator(one).evaluate_many(cells, seeds)
                else:
                    evals = [one.evaluate(c, s) for c, s in zip(cells, seeds, strict=True)]
                sync(args.device)
                seconds = time.perf_counter() - t0
            images = sum(e.detail["images_trained"] for e in evals)
            out[way] = {
                "seconds": seconds,
                "images_s": images / seconds,
                "accuracy": [e.metrics["accuracy"] for e in evals],
                "weights": [
                    read_cell_weights(folder / CANDIDATES / f"{c.key}.safetensors")[1]
                    for c in cells
                ],
            }
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def largest_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    diffs = [abs(x - y) for x, y in zip(a["accuracy"], b["accuracy"], strict=True)]
    for wa, wb in zip(a["weights"], b["weights"], strict=True):
        diffs += [float((wa[n].double() - wb[n].double()).abs().max()) for n in wa]
    return max(diffs)


#: The sizes of a run, and of a ``--quick`` one: what the flags not given take.
SIZES = {"k": 10, "nodes": 8, "per_class": 500, "val_size": 1000, "parent_epochs": 2,
         "batch_size": 128}  # fmt: skip
QUICK = {"k": 3, "nodes": 5, "per_class": 10, "val_size": 50, "parent_epochs": 1,
         "batch_size": 32}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's settings: the sizes given, else ``--quick``'s or the defaults (a
    ``--quick`` took its sizes over those given, without a word)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", type=local_device_argument)
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default: digits)")
    p.add_argument("-k", "--k", type=int, default=None, help="(default 10; quick 3)")
    p.add_argument("--nodes", type=int, default=None, help="(default 8; quick 5)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs")
    p.add_argument("--parent-epochs", type=int, default=None, help="(default 2; quick 1)")
    p.add_argument("--per-class", type=int, default=None, help="(default 500; quick 10)")
    p.add_argument("--val-size", type=int, default=None, help="(default 1000; quick 50)")
    p.add_argument("--batch-size", type=int, default=None, help="(default 128; quick 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="also compare in float64")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    p.add_argument("--json", action="store_true")
    return fill_sizes(p.parse_args(argv), QUICK, SIZES)


def main() -> None:
    args = parse_args()
    info = print_machine(sys.stderr if args.json else None)
    torch.manual_seed(args.seed)
    proxy, parent = setting(args, torch.float32)
    _, model = proxy.fit(parent, args.seed)
    assert model is not None, "the parent did not train"
    timed = fine_tune(proxy, parent, model.cpu(), args)
    one, stacked = timed["one_by_one"], timed["stacked"]
    report: dict[str, Any] = {
        "machine": info,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "k": timed["k"],
        "data": "fashion-mnist" if args.data else "digits",
        "epochs": args.epochs,
        "one_by_one_images_s": one["images_s"],
        "stacked_images_s": stacked["images_s"],
        "speedup": one["seconds"] / stacked["seconds"],
        "float32_largest_difference": largest_difference(one, stacked),
    }
    if args.check:
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            proxy64, _ = setting(args, torch.float64)
            _, model64 = proxy64.fit(parent, args.seed)
            assert model64 is not None
            exact = fine_tune(proxy64, parent, model64.cpu(), args)
        finally:
            torch.set_default_dtype(before)
        worst = largest_difference(exact["one_by_one"], exact["stacked"])
        report["float64_largest_difference"] = worst
        report["check"] = worst < 1e-6
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(
        f"{report['device']}: one-shot fine-tuning of K = {report['k']} ({report['data']}, "
        f"{args.epochs} epoch): one by one {report['one_by_one_images_s']:,.0f}, stacked "
        f"{report['stacked_images_s']:,.0f} candidate-images/s, oneshot speedup: "
        f"{report['speedup']:.2f}"
    )
    if args.check:
        verdict = "PASS" if report["check"] else "FAIL"
        print(f"float64 largest difference {report['float64_largest_difference']:.3g} -> {verdict}")


if __name__ == "__main__":
    run_main(main)
