"""Ops per training step of the batched engine against the eager loop: what a GPU can give.

On a GPU the proxy networks are bound by host-side dispatch and kernel launches, not by
arithmetic, so the ops a training step issues bound the speed-up of training K candidates at
once. From a CPU profile (no GPU needed) this prints, for the complete 8-node cell and the
released ShrinkCNN cell, the aten ops dispatched (views included: host work) and the
kernel-like ops (innermost ops that are not views or allocations: about one launch each) of one
step of the eager loop (one candidate) and of the engine (K candidates), and the ratio
``K * eager / engine`` each implies. An estimate, not a GPU measurement.

    python benchmarks/bench_engine_ops.py [--k 10]        # about a minute on the CPU
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace

import numpy as np
import torch

from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import published_cell, start_cell
from autoshrink.spaces.macros import MacroSpec, cifar_proxy
from autoshrink.training.classification import ProxyTraining, train_proxy
from bench_gpu_engine import engine_epoch, synthetic

# Ops that only make views, read metadata or allocate: no kernel of their own on a GPU.
NO_KERNEL = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::permute",
    "aten::expand", "aten::expand_as", "aten::as_strided", "aten::t", "aten::transpose",
    "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::narrow",
    "aten::detach", "aten::alias", "aten::empty", "aten::empty_like", "aten::empty_strided",
    "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::unbind",
    "aten::split", "aten::chunk", "aten::view_as", "aten::result_type", "aten::set_",
}  # fmt: skip


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
        if e.name not in NO_KERNEL
        and (
            e.name in LIBRARY_CALLS or not any(c.name.startswith("aten::") for c in e.cpu_children)
        )
    ]
    return np.array([len(aten), len(kernels)], dtype=float)


def ops_per_step(
    cell: Cell, spec: MacroSpec, settings: ProxyTraining, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`op_counts` of one training step: the eager loop (one candidate) and the engine
    (K candidates); the difference of epochs of 4 and 2 steps, so set-up and validation cancel."""
    one = replace(settings, epochs=1)

    def eager(n: int) -> None:
        torch.manual_seed(0)
        model = build_network(cell, spec).to(memory_format=torch.channels_last)
        train = synthetic(n * settings.batch_size, spec, "cpu", 0)
        val = synthetic(8, spec, "cpu", 1)
        train_proxy(model, train, val, one, torch.Generator().manual_seed(0))

    def engine(n: int) -> None:
        engine_epoch(cell, spec, one, n, k, "cpu", {})

    def per_step(f) -> np.ndarray:
        return (op_counts(lambda: f(4)) - op_counts(lambda: f(2))) / 2

    return per_step(eager), per_step(engine)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=10, help="candidates in the engine (default 10)")
    args = p.parse_args()
    torch.set_num_threads(1)
    k = args.k
    # the op count does not depend on image size, width or batch: small and quick
    spec, settings = cifar_proxy(image_size=8, width=0.25), ProxyTraining(batch_size=16)
    print(f"ops per training step (proxy network, K = {k}; CPU profile):")
    for label, cell in (
        ("complete-8", start_cell("cnn", 8, random.Random(0))),
        ("shrinkcnn", published_cell("shrinkcnn")),
    ):
        eager, engine = ops_per_step(cell, spec, settings, k)
        for what, i in (("aten ops", 0), ("kernel-like ops", 1)):
            print(
                f"{label:<12} {what:<16} eager {eager[i]:6.0f} (1 candidate), engine "
                f"{engine[i]:6.0f} ({k} candidates): bound ratio {k * eager[i] / engine[i]:.1f}"
            )


if __name__ == "__main__":
    main()
