"""Proxy training's Adam: torch's per-parameter loop (its CPU default) against ``foreach=True``
(one multi-tensor update), which ``train_proxy`` uses.

For the demo search's networks -- the complete 8-node cell and the released ShrinkCNN cell in
the digits proxy (1x8x8 inputs, width 0.5, batch 64, lr 0.004, weight decay 1e-5, one thread as
a pool worker has) -- it times ``--steps`` training steps (forward, backward, update) with each
optimizer, the median of ``--rounds`` interleaved runs, and checks that both end with the same
weights to the bit (the speed-up may not change a search).

    python benchmarks/bench_proxy_optimizer.py [--steps 200] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from autoshrink.nn.cnn import build_network
from autoshrink.presets import preset
from autoshrink.search_loop import seeded_start
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import cifar_proxy
from bench_core import timed_steps
from machine import print_machine, run_main


def train_steps(cell, *, foreach: bool, steps: int) -> tuple[float, list[torch.Tensor]]:
    """Seconds for ``steps`` steps after 3 warm-up steps, and the weights they end with."""
    demo = preset("demo")
    torch.manual_seed(0)
    spec = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=demo.width)
    net = build_network(cell, spec)
    x, y = torch.randn(demo.training.batch_size, 1, 8, 8), torch.randint(0, 10, (64,))
    opt = torch.optim.Adam(
        net.parameters(),
        lr=demo.training.lr,
        weight_decay=demo.training.weight_decay,
        foreach=foreach,
    )
    seconds = timed_steps(net, opt, x, y, steps)
    return seconds, [p.detach().clone() for p in net.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1")
    torch.set_num_threads(1)
    info = print_machine(sys.stderr if args.json else None)
    complete, _ = seeded_start(preset("demo"))  # the demo search's own start cell
    cells = {"complete 8-node": complete, "ShrinkCNN": published_cell("shrinkcnn")}
    rows = []
    for name, cell in cells.items():
        loop, multi = [], []
        for _ in range(args.rounds):  # interleaved: a slow moment of the machine hits both
            seconds, plain = train_steps(cell, foreach=False, steps=args.steps)
            loop.append(seconds)
            seconds, fast = train_steps(cell, foreach=True, steps=args.steps)
            multi.append(seconds)
        same = all(torch.equal(a, b) for a, b in zip(plain, fast, strict=True))
        base, ours = statistics.median(loop), statistics.median(multi)
        rows.append(
            {
                "cell": name,
                "loop_ms_per_step": round(1000 * base / args.steps, 3),
                "foreach_ms_per_step": round(1000 * ours / args.steps, 3),
                "speedup": round(base / ours, 3),
                "same_weights": same,
            }
        )
    if args.json:
        print(
            json.dumps(
                {"machine": info, "steps": args.steps, "rounds": args.rounds, "results": rows}
            )
        )
        return
    print(f"Adam per-parameter loop (baseline) vs foreach, {args.steps} steps, median of "
          f"{args.rounds}, 1 thread")  # fmt: skip
    for r in rows:
        print(
            f"{r['cell']:>16}: {r['loop_ms_per_step']:.3f} -> {r['foreach_ms_per_step']:.3f} "
            f"ms/step, speedup: {r['speedup']:.2f}x, same weights: {r['same_weights']}"
        )


if __name__ == "__main__":
    run_main(main)
