"""ERM search against OoD search (``--objective ood``), leave-one-domain-out (issue 18).

For each (data set, held-out domain, seed): an AutoShrink search with ``objective="erm"`` and
one with ``objective="ood"`` -- same seed, same settings, both on the training domains only --
then each best cell is retrained with the same recipe on all training-domain training images
and scored on the training domains' test parts and on every image of the held-out domain. The
held-out domain is loaded only after both searches, for that final score; no setting here was
chosen by looking at it.

Retraining recipe (the same for both cells): the proxy network (``cifar-proxy``, width 0.5),
Adam lr 4e-3, batch 64, ``--retrain-epochs`` epochs, no early stop, whole-tensor batches --
the proxy loop of :mod:`autoshrink.training.classification` run to its end, because the
per-image DataLoader of ``autoshrink train`` is several times slower on a shared 2-core box.

Rows are appended to ``--out`` (JSON lines; default in the temporary folder) as units finish,
each with the settings it ran under (``protocol``); a rerun with the same settings skips finished
units, one with other settings is refused, and both print the summary: per setting, the held-out
accuracy of each arm, the paired difference OoD - ERM (mean, 95% t interval over seeds),
training-domain accuracy, params, MACs and search cost (wall seconds, candidates).

    python benchmarks/bench_ood.py --seeds 3 --out /tmp/bench_ood.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autoshrink.cost.cells import count
from autoshrink.data.domains import load_held_out_domain
from autoshrink.data.images import channel_stats, load_images, normalise
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.presets import preset
from autoshrink.search import run_search
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.classification import evaluate, train_proxy
from autoshrink.training.proxy_settings import ProxyTraining
from machine import print_machine, run_main

#: (data set, held-out domain, proxy images per class): the issue's minimum test domains;
#: the default run (``--settings all``) is the digits ones, Fashion-MNIST is ``--settings 3,4``.
SETTINGS = (
    ("rotated-digits", "75", 80),
    ("rotated-digits", "0", 80),
    ("colored-digits", "0.1", 200),
    ("rotated-fashion-mnist", "75", 100),
    ("colored-fashion-mnist", "0.1", 300),
    ("rotated-fashion-mnist", "0", 100),
)


def search(dataset: str, domain: str, per_class: int, objective: str, seed: int, a) -> dict:
    config = preset(
        "demo",
        dataset=dataset,
        test_domain=domain,
        objective=objective,
        seed=seed,
        nodes=a.nodes,
        k=a.k,
        keep_fraction=a.keep_fraction,
        patience=3,
        per_class=per_class,
        val_size=300,
        width=0.5,
        threads=1,
        training_epochs=a.epochs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_search(Path(tmp) / "run", config, progress=False)
        seconds = time.perf_counter() - t0
    return {
        "cell": result.cell.to_dict(),
        "search_seconds": seconds,
        "candidates": result.evaluations,
        "proxy_metrics": dict(result.best.metrics),
    }


def retrain(cell: Cell, dataset: str, domain: str, seed: int, epochs: int) -> dict:
    data = load_images(dataset, test_domain=domain)
    macro = cifar_proxy(
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        width=0.5,
    )
    mean, std = channel_stats(data.train_x)

    def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(normalise(x, mean, std)), torch.from_numpy(y.astype(np.int64))

    torch.manual_seed(seed)
    model = build_network(cell, macro)
    settings = ProxyTraining(  # no early stop: every cell trains all its epochs
        epochs=epochs, batch_size=64, patience=epochs + 1, min_accuracy=0.0, overfit_ratio=1e9
    )
    train = tensors(data.train_x, data.train_y)
    test = tensors(data.test_x, data.test_y)
    train_proxy(model, train, test, settings, torch.Generator().manual_seed(seed))
    per_domain = {}
    for i, name in enumerate(data.domains):
        m = data.test_domain == i
        per_domain[name] = evaluate(model, *tensors(data.test_x[m], data.test_y[m]), 256)[1]
    held = load_held_out_domain(dataset, domain)  # final evaluation only
    held_acc = evaluate(model, *tensors(held.x, held.y), 256)[1]
    c = count(cell, macro)
    return {
        "held_out_accuracy": held_acc,
        "training_domains_accuracy": evaluate(model, *test, 256)[1],
        "per_domain": per_domain,
        "params": c.params,
        "macs": c.macs,
    }


def summary(rows: list[dict]) -> None:
    """A Markdown table: one line per (data set, held-out domain), means over seeds."""
    from scipy import stats

    print(
        "| held out | seeds | held-out acc. ERM | held-out acc. OoD | OoD - ERM, mean [95% CI] "
        "| training-domain acc. ERM / OoD | MACs ERM / OoD | params ERM / OoD "
        "| search s ERM / OoD | candidates ERM / OoD |"
    )
    print("| --- " * 10 + "|")
    for dataset, domain, _ in SETTINGS:
        rs = [r for r in rows if r["dataset"] == dataset and r["domain"] == domain]
        if not rs:
            continue
        e = [r["erm"] for r in rs]
        o = [r["ood"] for r in rs]
        diff = np.array(
            [y["held_out_accuracy"] - x["held_out_accuracy"] for x, y in zip(e, o, strict=True)]
        )
        if len(diff) > 1:
            half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
            ci = f"{diff.mean():+.4f} [{diff.mean() - half:+.4f}, {diff.mean() + half:+.4f}]"
        else:
            ci = f"{diff.mean():+.4f} (one seed)"

        def mean(arm: list[dict], key: str) -> float:
            return float(np.mean([x[key] for x in arm]))

        def pair(key: str, fmt: str, e: list[dict] = e, o: list[dict] = o) -> str:
            return f"{mean(e, key):{fmt}} / {mean(o, key):{fmt}}"

        print(
            f"| {dataset} @ {domain} | {len(rs)} | {mean(e, 'held_out_accuracy'):.4f} "
            f"| {mean(o, 'held_out_accuracy'):.4f} | {ci} "
            f"| {pair('training_domains_accuracy', '.4f')} | {pair('macs', '.0f')} "
            f"| {pair('params', '.0f')} | {pair('search_seconds', '.0f')} "
            f"| {pair('candidates', '.1f')} |"
        )


#: The settings a row's figures depend on (beyond data set, domain and seed).
PROTOCOL = ("nodes", "k", "keep_fraction", "epochs", "retrain_epochs")


def picked_settings(parser: argparse.ArgumentParser, settings: str) -> list[int]:
    """The indices into SETTINGS that ``--settings`` names ("all": the first three)."""
    if settings == "all":
        return [0, 1, 2]
    names = settings.split(",")
    if not all(n.strip().isdigit() and int(n) < len(SETTINGS) for n in names):
        parser.error(f"--settings {settings}: expected 'all' or comma-separated indices "
                     f"0 to {len(SETTINGS) - 1} into SETTINGS")  # fmt: skip
    return [int(n) for n in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--settings", default="all", help="comma-separated indices into SETTINGS")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--keep-fraction", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=4, help="proxy epochs per candidate")
    p.add_argument("--retrain-epochs", type=int, default=15)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_ood.jsonl")
    p.add_argument("--summary-only", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    info = print_machine()
    rows = [json.loads(s) for s in a.out.read_text().splitlines()] if a.out.exists() else []
    protocol = {key: getattr(a, key) for key in PROTOCOL}
    other = sum(r.get("protocol") != protocol for r in rows)
    if other and not a.summary_only:
        p.error(f"{a.out} holds {other} row(s) of other settings than {protocol}; another --out?")
    if a.summary_only and not rows:
        p.error(f"--summary-only: {a.out} holds no results; run the seeds into it first")
    picked = picked_settings(p, a.settings)
    if not a.summary_only:
        for seed in range(a.first_seed, a.first_seed + a.seeds):  # every setting, seed by seed
            for i in picked:
                dataset, domain, per_class = SETTINGS[i]
                if any(
                    (r["dataset"], r["domain"], r["seed"]) == (dataset, domain, seed) for r in rows
                ):
                    continue
                row = {"dataset": dataset, "domain": domain, "seed": seed, "protocol": protocol}
                row["machine"] = info
                for objective in ("erm", "ood"):  # both searches finish before any retraining
                    row[objective] = search(dataset, domain, per_class, objective, seed, a)
                for objective in ("erm", "ood"):
                    cell = Cell.from_dict(row[objective]["cell"])
                    row[objective] |= retrain(cell, dataset, domain, seed, a.retrain_epochs)
                rows.append(row)
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{dataset} @{domain} seed {seed}: held-out ERM "
                    f"{row['erm']['held_out_accuracy']:.4f} OoD "
                    f"{row['ood']['held_out_accuracy']:.4f}",
                    flush=True,
                )
    print(f"settings {vars(a)}")
    summary(rows)


if __name__ == "__main__":
    run_main(main)
