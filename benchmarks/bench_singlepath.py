"""Single-Path NAS on this CPU: predicted vs measured latency, and accuracy against MobileNetV2.

Deployment: onnxruntime, batch 1, 1 thread, 224x224, Fashion-MNIST's shape (1 channel, 10
classes); latencies on the thread's CPU clock (``--clock cpu``) because the dev box is shared.
For each width ``w`` of ``--widths`` (default 0.75, 1.0, 1.4: MobileNetV2-0.75 ... 1.4):

1. MobileNetV2-w is measured whole; its median is the latency target of the search;
2. ``autoshrink singlepath`` runs in the space at width ``w`` with that target (its own latency
   table and calibration, measured here), on a seeded subset of Fashion-MNIST at 32x32;
3. the found network's latency is predicted by the model and measured whole, with a
   held-out sample of random networks of the same space (not used by the calibration) as a
   second check of the model;
4. the found network and MobileNetV2-w are trained from scratch with the same recipe (SGD,
   cosine, ``--epochs`` on ``--train-images`` images at 32x32) and scored on ``--val-images``
   test images.

Prints one row per network and the median relative error of the predictions; writes
``--out``/bench.json and, when matplotlib is installed, ``--out``/accuracy_vs_latency.png.

    python benchmarks/bench_singlepath.py [--widths 0.75 1.0 1.4] [--search-images 2000]
        [--search-epochs 5] [--warmup-epochs 2] [--train-images 5000] [--epochs 3]
        [--out /tmp/bench_singlepath]

The search's warm-up (epochs that train the weights only) must be shorter than the search:
``--warmup-epochs`` defaults to 2, or ``--search-epochs`` - 1 when that is less. The search
settings are checked before anything is loaded or measured; a bad combination is a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from autoshrink.data.images import ImageData, load_images
from autoshrink.data.loaders import array_data
from autoshrink.errors import ConfigError
from autoshrink.hardware.latency import measure_module
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.singlepath.latency_model import prepare_model
from autoshrink.singlepath.search import run_singlepath
from autoshrink.singlepath.settings import SearchSettings
from autoshrink.singlepath.space import (
    CHOICES,
    SKIP,
    MBConvArch,
    build_arch,
    count_arch,
    macro_slots,
    mobilenetv2_arch,
)
from autoshrink.training.final import train_final
from autoshrink.training.recipes import get_recipe
from machine import print_machine, run_main

log = logging.getLogger("bench_singlepath")


def measure(arch: MBConvArch, settings: LatencySettings) -> float:
    shape = (settings.batch, arch.in_channels, arch.image_size, arch.image_size)
    return measure_module(build_arch(arch).eval(), [shape], settings).median_ms


def subset(data: ImageData, n_train: int, n_test: int, seed: int) -> ImageData:
    rng = np.random.default_rng(seed)
    tr = rng.permutation(len(data.train_y))[:n_train]
    te = rng.permutation(len(data.test_y))[:n_test]
    return replace(
        data,
        train_x=data.train_x[tr],
        train_y=data.train_y[tr],
        test_x=data.test_x[te],
        test_y=data.test_y[te],
    )


def train_accuracy(arch: MBConvArch, data: ImageData, epochs: int, seed: int) -> float:
    """Train ``arch`` (at 32x32) from scratch with the short recipe; test accuracy."""
    recipe = get_recipe("cifar", epochs=epochs, batch_size=64, image_size=32, precision="fp32")
    recipe = recipe.with_overrides(flip=True, warmup_epochs=0.5)
    torch.manual_seed(seed)
    model = build_arch(arch.with_settings(image_size=32))
    result = train_final(model, array_data(data, recipe, seed=seed), recipe, seed=seed)
    return result.test_accuracy


def random_archs(arch: MBConvArch, n: int, seed: int) -> list[MBConvArch]:
    rng = random.Random(seed)
    slots = macro_slots(arch.spec)[1]
    return [
        replace(arch, layers=tuple(rng.choice([*CHOICES, SKIP] if s.skippable else CHOICES)
                                   for s in slots))
        for _ in range(n)
    ]  # fmt: skip


def search_settings(args: argparse.Namespace, lat: LatencySettings) -> SearchSettings:
    """The search's settings but for the width and the latency target (set per width); the
    warm-up is ``--warmup-epochs``, or 2 epochs but at most all the search's epochs but one.
    A combination the search refuses is a ConfigError, raised here before any work."""
    warmup = args.warmup_epochs
    if warmup is None:
        warmup = max(0, min(2, args.search_epochs - 1))
    return SearchSettings(
        dataset="fashion-mnist",
        train_images=args.search_images,
        val_images=args.val_images,
        epochs=args.search_epochs,
        warmup_epochs=warmup,
        batch_size=32,
        lam=args.lam,
        threshold_lr=args.threshold_lr,
        seed=args.seed,
        latency=lat,
    )


def remeasure(out: Path, rounds: int, holdout: int, seed: int, lat: LatencySettings) -> dict:
    """Measure again, ``rounds`` times in interleaved order, the networks of the searches in
    ``out`` (per width: MobileNetV2, the found network, ``holdout`` random networks), and
    compare each median with its saved model's prediction (no search, no new table)."""
    nets = []
    for folder in sorted(out.glob("search-*")):
        w = float(folder.name.split("-", 1)[1])
        arch = MBConvArch.load(folder / "architecture.json")
        model, _, _ = prepare_model(folder / "latency_table.json", arch.spec, lat)
        mbv2 = mobilenetv2_arch(w, num_classes=10, in_channels=1)
        nets.append((f"MobileNetV2-{w:g}", mbv2, model, "mobilenetv2"))
        nets.append((f"SinglePath@{w:g}", arch, model, "found"))
        for i, a in enumerate(random_archs(arch, holdout, seed + 17)):
            nets.append((f"random@{w:g}#{i}", a, model, "held-out"))
    times: dict[str, list[float]] = {name: [] for name, *_ in nets}
    for r in range(rounds):
        for name, arch, _, _ in nets if r % 2 == 0 else nets[::-1]:
            times[name].append(measure(arch, lat))
    rows = []
    for name, arch, model, kind in nets:
        median = float(np.median(times[name]))
        predicted = model.predict(arch)
        rows.append({
            "network": name, "kind": kind, "predicted_ms": predicted, "measured_ms": times[name],
            "median_ms": median, "spread": (max(times[name]) - min(times[name])) / median,
            "rel_error": abs(predicted - median) / median,
        })  # fmt: skip
    by_kind = {
        kind: float(np.median([r["rel_error"] for r in rows if r["kind"] == kind]))
        for kind in ("found", "mobilenetv2", "held-out")
    }
    return {
        "rows": rows,
        "median_rel_error": by_kind,
        "median_rel_error_all": float(np.median([r["rel_error"] for r in rows])),
        "median_spread": float(np.median([r["spread"] for r in rows])),
        "rounds": rounds,
    }


