"""Node inputs as views of one buffer against concatenated copies, in one run on one device.

The stacked network of the K single-edge removals of the complete 8-node cell (a search's
first step; K = 10, batch 128, 3x32x32 unless told otherwise) is built twice from the same
seeds, once per :data:`~autoshrink.nn.node_states.NODE_INPUTS` mode (``concat``: every node's
input a ``torch.cat`` of its predecessors' outputs; ``buffer``: views of one preallocated
tensor). For each it prints:

- the time of a training step's forward + backward pass (best of ``--rounds`` rounds of
  ``--steps`` steps, the two modes interleaved round by round);
- the bytes the forward pass saves for the backward pass (distinct storages, counted through
  ``torch.autograd.graph.saved_tensors_hooks``; the same on every device), and on CUDA the
  peak memory of a step;
- the largest difference of the two modes' outputs and gradients (float64 with ``--check``).

    python benchmarks/bench_node_inputs.py [--device cuda] [--k 10] [--batch 128]
        [--image-size 32] [--precision auto|fp32|bf16] [--rounds 5] [--steps 3]
        [--threads N] [--check] [--json]

The last line is ``node-input buffer speedup: X`` (concat time / buffer time).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from autoshrink.devices import local_device_argument
from autoshrink.executors.factory import PRECISIONS
from autoshrink.nn.batched import BatchedCNN, build_batched
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.batched import tf32_matmuls
from bench_gpu_engine import sync
from machine import count, print_machine, run_main

MODES = ("concat", "buffer")


def engines(args: argparse.Namespace, dtype: torch.dtype) -> dict[str, BatchedCNN]:
    """The two stacked networks of a first shrink step's ``args.k`` candidates."""
    spec = cifar_proxy(in_channels=args.in_channels, image_size=args.image_size)
    parent = start_cell("cnn", 8, random.Random(0))
    cells = [parent.remove_edge(e) for e in parent.edges[: args.k]]
    return {
        mode: build_batched(parent, spec, cells, range(args.k), node_inputs=mode)
        .to(args.device, dtype)
        .train()
        for mode in MODES
    }


def step(engine: BatchedCNN, x: torch.Tensor, autocast: Any) -> None:
    """One forward + backward pass (a sum of squares of the logits as the loss)."""
    with autocast:
        loss = engine(x).float().square().mean()
    loss.backward()


def saved_bytes(engine: BatchedCNN, x: torch.Tensor, autocast: Any) -> int:
    """Bytes of the distinct storages one forward pass saves for its backward pass."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(engine, x, autocast)
    return sum(storages.values())


def largest_difference(nets: dict[str, BatchedCNN], x: torch.Tensor, autocast: Any) -> float:
    """The largest difference of the two modes' logits and weight gradients."""
    results = []
    for engine in nets.values():
        engine.zero_grad()
        with autocast:
            out = engine(x).float()
        out.square().mean().backward()
        results.append([out.detach(), *(p.grad.float() for p in engine.parameters())])
    return max((a - b).abs().max().item() for a, b in zip(*results, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", type=local_device_argument)
    p.add_argument("--k", type=count, default=10, help="stacked candidates")
    p.add_argument("--batch", type=count, default=128)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="auto")
    p.add_argument("--rounds", type=count, default=5, help="interleaved timing rounds")
    p.add_argument("--steps", type=count, default=3, help="training steps per round")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--check", action="store_true", help="float64 (timings of float64 too)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    info = print_machine(sys.stderr if args.json else None)
    cuda = args.device.startswith("cuda")
    options = PRECISIONS[args.precision]
    dtype = torch.float64 if args.check else torch.float32
    autocast = (
        torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
        if options["bf16"]
        else nullcontext()
    )
    tf32 = options["tf32"] and cuda  # CUDA float32 matmuls on TF32 tensor cores
    tag = "float64" if args.check else "bf16" if options["bf16"] else "tf32" if tf32 else "fp32"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    say(
        f"device {name}; complete 8-node cell, K = {args.k}, batch {args.batch}, "
        f"{args.in_channels}x{args.image_size}x{args.image_size} images, {tag}; best of "
        f"{args.rounds} interleaved rounds of {args.steps} steps"
    )
    with tf32_matmuls(tf32):
        nets = engines(args, dtype)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(
            args.batch, args.image_size, args.image_size, 1, args.in_channels, generator=g
        )
        x = x.expand(-1, -1, -1, args.k, -1).contiguous().to(args.device, dtype)
        diff = largest_difference(nets, x, autocast)
        saved = {mode: saved_bytes(net, x, autocast) for mode, net in nets.items()}
        best = dict.fromkeys(MODES, float("inf"))
        peak: dict[str, float | None] = dict.fromkeys(MODES)
        for net in nets.values():  # warm-up: kernel selection, allocator
            step(net, x, autocast)
        for _ in range(args.rounds):
            for mode, net in nets.items():
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                sync(args.device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(net, x, autocast)
                sync(args.device)
                best[mode] = min(best[mode], (time.perf_counter() - t0) / args.steps)
                if cuda:
                    peak[mode] = torch.cuda.max_memory_allocated() / 1e9
    for mode in MODES:
        mem = "" if peak[mode] is None else f", peak {peak[mode]:.2f} GB"
        say(
            f"{mode:<7} {best[mode] * 1e3:8.1f} ms per step, saved for backward "
            f"{saved[mode] / 1e6:7.1f} MB{mem}"
        )
    speedup = best["concat"] / best["buffer"]
    say(f"largest difference of outputs and gradients between the modes: {diff:.2e}")
    say(f"node-input buffer speedup: {speedup:.2f}")
    if args.json:
        report = {
            "machine": info,
            "device": name,
            "k": args.k,
            "batch": args.batch,
            "images": [args.in_channels, args.image_size, args.image_size],
            "precision": tag,
            "ms_per_step": {m: round(best[m] * 1e3, 2) for m in MODES},
            "saved_mb": {m: round(saved[m] / 1e6, 1) for m in MODES},
            "peak_gb": peak,
            "largest_difference": diff,
            "speedup": round(speedup, 3),
        }
        print(json.dumps(report))


if __name__ == "__main__":
    run_main(main)
