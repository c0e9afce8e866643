"""Our zero-cost proxies against NASLib's stored values on NAS-Bench-201 cells (CIFAR-10 shape).

For a seeded sample of the cells of ``naslib_zc_nasbench201.json``: build the topology network
(``C = 16, N = 5``, 10 classes), initialise it with torch's default init under a per-cell
seed, and compute every proxy on one fixed batch of ``--batch`` N(0, 1) images 3x32x32 with
uniform random labels (the real CIFAR-10 is not on this machine; NASLib used one batch of the
CIFAR-10 training loader). Printed: per proxy, the Spearman correlation of our values with
NASLib's, and the Spearman with the file's 200-epoch validation accuracy of ours and of NASLib's
on the same cells; the gap between our synflow and NASLib's on its natural-log scale (median
and largest); and the seconds per cell.

    python benchmarks/bench_zero_cost.py --cells 200          # one thread
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from autoshrink.errors import ConfigError
from autoshrink.nn.nb201 import topology_network
from autoshrink.tabular.naslib_zc import load_naslib_scores
from autoshrink.zero_cost import proxy
from machine import count, print_machine, run_main

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/nats-bench"
CHECKED = ("synflow", "snip", "grad_norm", "jacov", "naswot", "params")


def compare(path: str, cells: int, batch: int, seed: int) -> dict:
    """Our and NASLib's values on ``cells`` sampled cells; Spearman table as a dict."""
    stored = load_naslib_scores(path, "cifar10")
    scored = stored.cells()
    if not 2 <= cells <= len(scored):  # a rank correlation needs two; a sample, enough cells
        raise ConfigError(
            f"--cells {cells}: expected 2 to {len(scored)}, the CIFAR-10 cells the NASLib "
            "file scores"
        )
    sample = random.Random(seed).sample(scored, cells)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    ours: dict[str, list[float]] = {name: [] for name in CHECKED}
    t0 = time.perf_counter()
    for i, cell in enumerate(sample):
        torch.manual_seed(seed * 100_003 + i)
        net = topology_network(cell, num_classes=10)
        for name in CHECKED:
            ours[name].append(proxy(name)(net, x, y))
    seconds = (time.perf_counter() - t0) / cells
    acc = [stored.val_accuracy[c.code] for c in sample]
    table = {}
    for name in CHECKED:
        theirs = [stored.proxy(name)[c.code] for c in sample]
        table[name] = {
            "spearman_vs_naslib": float(spearmanr(ours[name], theirs).statistic),
            "spearman_acc_ours": float(spearmanr(ours[name], acc).statistic),
            "spearman_acc_naslib": float(spearmanr(theirs, acc).statistic),
        }
    gaps = sorted(  # NASLib stores synflow's natural logarithm
        abs(math.log(ours_value) - stored.proxy("synflow")[c.code])
        for ours_value, c in zip(ours["synflow"], sample, strict=True)
    )
    return {
        "cells": cells,
        "batch": batch,
        "seed": seed,
        "seconds_per_cell": seconds,
        "proxies": table,
        "synflow_ln_gap": {"median": gaps[len(gaps) // 2], "max": gaps[-1]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cells", type=count, default=200)
    parser.add_argument("--batch", type=count, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    info = print_machine(sys.stderr if args.json else None)
    out = compare(args.data, args.cells, args.batch, args.seed)
    if args.json:
        print(json.dumps({"machine": info, **out}, indent=2))
        return
    print(
        f"{out['cells']} cells, batch {out['batch']} random N(0,1) images, seed {out['seed']}, "
        f"{out['seconds_per_cell']:.2f} s/cell (all proxies, 1 thread)"
    )
    print(f"{'proxy':<10} {'rho(ours,NASLib)':>17} {'rho(ours,acc)':>14} {'rho(NASLib,acc)':>16}")
    for name, row in out["proxies"].items():
        print(
            f"{name:<10} {row['spearman_vs_naslib']:>17.3f} {row['spearman_acc_ours']:>14.3f} "
            f"{row['spearman_acc_naslib']:>16.3f}"
        )
    gap = out["synflow_ln_gap"]
    print(f"synflow |ln ours - NASLib's|: median {gap['median']:.3f}, max {gap['max']:.3f}")


if __name__ == "__main__":
    run_main(main)
