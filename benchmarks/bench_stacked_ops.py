"""The batched engine's own ops against the plain PyTorch they replace, on one device.

For one training step of the complete 8-node cell's stacked network (K = 10, batch 128,
3x32x32 unless told otherwise) it records the shapes of every per-candidate 1x1 convolution
(:func:`autoshrink.nn.stacked_ops.pointwise`) and every depthwise 3x3 the step runs, then
times, forward + backward, summed over those calls:

- ``pointwise``: the engine's matmuls that read and write the ``[N, K, C]`` layout in place
  (weight gradients split into row chunks on CUDA), against the composition it replaced:
  ``bmm`` on transposed views, autograd's own backward, transposed copies in and out;
- the stem (K grouped 3x3 convolutions) against im2col + ``pointwise``, first call and best;
- the engine's depthwise 3x3 on each CUDA backend (``cudnn``: cuDNN on the channels-last
  view; ``torch``: PyTorch's kernels on an NCHW copy; ``triton``, the default where Triton is
  installed), on shapes the process has not seen: the first call (the set-up new candidate
  widths cost) and the best of the next.

    python benchmarks/bench_stacked_ops.py [--device cuda] [--k 10] [--batch 128]
        [--precision auto|fp32|bf16] [--in-channels 3 --image-size 32] [--json] [--quick]

Prints a table (or one JSON object with ``--json``); the figures are the best of 5 repetitions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from unittest import mock

import torch
from torch.nn import functional as F

from autoshrink.devices import local_device_argument
from autoshrink.executors.factory import PRECISIONS
from autoshrink.nn import stacked_ops
from autoshrink.nn.batched import build_batched
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.batched import tf32_matmuls
from bench_gpu_engine import sync
from machine import fill_sizes, print_machine, run_main

REPEATS = 5


def composed_pointwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The plain-PyTorch baseline: ``bmm`` over transposed views, autograd's backward."""
    *lead, k, c = x.shape
    y = torch.bmm(x.reshape(-1, k, c).transpose(0, 1), w.transpose(1, 2))  # [K, N, O]
    return y.transpose(0, 1).reshape(*lead, k, -1)


