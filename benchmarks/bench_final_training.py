"""Final training of ShrinkCNN-A and MobileNetV2-1.4 side by side, and a killed run resumed.

1. Trains ShrinkCNN-A (the released cell, ReLU, in the ``shrinkcnn-imagenet`` macro) and
   MobileNetV2-1.4 with one recipe (``cifar`` with ``--epochs``, ``--batch-size``,
   ``--precision``; no flips) on Fashion-MNIST resized to 32x32 (MobileNetV2 needs >= 32 px;
   ``--limit`` keeps the first N training and test images) with
   :func:`autoshrink.training.final.train_final`, and prints per
   network: training images/s (all epochs, evaluation excluded), peak GPU memory and test
   accuracy.
2. Kill and resume: runs ``autoshrink train`` (the released cell, cifar-proxy macro, same
   recipe options) uninterrupted; runs it again, kills the process (SIGKILL) once the first
   epoch's checkpoint is written, resumes it with ``--resume``, and compares both
   ``metrics.json``: the same test accuracy and per-epoch history -> PASS / FAIL (with the
   largest difference).

    python benchmarks/bench_final_training.py --data /usr/share/datasets/fashion-mnist \\
        --device cuda --epochs 3 --precision bf16 [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autoshrink.data.images import ImageData, load_images
from autoshrink.data.loaders import array_data
from autoshrink.devices import local_device_argument
from autoshrink.nn.cnn import build_network
from autoshrink.nn.mobilenetv2 import build_mobilenetv2
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import shrinkcnn_imagenet
from autoshrink.training.distributed import DistContext
from autoshrink.training.final import train_final
from autoshrink.training.recipes import get_recipe
from machine import print_machine, run_main

CELL = Path(__file__).resolve().parents[1] / "src" / "autoshrink" / "cells" / "shrinkcnn.json"


def limited(data: ImageData, n: int | None) -> ImageData:
    if n is None:
        return data
    return dataclasses.replace(
        data,
        train_x=data.train_x[:n],
        train_y=data.train_y[:n],
        test_x=data.test_x[:n],
        test_y=data.test_y[:n],
    )


TIMING = re.compile(r"seconds|per_s$")  # history columns that are clock readings
SIZE = 32  # Fashion-MNIST's 28x28 resized: MobileNetV2's five stride-2 steps need >= 32


def networks(data: ImageData) -> dict[str, Callable[[], torch.nn.Module]]:
    """The two networks compared, each as its builder (built after the seed is set)."""
    size, channels, classes = SIZE, data.in_channels, data.num_classes
    cell = dataclasses.replace(published_cell("shrinkcnn"), activation="relu")
    spec = shrinkcnn_imagenet(image_size=size, num_classes=classes, in_channels=channels)
    return {
        "ShrinkCNN-A": lambda: build_network(cell, spec),
        "MobileNetV2-1.4": lambda: build_mobilenetv2(
            1.4, image_size=size, num_classes=classes, in_channels=channels
        ),
    }


def warm_up(device: str) -> None:
    """One untimed convolution forward and backward on ``device``, so that the process's
    first-call costs (CUDA and cuDNN set-up) fall on neither network's timed epochs."""
    conv = torch.nn.Conv2d(3, 8, 3).to(device)
    conv(torch.randn(2, 3, 8, 8, device=device)).sum().backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def side_by_side(data: ImageData, recipe, device: str, say) -> list[dict[str, Any]]:
    rows = []
    warm_up(device)
    for name, build in networks(data).items():
        torch.manual_seed(0)  # the same initial weights in every run (they were built unseeded)
        model = build()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        ctx = DistContext(device=torch.device(device))
        out = train_final(model.to(device), array_data(data, recipe), recipe, ctx=ctx)
        wall = time.perf_counter() - t0
        train_s = sum(row["train_seconds"] for row in out.history)  # evaluation excluded
        images = recipe.epochs * len(data.train_y)
        peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None
        row = {
            "network": name,
            "params": params,
            "images_s": images / train_s if train_s else None,
            "wall_s": round(wall, 2),
            "peak_gpu_gb": None if peak is None else round(peak, 2),
            "test_accuracy": out.test_accuracy,
        }
        rows.append(row)
        mem = "n/a" if peak is None else f"{row['peak_gpu_gb']} GB"
        say(f"final training {name}: {row['images_s'] or 0:,.0f} img/s, peak GPU memory "
            f"{mem}, test accuracy {out.test_accuracy:.4f} "
            f"({params / 1e6:.2f} M params, {wall:.1f} s)")  # fmt: skip
        del model, out  # else the next network's peak memory counts this one's weights
    return rows


