"""ShrinkCNN-A (ReLU) and ShrinkCNN-B (Swish) against MobileNetV2-1.4 (and 1.0): do fewer MACs
mean faster?

For each network at 224x224 with 1001 classes it prints:

- parameters and MACs under the one convention of method §5 (:mod:`autoshrink.cost`,
  :mod:`autoshrink.cost_mobilenetv2`), and the activation traffic of one image (the bytes every
  convolution writes, fp32) -- a first-order proxy for memory-bound time;
- inference latency at batch 1 on this CPU: onnxruntime (the network exported to ONNX) and
  PyTorch eager, median of repeated single calls (:func:`autoshrink.latency.measure_module`);
- CPU training throughput (images/s of RMSProp steps at a small batch, fp32);
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

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.cost import count
from autoshrink.cost_mobilenetv2 import MobileNetV2Spec, count_mobilenetv2
from autoshrink.latency import LatencySettings, measure_module
from autoshrink.macros import shrinkcnn_imagenet
from autoshrink.nn.cnn import build_network
from autoshrink.nn.mobilenetv2 import MobileNetV2
from autoshrink.spaces.cells import published_cell
from autoshrink.training.optim import build_optimizer
from autoshrink.training.recipes import get_recipe

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


def train_images_per_s(
    model: nn.Module, batch: int, size: int, classes: int, device: str, steps: int
) -> float:
    """Images/s of RMSProp steps (the ShrinkCNN recipe's optimiser) on random data."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    model = model.to(dev).train()
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = build_optimizer(model, get_recipe("shrinkcnn-imagenet"), batch)
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float16

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=gpu):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if gpu:
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize(dev)
    return batch * steps / (time.perf_counter() - t0)


class Autocast(nn.Module):
    """``module`` in bf16 autocast and channels-last, as a GPU deployment runs it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.module(x.contiguous(memory_format=torch.channels_last))


def latency_ms(module: nn.Module, size: int, settings: LatencySettings) -> float:
    shape = (settings.batch, 3, size, size)
    return measure_module(module, [shape], settings, with_environment=False).median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1001)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for inference")
    ap.add_argument("--cpu-train-batch", type=int, default=8, help="0 skips CPU training")
    ap.add_argument("--cpu-train-steps", type=int, default=4)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--gpu-train-steps", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size, classes = args.image_size, args.classes
    gpu = torch.cuda.is_available()
    rows: dict[str, dict[str, float]] = {}
    for name, (model, params, macs) in networks(size, classes).items():
        torch.manual_seed(0)
        row: dict[str, float] = {"params_M": params / 1e6, "macs_M": macs / 1e6}
        row["act_MB"] = activation_bytes(model, size) / 2**20
        for backend in ("onnxruntime", "torch"):
            settings = LatencySettings(backend=backend, threads=args.threads, max_seconds=10.0)
            row[f"cpu_{backend}_ms"] = latency_ms(model, size, settings)
        if args.cpu_train_batch:
            row["cpu_train_img_s"] = train_images_per_s(
                model, args.cpu_train_batch, size, classes, "cpu", args.cpu_train_steps
            )
        if gpu:
            row["gpu_train_img_s"] = train_images_per_s(
                model, args.gpu_batch, size, classes, "cuda", args.gpu_train_steps
            )
            wrapped = Autocast(model.cuda())
            for batch in (1, args.gpu_batch):
                settings = LatencySettings(device="cuda", batch=batch, max_seconds=10.0)
                row[f"gpu_b{batch}_ms"] = latency_ms(wrapped, size, settings)
        rows[name] = row
        print(f"measured {name}", flush=True)
    report(rows, args, gpu)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=2)


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
        f"{args.threads} thread(s); CPU training batch {args.cpu_train_batch} fp32; {where}"
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
    main()