def record_shapes(args: argparse.Namespace) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """The (N, K, C, O) of every pointwise call and the (B, K*C, H, W) of every depthwise
    3x3 in one forward pass of the complete cell's stacked network."""
    spec = cifar_proxy(in_channels=args.in_channels, image_size=args.image_size)
    cell = start_cell("cnn", 8, random.Random(0))
    engine = build_batched(cell, spec, [cell] * args.k, list(range(args.k)))
    pointwise_shapes: list[tuple[int, ...]] = []
    depthwise_shapes: list[tuple[int, ...]] = []
    real_pointwise, real_conv = stacked_ops._Pointwise.apply, F.conv2d

    def pointwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        pointwise_shapes.append((*x.shape, w.shape[1]))
        return real_pointwise(x, w)

    def conv2d(x: torch.Tensor, w: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        if w.shape[1] == 1 and kw.get("groups", 1) == w.shape[0]:
            depthwise_shapes.append(tuple(x.shape))
        return real_conv(x, w, *a, **kw)

    x = torch.randn(2, spec.image_size, spec.image_size, args.k, spec.in_channels)
    with (
        mock.patch.object(stacked_ops._Pointwise, "apply", pointwise),
        mock.patch.object(F, "conv2d", conv2d),
        torch.no_grad(),
    ):
        engine(x)
    scale = args.batch // 2  # the recording ran a batch of 2
    pointwise_shapes = [(n * scale, k, c, o) for n, k, c, o in pointwise_shapes]
    depthwise_shapes = [(args.batch, *rest) for _, *rest in depthwise_shapes]
    return pointwise_shapes, depthwise_shapes


def timed(fn: Callable[[], None], device: str) -> tuple[float, float]:
    """The first call of ``fn`` (set-up included) and the fastest of :data:`REPEATS` more, ms."""
    times = []
    for _ in range(REPEATS + 1):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return times[0], min(times[1:])


def pointwise_ms(
    impl: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shapes: list[tuple[int, ...]],
    args: argparse.Namespace,
) -> float:
    """Forward + backward of ``impl`` over all ``shapes``, in ms."""
    dev = args.device
    tensors = []
    for n, k, c, o in shapes:
        x = torch.randn(n, k, c, device=dev, requires_grad=True)
        w = torch.randn(k, o, c, device=dev, requires_grad=True)
        tensors.append((x, w, torch.randn(n, k, o, device=dev)))

    def step() -> None:
        with _precision(args):
            for x, w, g in tensors:
                impl(x, w).backward(g)

    return timed(step, dev)[1]


def depthwise_ms(
    shapes: list[tuple[int, ...]], args: argparse.Namespace, backend: str
) -> tuple[float, float]:
    """Forward + backward of the engine's depthwise 3x3 convolutions
    (:func:`~autoshrink.nn.stacked_ops.depthwise3x3` with ``backend``) on ``[B, K*C, H, W]``
    inputs: the first call (set-up included) and the best of the next, summed over ``shapes``,
    in ms."""
    calls = []
    for b, kc, h, w in shapes:
        x = torch.randn(b, h, w, args.k, kc // args.k, device=args.device, requires_grad=True)
        calls.append((x, torch.randn(kc, 1, 3, 3, device=args.device, requires_grad=True)))

    def step() -> None:
        with _precision(args):
            for x, w in calls:
                y = stacked_ops.depthwise3x3(x, w, backend)
                y.backward(torch.ones_like(y))

    return timed(step, args.device)


def stem_ms(args: argparse.Namespace, im2col: bool) -> tuple[float, float]:
    """Forward + weight gradient of the stacked stem (3x3, stride 1, 32 channels), in ms: one
    grouped convolution (``groups = K``, the engine's), or im2col + :func:`pointwise`: first
    call and best."""
    dev, k, c, size = args.device, args.k, args.in_channels, args.image_size
    x = torch.randn(args.batch, size, size, k, c, device=dev)
    w = torch.randn(k, 32, c, 3, 3, device=dev, requires_grad=True)

    def step() -> None:
        with _precision(args):
            if im2col:
                cols = F.unfold(stacked_ops.to_nchw(x), 3, padding=1)  # [B, K*C*9, H*W]
                cols = cols.view(args.batch, k, c * 9, size, size).permute(0, 3, 4, 1, 2)
                y = stacked_ops.pointwise(cols, w.reshape(k, 32, c * 9))
            else:
                y = F.conv2d(
                    stacked_ops.to_nchw(x), w.reshape(k * 32, c, 3, 3), padding=1, groups=k
                )
            y.sum().backward()

    return timed(step, dev)


def _precision(args: argparse.Namespace) -> ExitStack:
    """The engine's precision settings for ``args.precision`` on ``args.device``, entered."""
    bf16, tf32 = PRECISIONS[args.precision]["bf16"], PRECISIONS[args.precision]["tf32"]
    stack = ExitStack()
    stack.enter_context(tf32_matmuls(tf32))
    stack.enter_context(torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=bf16))
    return stack


#: The sizes of a run, and of a ``--quick`` one: what the flags not given take.
SIZES = {"k": 10, "batch": 128, "image_size": 32}
QUICK = {"k": 4, "batch": 16, "image_size": 16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's settings: the sizes given, else ``--quick``'s or the defaults (a
    ``--quick`` took K = 4 and batch 16 over a ``--k`` or ``--batch`` given, without a word)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", type=local_device_argument)
    parser.add_argument("--k", type=int, default=None, help="candidates (default 10; quick 4)")
    parser.add_argument("--batch", type=int, default=None, help="(default 128; quick 16)")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None, help="(default 32; quick 16)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="K = 4, batch 16, 16x16 images")
    return fill_sizes(parser.parse_args(argv), QUICK, SIZES)


def main() -> None:
    args = parse_args()
    info = print_machine(sys.stderr if args.json else None)
    pw_shapes, dw_shapes = record_shapes(args)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else "cpu",
        "precision": args.precision,
        "pointwise_calls": len(pw_shapes),
        "composed_pointwise_ms": pointwise_ms(composed_pointwise, pw_shapes, args),
        "engine_pointwise_ms": pointwise_ms(stacked_ops.pointwise, pw_shapes, args),
        "depthwise_calls": len(dw_shapes),
    }
    result["pointwise_speedup"] = result["composed_pointwise_ms"] / result["engine_pointwise_ms"]
    for name, im2col in (("conv", False), ("im2col", True)):
        result[f"stem_{name}_first_ms"], result[f"stem_{name}_ms"] = stem_ms(args, im2col)
    backends = ["cudnn", "torch"]  # on the CPU both run oneDNN's kernels
    if args.device.startswith("cuda") and importlib.util.find_spec("triton") is not None:
        backends.append("triton")
    for extra, backend in enumerate(backends, start=1):
        # the step's depthwise shapes, each a few channels per candidate wider than any seen
        # yet, so that the first call pays the set-up of new shapes
        shapes = [(b, kc + args.k * extra, h, w) for b, kc, h, w in dw_shapes]
        first, best = depthwise_ms(shapes, args, backend)
        result[f"depthwise_{backend}_first_ms"], result[f"depthwise_{backend}_ms"] = first, best
    if args.json:
        print(json.dumps({"machine": info, **result}))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    run_main(main)