def print_remeasure(summary: dict) -> None:
    print(f"{'network':<18} {'predicted':>9} {'median':>9} {'error':>7} {'spread':>7}  rounds (ms)")
    for r in summary["rows"]:
        rounds = " ".join(f"{m:.2f}" for m in r["measured_ms"])
        print(f"{r['network']:<18} {r['predicted_ms']:9.3f} {r['median_ms']:9.3f} "
              f"{100 * r['rel_error']:6.1f}% {100 * r['spread']:6.1f}%  {rounds}")  # fmt: skip
    errs = ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["median_rel_error"].items())
    print(
        f"median |predicted - median measured| / median measured: {errs}; all networks "
        f"{100 * summary['median_rel_error_all']:.1f}%; median spread of the same network "
        f"across {summary['rounds']} rounds {100 * summary['median_spread']:.1f}%; goal <= 10%"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", type=float, nargs="+", default=[0.75, 1.0, 1.4])
    p.add_argument("--search-images", type=int, default=2000)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help="search epochs that train the weights only (default: 2, at most --search-epochs - 1)",
    )
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--holdout", type=int, default=4, help="random networks per width")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--threshold-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="latency only")
    p.add_argument(
        "--remeasure",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="no search: measure the networks of the searches in --out again, ROUNDS times "
        "interleaved, against their saved latency models",
    )
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_singlepath"))
    args = p.parse_args()
    lat = LatencySettings(backend="onnxruntime", batch=1, threads=1, clock="cpu")
    torch.set_num_threads(1)
    info = print_machine()
    if args.remeasure:
        summary = remeasure(args.out, args.remeasure, args.holdout, args.seed, lat)
        summary = {"machine": info, **summary}
        (args.out / "remeasure.json").write_text(json.dumps(summary, indent=1) + "\n")
        print_remeasure(summary)
        return
    try:
        search = search_settings(args, lat)
    except ConfigError as err:
        p.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_flush_denormal(True)
    fm = load_images("fashion-mnist")
    data = subset(fm, args.train_images, args.val_images, args.seed)
    rows, errors, holdout_errors = [], [], []
    args.out.mkdir(parents=True, exist_ok=True)
    for w in args.widths:
        mbv2 = mobilenetv2_arch(w, num_classes=10, in_channels=1)
        target = measure(mbv2, lat)
        log.info("MobileNetV2-%g: %.3f ms (the target)", w, target)
        settings = replace(search, width=w, latency_target_ms=target)
        t0 = time.perf_counter()
        found = run_singlepath(args.out / f"search-{w:g}", settings).summary
        wall = time.perf_counter() - t0
        arch = MBConvArch.load(args.out / f"search-{w:g}" / "architecture.json")
        errors.append(abs(found["relative_error"]))
        model, _, _ = prepare_model(args.out / f"search-{w:g}" / "latency_table.json",
                                    arch.spec, lat)  # fmt: skip
        for a in random_archs(arch, args.holdout, args.seed + 17):
            m = measure(a, lat)
            holdout_errors.append(abs(model.predict(a) - m) / m)
        for name, a, measured, predicted in (
            (f"MobileNetV2-{w:g}", mbv2, target, model.predict(mbv2)),
            (f"SinglePath@{w:g}", arch, found["measured_ms"], found["predicted_ms"]),
        ):
            c = count_arch(a)
            acc = None if args.no_train else train_accuracy(a, data, args.epochs, args.seed)
            rows.append({
                "network": name, "layers": list(a.layers), "params": c.params, "macs": c.macs,
                "measured_ms": measured, "predicted_ms": predicted, "test_accuracy": acc,
                "search_wall_s": wall if name.startswith("Single") else None,
                "search_images": found["images_trained"] if name.startswith("Single") else None,
            })  # fmt: skip
            log.info("%s", rows[-1])
    summary = {
        "machine": info,
        "rows": rows,
        "median_rel_error_found": float(np.median(errors)),
        "median_rel_error_holdout": float(np.median(holdout_errors)) if holdout_errors else None,
        "holdout_networks": len(holdout_errors),
        "latency_settings": lat.to_dict(),
        "search_warmup_epochs": search.warmup_epochs,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{'network':<18} {'MACs (M)':>9} {'measured':>9} {'predicted':>9} {'test acc':>9}")
    for r in rows:
        acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        print(f"{r['network']:<18} {r['macs'] / 1e6:9.0f} {r['measured_ms']:9.3f} "
              f"{r['predicted_ms']:9.3f} {acc:>9}")  # fmt: skip
    print(f"median |predicted - measured| / measured: found networks "
          f"{100 * summary['median_rel_error_found']:.1f}% ({len(errors)}), held-out random "
          f"networks {100 * (summary['median_rel_error_holdout'] or 0):.1f}% "
          f"({len(holdout_errors)}); goal <= 10%")  # fmt: skip
    plot(rows, args.out / "accuracy_vs_latency.png")


def plot(rows: list[dict], path: Path) -> None:
    if any(r["test_accuracy"] is None for r in rows):
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for prefix, marker in (("MobileNetV2", "o"), ("SinglePath", "s")):
        pts = [r for r in rows if r["network"].startswith(prefix)]
        ax.plot([r["measured_ms"] for r in pts], [r["test_accuracy"] for r in pts], marker,
                label=prefix)  # fmt: skip
        for r in pts:
            ax.annotate(r["network"].split("-")[-1].split("@")[-1],
                        (r["measured_ms"], r["test_accuracy"]), fontsize=7)  # fmt: skip
    ax.set_xlabel("measured latency, onnxruntime, batch 1, 1 thread, 224 px (ms)")
    ax.set_ylabel("test accuracy (Fashion-MNIST subset)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    run_main(main)
