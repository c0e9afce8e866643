"""ShrinkCNN-A (ReLU) and ShrinkCNN-B (Swish) against MobileNetV2-1.4 (and 1.0): do fewer MACs
mean faster?

For each network at 224x224 with 1001 classes it prints:

- parameters and MACs under the one convention of method §5 (:mod:`autoshrink.cost.cells`,
  :mod:`autoshrink.cost.mobilenetv2`), and the activation traffic of one image (the bytes every
  convolution writes, fp32) -- a first-order proxy for memory-bound time;
- inference latency at batch 1 on this CPU: onnxruntime (the network exported to ONNX) and
  PyTorch eager, median (and 10th percentile) of single calls timed in interleaved rounds --
  every network in turn, again and again -- so a shared machine's changing load falls on all
  of them alike;
- CPU training throughput (images/s of RMSProp steps at a small batch, fp32, same threads,
  interleaved; denormal floats flushed to zero, as `autoshrink train` does on the CPU);
- where a CUDA GPU is present: training images/s at batch 256 (RMSProp step, bf16 autocast,
  channels-last) and inference latency at batch 1 and 256 on the same GPU.

It ends with the ratios against MobileNetV2-1.4 and a one-line answer per device.

    python benchmarks/bench_vs_mobilenetv2.py [--threads 1] [--cpu-train-batch 8]
        [--gpu-batch 256] [--image-size 224] [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.cost.cells import count
from autoshrink.cost.mobilenetv2 import MobileNetV2Spec, count_mobilenetv2
from autoshrink.devices import torch_threads
from autoshrink.hardware.latency import measure_module, onnx_bytes, ort_session
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.nn.cnn import build_network
from autoshrink.nn.mobilenetv2 import MobileNetV2
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import shrinkcnn_imagenet
from autoshrink.training.optim import build_optimizer
from autoshrink.training.recipes import get_recipe
from machine import print_machine, run_main

BASELINE = "MobileNetV2-1.4"


def networks(size: int, classes: int) -> dict[str, tuple[nn.Module, int, int]]:
    """name -> (module, params, MACs) by the §5 convention."""
    shrink = published_cell("shrinkcnn")
    spec = shrinkcnn_imagenet(image_size=size, num_classes=classes)
    out: dict[str, tuple[nn.Module, int, int]] = {}
    for name, act in (("ShrinkCNN-A", "relu"), ("ShrinkCNN-B", "swish")):
        cell = dataclasses.replace(shrink, activation=act)
        c = count(cell, spec)
        out[name] = (build_network(cell, spec), c.params, c.macs)
    for width in (1.4, 1.0):
        mspec = MobileNetV2Spec(width=width, image_size=size, num_classes=classes)
        c = count_mobilenetv2(mspec)
        out[f"MobileNetV2-{width}"] = (MobileNetV2(mspec), c.params, c.macs)
    return out


def activation_bytes(model: nn.Module, size: int) -> int:
    """fp32 bytes written by every convolution for one image."""
    total = 0

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * 4

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def train_step(
    model: nn.Module, batch: int, size: int, classes: int, device: str
) -> Callable[[], None]:
    """One RMSProp step (the ShrinkCNN recipe's optimiser) on a fixed random batch; on a GPU
    in bf16 autocast and channels-last, and synchronised so the time is the GPU's."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    layout = torch.channels_last if gpu else torch.contiguous_format
    model = model.to(dev, memory_format=layout).train()
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=layout)
    y = torch.randint(0, classes, (batch,), device=dev)
    opt = build_optimizer(model, get_recipe("shrinkcnn-imagenet"), batch)
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float16

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=gpu):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if gpu:
            torch.cuda.synchronize(dev)

    return step


def interleaved(
    fns: dict[str, Callable[[], object]], *, rounds: int, calls: int, warmup: int = 2
) -> dict[str, np.ndarray]:
    """Milliseconds per call of every function, timed in alternating rounds (each round runs
    every function ``calls`` times), so a machine whose load changes over the run slows all
    of them alike instead of whichever happened to run during a busy minute."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                fn()
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
    return {name: np.asarray(v) for name, v in samples.items()}


def cpu_inference(
    models: dict[str, nn.Module], size: int, threads: int, rounds: int
) -> dict[str, dict[str, np.ndarray]]:
    """Batch-1 CPU latency samples (ms) per backend and network."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    for m in models.values():
        m.eval()
    out: dict[str, dict[str, np.ndarray]] = {}
    sessions = {n: ort_session(onnx_bytes(m, [x]), threads=threads) for n, m in models.items()}
    feeds = {"input": x.numpy()}
    out["onnxruntime"] = interleaved(
        {n: (lambda s=s: s.run(None, feeds)) for n, s in sessions.items()},
        rounds=rounds,
        calls=3,
    )
    with torch_threads(threads), torch.inference_mode():
        fns = {n: (lambda m=m: m(x)) for n, m in models.items()}
        out["torch"] = interleaved(fns, rounds=rounds, calls=3)
    return out


