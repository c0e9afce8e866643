"""Core CPU benchmarks: candidate-training throughput and the demo search's wall time.

Throughput: images/s of one proxy-training step loop (Adam, batch 128) for the complete 8-node
cell and the released ShrinkCNN cell on CIFAR-shaped (3x32x32) and digits-shaped (1x8x8)
inputs, for the evaluator's settings (channels-last, one thread per worker) against the
baseline of a plain NCHW eager loop with torch's default thread count: the median of
``--rounds`` interleaved runs of each.
Demo: ``autoshrink search --preset demo`` end to end, with its best and complete-cell scores
against the issue's target (<= 180 s on 2 cores, best score clearly above the complete cell's).

    python benchmarks/bench_core.py [--steps 8] [--rounds 3] [--skip-demo] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import published_cell, start_cell
from autoshrink.spaces.macros import cifar_proxy
from machine import print_machine, run_main


def throughput(cell, shape, *, channels_last: bool, threads: int, steps: int, batch=128) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c, h, _ = shape
    net = build_network(cell, cifar_proxy(in_channels=c, image_size=h, num_classes=10))
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=4e-3)
    return steps * batch / timed_steps(net, opt, x, y, steps)


def timed_steps(
    net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> float:
    """Seconds for ``steps`` training steps (forward, cross-entropy, backward, update) on the
    batch ``x, y``, after 3 untimed warm-up steps."""

    def step() -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def demo_search() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "autoshrink", "search", "--preset", "demo", "--out",
             f"{tmp}/demo", "--no-progress"],
            check=True, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        result = json.loads(Path(tmp, "demo", "result.json").read_text())
    return {
        "demo_wall_s": round(wall, 1),
        "demo_best_score": result["best"]["score"],
        "demo_best_accuracy": result["best"]["metrics"]["accuracy"],
        "demo_best_edges": result["best"]["edges"],
        "demo_start_score": result["start"]["score"],
        "demo_start_accuracy": result["start"]["metrics"]["accuracy"],
        "demo_candidates": result["evaluations"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved timed runs per side (median)"
    )
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}")
    info = print_machine(sys.stderr if args.json else None)
    cells = {
        "complete-8": start_cell("cnn", 8, random.Random(0)),
        "shrinkcnn": published_cell("shrinkcnn"),
    }
    threads, steps = torch.get_num_threads(), args.steps
    rows = []
    for shape in ((3, 32, 32), (1, 8, 8)):
        for name, cell in cells.items():
            rounds = [  # interleaved, so that a busy spell of the machine hits both sides
                (
                    throughput(cell, shape, channels_last=False, threads=threads, steps=steps),
                    throughput(cell, shape, channels_last=True, threads=1, steps=steps),
                )
                for _ in range(args.rounds)
            ]
            base = statistics.median(b for b, _ in rounds)
            ours = statistics.median(o for _, o in rounds)
            rows.append({"input": "x".join(map(str, shape)), "cell": name,
                         "baseline_img_s": round(base), "evaluator_img_s": round(ours),
                         "per_worker_speedup": round(ours / base, 2)})  # fmt: skip
    out: dict = {"machine": info, "default_threads": threads, "throughput": rows}
    if not args.skip_demo:
        out.update(demo_search())
    if args.json:
        print(json.dumps(out))
        return
    print(f"baseline = NCHW eager loop with {threads} threads; "
          "evaluator = channels-last, 1 thread (one such worker per core)")  # fmt: skip
    print(f"{'input':<8} {'cell':<11} {'baseline img/s':>15} {'evaluator img/s':>16} {'ratio':>6}")
    for r in rows:
        print(f"{r['input']:<8} {r['cell']:<11} {r['baseline_img_s']:>15} "
              f"{r['evaluator_img_s']:>16} {r['per_worker_speedup']:>6}")  # fmt: skip
    if not args.skip_demo:
        print(f"demo search: {out['demo_wall_s']} s (target <= 180 s), {out['demo_candidates']} "
              f"candidates; best score {out['demo_best_score']:.4f} "
              f"(accuracy {out['demo_best_accuracy']:.4f}, {out['demo_best_edges']} edges) vs "
              f"complete cell {out['demo_start_score']:.4f} "
              f"(accuracy {out['demo_start_accuracy']:.4f})")  # fmt: skip


if __name__ == "__main__":
    run_main(main)
