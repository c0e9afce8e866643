"""The cost of one optimiser step of the final-training recipes, TensorFlow's RMSProp against
torch's (the baseline) and SGD, over the parameters of ShrinkCNN-A and MobileNetV2-1.4.

Each network's gradients are fixed random tensors, so only the update is timed; the steps of
all optimisers are interleaved (every optimiser in turn, again and again) so a shared
machine's load falls on all alike. Prints the median milliseconds per step and the ratio to
torch's RMSprop.

    python benchmarks/bench_optimizers.py [--device cpu|cuda] [--threads 1] [--rounds 10]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from autoshrink.devices import torch_threads
from autoshrink.training.optim import build_optimizer
from autoshrink.training.recipes import get_recipe
from bench_vs_mobilenetv2 import BASELINE, interleaved, networks
from machine import count, print_machine, run_main

OPTIMIZERS = ("rmsprop", "rmsprop-tf", "sgd")  # the first is the baseline


def step_of(model: nn.Module, optimizer: str, device: torch.device) -> Callable[[], None]:
    """One step of the published recipe with ``optimizer`` over a copy of ``model`` holding
    its gradients, synchronised on a GPU."""
    own = copy.deepcopy(model)
    for mine, theirs in zip(own.parameters(), model.parameters(), strict=True):
        mine.grad = theirs.grad.clone()
    recipe = get_recipe("shrinkcnn-imagenet", optimizer=optimizer)
    opt = build_optimizer(own, recipe, 256)

    def step() -> None:
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=count, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    with torch_threads(args.threads):
        print_machine()
        print(f"device {device}")
        for name, (model, _, _) in networks(224, 1001).items():
            if name not in ("ShrinkCNN-A", BASELINE):
                continue
            model = model.to(device)
            generator = torch.Generator().manual_seed(0)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=generator).to(device)
            times = interleaved({o: step_of(model, o, device) for o in OPTIMIZERS},
                                rounds=args.rounds, calls=3)  # fmt: skip
            base = float(np.median(times[OPTIMIZERS[0]]))
            n = sum(p.numel() for p in model.parameters())
            for o in OPTIMIZERS:
                ms = float(np.median(times[o]))
                print(f"{name:16s} {n / 1e6:5.2f}M params  {o:11s} {ms:8.2f} ms/step  "
                      f"x{base / ms:5.2f} vs torch's rmsprop")  # fmt: skip


if __name__ == "__main__":
    run_main(main)