def train_command(args: argparse.Namespace, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "autoshrink", "train", str(CELL), "--dataset", args.resume_dataset,
        *(["--data", str(args.data)] if args.resume_dataset == "fashion-mnist" else []),
        "--epochs", str(args.resume_epochs), "--batch-size", str(args.batch_size),
        "--precision", args.precision, "--no-flip", "--device", args.device,
        "--out", str(out), *(["--width", str(args.resume_width)] if args.resume_width else []),
        *extra,
    ]  # fmt: skip


def kill_and_resume(args: argparse.Namespace, root: Path, say) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, ["src", os.environ.get(
        "PYTHONPATH")]))}  # fmt: skip
    whole = root / "whole"
    subprocess.run(train_command(args, whole), check=True, env=env, capture_output=True)
    killed = root / "killed"
    proc = subprocess.Popen(train_command(args, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    first = killed / "checkpoints" / "epoch-0001.json"
    while proc.poll() is None and not first.exists():
        time.sleep(0.05)
    was_killed = proc.poll() is None
    if was_killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(train_command(args, killed, "--resume"), check=True, env=env,
                   capture_output=True)  # fmt: skip
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    diffs = [
        abs(x[key] - y[key])
        for x, y in zip(a["history"], b["history"], strict=True)
        for key in x
        if isinstance(x[key], float) and not TIMING.search(key)
    ]
    same = a["test_accuracy"] == b["test_accuracy"] and max(diffs, default=0.0) == 0.0
    result = {
        "killed_mid_run": was_killed,
        "resumed_from_epoch": b["resumed_from_epoch"],
        "test_accuracy": [a["test_accuracy"], b["test_accuracy"]],
        "max_history_difference": max(diffs, default=0.0),
        "pass": same and was_killed,
    }
    verdict = "PASS" if result["pass"] else "FAIL"
    say(f"kill after epoch 1 + --resume on {args.device}: uninterrupted test accuracy "
        f"{a['test_accuracy']:.4f}, resumed {b['test_accuracy']:.4f} (from epoch "
        f"{b['resumed_from_epoch']}), largest history difference "
        f"{result['max_history_difference']:.3g} -> {verdict}")  # fmt: skip
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="Fashion-MNIST IDX folder")
    p.add_argument("--device", default="cuda", type=local_device_argument)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="bf16", help="a recipe precision (auto, fp32, bf16)")
    p.add_argument("--limit", type=int, default=None, help="first N training and test images")
    p.add_argument("--resume-epochs", type=int, default=2)
    p.add_argument(
        "--resume-dataset", default="fashion-mnist", help="fashion-mnist, or digits (quick)"
    )
    p.add_argument("--resume-width", type=float, default=None, help="macro width (quick)")
    p.add_argument("--no-resume", action="store_true", help="skip the kill/resume check")
    p.add_argument("--resume-only", action="store_true", help="only the kill/resume check")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        torch.set_flush_denormal(True)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    info = print_machine(sys.stderr if args.json else None)
    report: dict[str, Any] = {"machine": info, "device": args.device}
    if not args.resume_only:
        data = limited(load_images("fashion-mnist", args.data), args.limit)
        recipe = get_recipe(
            "cifar",
            epochs=args.epochs,
            batch_size=args.batch_size,
            precision=args.precision,
            image_size=SIZE,
        ).with_overrides(flip=False)
        say(f"recipe cifar, {args.epochs} epochs, batch {args.batch_size}, {args.precision}, "
            f"{len(data.train_y):,} training images resized to 32x32, {args.device}")  # fmt: skip
        report |= {"epochs": args.epochs, "precision": args.precision, "images": len(data.train_y)}
        report["networks"] = side_by_side(data, recipe, args.device, say)
    ok = True
    if not args.no_resume:
        with tempfile.TemporaryDirectory(prefix="autoshrink-resume-") as tmp:
            report["resume"] = kill_and_resume(args, Path(tmp), say)
        ok = report["resume"]["pass"]
    if args.json:
        print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    run_main(main)