class Autocast(nn.Module):
    """``module`` in bf16 autocast and channels-last, as a GPU deployment runs it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.module(x.contiguous(memory_format=torch.channels_last))


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1001)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch, onnxruntime)")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved CPU latency rounds")
    ap.add_argument("--cpu-train-batch", type=int, default=8, help="0 skips CPU training")
    ap.add_argument("--cpu-train-steps", type=int, default=8, help="interleaved rounds")
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--gpu-train-steps", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    info = print_machine()
    size, classes = args.image_size, args.classes
    gpu = torch.cuda.is_available()
    # Denormal floats: without flushing them, a CPU training step of ShrinkCNN-A at random
    # initialisation ran ~20x slower (21 s instead of 1 s, batch 8) -- an artefact, not the net.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    nets = networks(size, classes)
    models = {name: m for name, (m, _, _) in nets.items()}
    rows: dict[str, dict[str, float]] = {
        name: {"params_M": p / 1e6, "macs_M": c / 1e6, "act_MB": activation_bytes(m, size) / 2**20}
        for name, (m, p, c) in nets.items()
    }
    for backend, per_net in cpu_inference(models, size, args.threads, args.rounds).items():
        for name, ms in per_net.items():
            rows[name][f"cpu_{backend}_ms"] = float(np.median(ms))
            rows[name][f"cpu_{backend}_p10_ms"] = float(np.percentile(ms, 10))
    print("measured CPU inference", flush=True)
    if args.cpu_train_batch:
        b = args.cpu_train_batch
        steps = {n: train_step(m, b, size, classes, "cpu") for n, m in models.items()}
        with torch_threads(args.threads):
            timed = interleaved(steps, rounds=args.cpu_train_steps, calls=1)
        for name, ms in timed.items():
            rows[name]["cpu_train_img_s"] = b / float(np.median(ms)) * 1e3
        print("measured CPU training", flush=True)
    if gpu:
        b = args.gpu_batch
        for name, model in models.items():  # one at a time: the GPU's memory
            step = {name: train_step(model, b, size, classes, "cuda")}
            ms = interleaved(step, rounds=args.gpu_train_steps, calls=1, warmup=3)[name]
            rows[name]["gpu_train_img_s"] = b / float(np.median(ms)) * 1e3
            wrapped = Autocast(model.cuda().eval())
            for batch in (1, b):
                settings = LatencySettings(device="cuda", batch=batch, max_seconds=10.0)
                shape = [(batch, 3, size, size)]
                result = measure_module(wrapped, shape, settings, with_environment=False)
                rows[name][f"gpu_b{batch}_ms"] = result.median_ms
            model.cpu()
            torch.cuda.empty_cache()
        print("measured GPU", flush=True)
    report(rows, args, gpu)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "settings": vars(args), "rows": rows}, f, indent=2)


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace, gpu: bool) -> None:
    cols = list(next(iter(rows.values())))
    print()
    where = (
        f"{torch.cuda.get_device_name(0)}: batch {args.gpu_batch}, bf16, channels-last"
        if gpu
        else "no CUDA GPU here: GPU columns not measured"
    )
    print(
        f"{args.image_size}x{args.image_size}, {args.classes} classes; CPU inference "
        f"and training {args.threads} thread(s); CPU training batch {args.cpu_train_batch} fp32; "
        f"{where}"
    )
    print("| network | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.4g}" for c in cols) + " |")
    base = rows[BASELINE]
    print(f"\nratios against {BASELINE} (< 1: less / faster):")
    for name in ("ShrinkCNN-A", "ShrinkCNN-B"):
        r = rows[name]
        parts = [f"{c} {r[c] / base[c]:.2f}" for c in ("macs_M", "params_M", "act_MB")]
        parts += [f"{c} {r[c] / base[c]:.2f}" for c in cols if c.endswith("_ms")]
        parts += [f"{c} {base[c] / r[c]:.2f} (time/img)" for c in cols if c.endswith("_img_s")]
        print(f"  {name}: " + ", ".join(parts))
    print("\ndo fewer MACs mean faster? (ShrinkCNN-A vs MobileNetV2-1.4)")
    a = rows["ShrinkCNN-A"]
    for c in cols:
        if c.endswith("_ms") or c.endswith("_img_s"):
            faster = a[c] < base[c] if c.endswith("_ms") else a[c] > base[c]
            ratio = a[c] / base[c] if c.endswith("_ms") else base[c] / a[c]
            print(
                f"  {c}: {'yes' if faster else 'no'} ({ratio:.2f}x the time with "
                f"{a['macs_M'] / base['macs_M']:.2f}x the MACs)"
            )


if __name__ == "__main__":
    run_main(main)
