"""Ops and bytes per training step of the batched engine against the eager loop: what a GPU
can give.

Two bounds on the speed-up of training K candidates at once, from a CPU run (no GPU needed):

- **Ops.** Where a GPU is bound by host-side dispatch and kernel launches, the ops a step
  issues bound the speed-up. This prints, for the complete 8-node cell and the released
  ShrinkCNN cell, the aten ops dispatched (views included: host work) and the kernel-like ops
  (innermost ops that are not views or allocations: about one launch each) of one step of the
  eager loop (one candidate) and of the engine (K candidates), and the ratio
  ``K * eager / engine`` each implies.
- **Bytes.** Where a GPU is bound by memory bandwidth, the bytes a step moves bound its time.
  This prints the bytes the step's kernel-like ops read and write, op by op (:class:`Traffic`),
  at the search's sizes (batch 128, 3x32x32, the proxy network at full width), and the time
  they take at ``--bandwidth`` bytes/s (default: an H200's 4.8 TB/s): no engine that runs
  these ops as separate kernels can take a step faster. It is a lower bound of the traffic of
  unfused kernels (a kernel that reads its input twice counts it once; caches are ignored).
  ``--cache`` also counts the bytes in tensors larger than a cache (an H200's L2 holds 50 MB),
  which no cache of that size can keep from one kernel to the next.

Estimates, not GPU measurements. With ``--device``, the script instead times each op of an
engine step on that device (between CUDA events on a GPU) and prints the bandwidth it reaches
with the bytes it moves: which ops keep a step from its bound.

    python benchmarks/bench_engine_ops.py [--k 10] [--bandwidth 4.8e12]   # about a minute
        [--cache 50e6]      # also the bytes no cache of that size can keep: 4 minutes
        [--device cuda]     # instead: each op's time and bandwidth on the GPU
        [--bf16]            # the engine under bfloat16 autocast
        [--quick]           # K = 3 (a --k given wins), tiny sizes: a smoke run
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from autoshrink.devices import local_device_argument
from autoshrink.graph import Cell
from autoshrink.nn import stacked_ops
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import published_cell, start_cell
from autoshrink.spaces.macros import MacroSpec, cifar_proxy
from autoshrink.training.classification import train_proxy
from autoshrink.training.proxy_settings import ProxyTraining
from bench_gpu_engine import device_seconds, prepared_epoch, synthetic
from machine import fill_sizes, print_machine, run_main
from traffic import NO_KERNEL, Traffic, cached_traffic, timed_traffic, traffic

#: The engine as it runs on CUDA (on the CPU, node inputs are concatenated by default).
ENGINE_OPTIONS = {"node_inputs": "buffer"}

#: Matrix products: on a GPU one library call each; on the CPU a strided ``out=`` (the 1x1
#: convolutions' layout) makes ``bmm`` loop over the batch with a ``select`` per matrix. What a
#: CPU matmul runs inside is not counted, the matmul counts as one kernel.
LIBRARY_CALLS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul"}


def _inside_library_call(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in LIBRARY_CALLS:
            return True
        parent = parent.cpu_parent
    return False


def _no_kernel(name: str) -> bool:
    return name.removeprefix("aten::") in NO_KERNEL


def op_counts(fn) -> np.ndarray:
    """``[aten ops dispatched, kernel-like ops]`` of ``fn``: every aten op (nested ones too:
    the host-side dispatch work), and the innermost ones that are not views or allocations
    (on a GPU, about one kernel launch each); a matrix product counts as one op of each kind
    (:data:`LIBRARY_CALLS`). A CPU profile, so it runs without a GPU."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
    aten = [e for e in prof.events() if e.name.startswith("aten::") and not _inside_library_call(e)]
    kernels = [
        e
        for e in aten
        if not _no_kernel(e.name)
        and (
            e.name in LIBRARY_CALLS or not any(c.name.startswith("aten::") for c in e.cpu_children)
        )
    ]
    return np.array([len(aten), len(kernels)], dtype=float)


def per_step(count: Callable[[Callable[[], Any]], Any], run: Callable[[int], Any]) -> Any:
    """``count`` (ops or bytes) of one training step: ``run(n)`` trains an epoch of ``n``
    steps; the difference of epochs of 2 and 1 steps, so set-up and validation cancel."""
    return count(lambda: run(2)) - count(lambda: run(1))


def eager_epoch(cell: Cell, spec: MacroSpec, settings: ProxyTraining) -> Callable[[int], None]:
    """``run(n)``: ``train_proxy`` on one candidate, one epoch of ``n`` steps."""

    def run(n: int) -> None:
        torch.manual_seed(0)
        model = build_network(cell, spec).to(memory_format=torch.channels_last)
        train = synthetic(n * settings.batch_size, spec, "cpu", 0)
        val = synthetic(8, spec, "cpu", 1)
        one = replace(settings, epochs=1)
        train_proxy(model, train, val, one, torch.Generator().manual_seed(0))

    return run


def engine_run(
    cell: Cell,
    spec: MacroSpec,
    settings: ProxyTraining,
    k: int,
    device: str = "cpu",
    bf16: bool = False,
):
    """``run(n)``: the engine on ``k`` copies of ``cell``, one epoch of ``n`` steps (``bf16``:
    under bfloat16 autocast); returns the epoch's seconds. The set-up (engine, data) is built
    first, outside a :class:`Traffic` count and the time: its host-side ops, timed on the
    clock rather than on the device, left a residue of several ms per "step" in the
    difference of two epochs (and two steps of its jitter made a step's wall time negative)."""
    one = replace(settings, epochs=1)
    options = {**ENGINE_OPTIONS, "bf16": bf16}

    def run(n: int) -> float:
        mode = _get_current_dispatch_mode()
        with mode.pause() if isinstance(mode, Traffic) else nullcontext():
            epoch = prepared_epoch(cell, spec, one, n, k, device, dict(options))
        with depthwise_as_on_cuda():
            return device_seconds(epoch, device)

    return run


@contextmanager
def depthwise_as_on_cuda() -> Iterator[None]:
    """Inside, a :class:`Traffic` count sees the engine's depthwise convolutions move what they
    move on CUDA. On the CPU, ``depthwise3x3`` first copies its input, a strided view of the
    node-input buffer, into the layout of ``F.conv2d`` (``to_nchw``); CUDA's Triton kernel reads
    the view in place. Those copies (4.1 GB of a complete-cell step at batch 128) are not
    counted."""
    original = stacked_ops.to_nchw

    def to_nchw(x: torch.Tensor) -> torch.Tensor:
        mode = _get_current_dispatch_mode()
        with mode.pause() if isinstance(mode, Traffic) else nullcontext():
            return original(x)

    stacked_ops.to_nchw = to_nchw
    try:
        yield
    finally:
        stacked_ops.to_nchw = original


def bytes_per_step(make: Callable[[ProxyTraining], Callable[[int], Any]], batch: int) -> Counter:
    """:class:`Traffic` of one step at ``batch`` images, by op, from steps at batches 8 and 16:
    a step's bytes are affine in the batch size (activations grow with it, weights and
    optimizer state do not), so two small batches give it exactly at any size."""
    small, large = (per_step(traffic, make(ProxyTraining(batch_size=b))) for b in (8, 16))
    ops = set(small) | set(large)
    return Counter({op: small[op] + (large[op] - small[op]) * (batch - 8) // 8 for op in ops})


def achieved_bandwidth(run: Callable[[int], Any]) -> list[tuple[str, float, float]]:
    """``(op, bytes, seconds)`` of one step of ``run``, the ops that take the time first: the
    bandwidth each op reaches (:class:`Traffic`, timed)."""
    run(2)  # warm-up: kernel selection, compilation, allocator
    moved, seconds = per_step(timed_traffic, run)
    ops = sorted(set(moved) | set(seconds), key=lambda op: -seconds[op])
    return [(op, float(moved[op]), seconds[op]) for op in ops]


def bound(moved: float, images: int, bandwidth: float) -> str:
    """The shortest time of a step that moves ``moved`` bytes at ``bandwidth`` bytes/s, and
    the most images/s it allows for ``images`` per step."""
    ms = moved / bandwidth * 1e3
    return f">= {ms:5.2f} ms, <= {images / ms * 1e3:8,.0f} img/s"


def print_op_counts(cells: dict[str, Cell], spec: MacroSpec, k: int) -> None:
    print(f"ops per training step (proxy network, K = {k}; CPU profile):")
    settings = ProxyTraining(batch_size=16)
    for label, cell in cells.items():
        eager = per_step(op_counts, eager_epoch(cell, spec, settings))
        engine = per_step(op_counts, engine_run(cell, spec, settings, k))
        for what, i in (("aten ops", 0), ("kernel-like ops", 1)):
            print(
                f"{label:<12} {what:<16} eager {eager[i]:6.0f} (1 candidate), engine "
                f"{engine[i]:6.0f} ({k} candidates): bound ratio {k * eager[i] / engine[i]:.1f}"
            )


def print_bytes(
    cells: dict[str, Cell], spec: MacroSpec, batch: int, k: int, bandwidth: float, bf16: bool
) -> None:
    for label, cell in cells.items():
        eager = bytes_per_step(lambda s, cell=cell: eager_epoch(cell, spec, s), batch)
        engine = bytes_per_step(lambda s, cell=cell: engine_run(cell, spec, s, k, bf16=bf16), batch)
        for what, moved, n in (("eager", eager, 1), ("engine", engine, k)):
            total = sum(moved.values())
            top = ", ".join(f"{op} {v / 1e9:.1f}" for op, v in moved.most_common(5))
            print(
                f"{label:<12} {what:<7} {total / 1e9:6.2f} GB ({n} candidate{'s' * (n > 1)}): "
                f"{bound(total, n * batch, bandwidth)}  [GB: {top}]"
            )


def print_bandwidths(label: str, run: Callable[[int], float]) -> None:
    """The step's wall time and the ops that take it, with the bandwidth each reaches."""
    rows = achieved_bandwidth(run)
    wall = (run(10) - run(2)) / 8
    ops = sum(seconds for _, _, seconds in rows)
    print(f"{label}: {wall * 1e3:.2f} ms per step, {ops * 1e3:.2f} ms of it in aten ops")
    for op, moved, seconds in rows[:15]:
        rate = f"{moved / seconds / 1e12:5.2f}" if seconds > 0 and moved else "    -"
        print(f"  {op:<40} {seconds * 1e3:7.2f} {moved / 1e9:7.2f} {rate}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's settings; ``k``: the ``--k`` given, else ``--quick``'s 3, else 10 (a
    ``--quick`` took K = 3 over a ``--k`` given, without a word)."""
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument(
        "--k", type=int, default=None, help="candidates in the engine (default 10; quick 3)"
    )
    p.add_argument(
        "--bandwidth", type=float, default=4.8e12, help="memory bandwidth, bytes/s (H200: 4.8e12)"
    )
    p.add_argument(
        "--device",
        default=None,
        type=local_device_argument,
        help="instead of the counts, time each op of an engine step on this device (e.g. "
        "cuda) at the search's sizes and print the bandwidth it reaches",
    )
    p.add_argument(
        "--cache",
        type=float,
        default=None,
        help="also count the bytes in tensors larger than this cache, bytes (H200 L2: 50e6); "
        "counted at the full batch, a few minutes on the CPU",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="the engine under bfloat16 autocast (the eager loop stays in float32)",
    )
    p.add_argument("--quick", action="store_true", help="K = 3 and tiny sizes: a smoke run")
    return fill_sizes(p.parse_args(argv), {"k": 3}, {"k": 10})


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    print_machine()
    k = args.k
    cells = {
        "complete-8": start_cell("cnn", 8, random.Random(0)),
        "shrinkcnn": published_cell("shrinkcnn"),
    }
    # the op count does not depend on image size, width or batch: small and quick
    small = cifar_proxy(image_size=8, width=0.25)
    spec, batch = (small, 16) if args.quick else (cifar_proxy(), 128)  # the search's sizes
    settings = ProxyTraining(batch_size=batch)
    if args.device is not None:  # the counts are the same on every device: only the times
        print(f"the engine's ops on {args.device}, a step of batch {batch}, K = {k}"
              f"{', bf16' * args.bf16} (op, ms, GB, TB/s):")  # fmt: skip
        for label, cell in cells.items():
            print_bandwidths(label, engine_run(cell, spec, settings, k, args.device, args.bf16))
        return
    print_op_counts(cells, small, k)
    print(
        f"\nbytes per training step (proxy network, batch {batch}, {spec.in_channels}x"
        f"{spec.image_size}x{spec.image_size}, K = {k}{'; the engine in bf16' * args.bf16}), "
        "and the step's time at "
        f"{args.bandwidth / 1e12:.1f} TB/s:"
    )
    print_bytes(cells, spec, batch, k, args.bandwidth, args.bf16)
    if args.cache is not None:
        print(f"\nof the engine's bytes, those in tensors larger than {args.cache / 1e6:g} MB:")
        for label, cell in cells.items():
            run = engine_run(cell, spec, settings, k, bf16=args.bf16)
            total, large = per_step(cached_traffic(args.cache), run)
            print(
                f"{label:<12} {large / 1e9:6.2f} GB of {total / 1e9:.2f} ({large / total:.0%}): "
                f"{bound(large, k * batch, args.bandwidth)}"
            )


if __name__ == "__main__":
    run_main(main)
