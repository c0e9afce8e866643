"""Candidate-training throughput of the batched engine against the plain eager loop, in one run.

For the complete 8-node cell of a search (seed 0) and the released ShrinkCNN cell it prints the
training images/s of the eager loop (``train_proxy`` on one ``build_network`` candidate, as the
one-by-one evaluator trains it) and the aggregate images/s of the batched engine
(``train_batched`` on K candidates of that cell at once, each with its own seed and data order),
both on the same synthetic data on the same device, with their ratio and the engine's peak GPU
memory. With ``--search-data DIR`` it then runs a full-protocol AutoShrink search (N = 8,
K = 10, 500 images per class, 1,000 validation images, <= 20 epochs with the early stops) on
Fashion-MNIST (the IDX files in DIR, 28x28x1 as is) with the batched executor, and prints its
wall time and peak GPU memory.

    python benchmarks/bench_gpu_engine.py [--device cuda] [--quick] [--json] [--precision P]
        [--cuda-graph] [--search-data DIR] [--out RUN_DIR] [--time-limit SECONDS] [--no-table]
        [--profile] [--check] [--compile]

``--quick`` shrinks everything (K = 4, batch 32, 8x8 images, half width, a 4-node search on
a few images) so that ``--device cpu --quick`` runs in well under a minute. ``--json`` prints
one JSON object (``baseline_img_s`` and ``engine_img_s`` are the complete cell's figures); the
human-readable lines then go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autoshrink.devices import is_cuda, local_device_argument
from autoshrink.executors.factory import PRECISIONS
from autoshrink.graph import Cell
from autoshrink.nn.batched import BatchedCNN, build_batched, union_cell
from autoshrink.nn.cnn import build_network
from autoshrink.nn.node_states import NODE_INPUTS, resolve_node_inputs
from autoshrink.nn.stacked_ops import BN_BACKENDS, DEPTHWISE_BACKENDS, resolve_depthwise
from autoshrink.spaces.cells import published_cell, start_cell
from autoshrink.spaces.macros import MacroSpec, cifar_proxy
from autoshrink.training.batched import train_batched
from autoshrink.training.classification import train_proxy
from autoshrink.training.proxy_settings import ProxyTraining
from engine_search import search
from machine import count, print_machine, run_main


def synthetic(n: int, spec: MacroSpec, device: str, seed: int) -> tuple[torch.Tensor, ...]:
    """``n`` random images (channels-last, as the evaluator keeps them) and labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, spec.in_channels, spec.image_size, spec.image_size, generator=g)
    y = torch.randint(0, spec.num_classes, (n,), generator=g)
    return x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)


#: Timed repetitions of each measurement; the fastest counts (as ``timeit`` does).
REPEATS = 3


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_seconds(run: Callable[[], object], device: str) -> float:
    """Wall seconds of ``run()`` with the device's queued work finished before and after."""
    sync(device)
    begin = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - begin


def eager_rate(
    cell: Cell, spec: MacroSpec, settings: ProxyTraining, steps: int, device: str, warmup: int
) -> float:
    """Images/s of ``train_proxy`` on one candidate (one epoch of ``steps`` batches)."""
    val = synthetic(settings.batch_size, spec, device, 1)

    def run(n_steps: int) -> float:
        torch.manual_seed(0)
        model = build_network(cell, spec).to(device, memory_format=torch.channels_last)
        train = synthetic(n_steps * settings.batch_size, spec, device, 0)
        gen = torch.Generator().manual_seed(0)
        return device_seconds(lambda: train_proxy(model, train, val, settings, gen), device)

    run(warmup)  # kernel selection, allocator, first-call costs
    return steps * settings.batch_size / min(run(steps) for _ in range(REPEATS))


def stacked_engine(
    parent: Cell,
    spec: MacroSpec,
    cells: list[Cell],
    seeds: list[int],
    options: dict[str, Any],
) -> tuple[BatchedCNN, dict[str, Any]]:
    """The stacked network of ``cells`` (``build_batched``, with ``options['depthwise']``,
    ``options['bn']`` and ``options['node_inputs']``) and the rest of ``options``: the
    ``train_batched`` keywords."""
    rest = dict(options)
    defaults = {"depthwise": "auto", "bn": "torch", "node_inputs": "auto"}
    built = {key: rest.pop(key, default) for key, default in defaults.items()}
    return build_batched(parent, spec, cells, seeds, **built), rest


def prepared_epoch(
    cell: Cell,
    spec: MacroSpec,
    settings: ProxyTraining,
    n_steps: int,
    k: int,
    device: str,
    options: dict[str, Any],
) -> Callable[[], None]:
    """One ``train_batched`` epoch of ``n_steps`` batches on ``k`` copies of ``cell``, set up
    (engine on ``device``, data) and ready to run (``options``: ``depthwise`` of the engine,
    ``bf16``, ``tf32``, ``cuda_graph`` of ``train_batched``)."""
    engine, options = stacked_engine(cell, spec, [cell] * k, list(range(k)), options)
    engine = engine.to(device)
    if options.pop("compile", False):  # every timed step is full-size: one graph per mode
        engine = torch.compile(engine, dynamic=False)
    train = synthetic(n_steps * settings.batch_size, spec, device, 0)
    val = synthetic(settings.batch_size, spec, device, 1)
    gens = [torch.Generator().manual_seed(s) for s in range(k)]

    def run() -> None:
        for _ in train_batched(engine, train, val, settings, gens, **options):
            pass

    return run


def engine_epoch(*epoch: Any) -> float:
    """Seconds of one ``train_batched`` epoch; ``epoch``: the arguments of
    :func:`prepared_epoch` (``cell, spec, settings, n_steps, k, device, options``). The engine
    and its data are built before the clock starts, as :func:`eager_rate`'s model and data
    (timed with them, the set-up cost the engine about a fifth of its rate on the CPU)."""
    run = prepared_epoch(*epoch)
    return device_seconds(run, epoch[5])


def engine_rate(
    cell: Cell,
    spec: MacroSpec,
    settings: ProxyTraining,
    steps: int,
    warmup: int,
    k: int,
    device: str,
    options: dict[str, Any],
) -> tuple[float, float | None]:
    """Aggregate images/s of ``train_batched`` on ``k`` candidates, and its peak GPU memory (GB)."""
    engine_epoch(cell, spec, settings, warmup, k, device, options)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = min(
        engine_epoch(cell, spec, settings, steps, k, device, options) for _ in range(REPEATS)
    )
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None
    return k * steps * settings.batch_size / seconds, peak


def new_shape_cost(
    cell: Cell,
    spec: MacroSpec,
    settings: ProxyTraining,
    steps: int,
    k: int,
    device: str,
    options: dict[str, Any],
) -> float:
    """Seconds the first epoch with ``k - 1`` stacked candidates (shapes not seen yet in this
    process) takes beyond the next one: the set-up a compaction of the stacks costs; 0 where
    the first was not the slower (no set-up to measure: the CPU's, within its noise)."""
    cold, warm = (engine_epoch(cell, spec, settings, steps, k - 1, device, options) for _ in "ab")
    return max(0.0, cold - warm)


def profile_engine(
    cell: Cell,
    spec: MacroSpec,
    settings: ProxyTraining,
    k: int,
    device: str,
    options: dict[str, Any],
) -> str:
    """The operators that take the time in an epoch of 3 engine steps and its validation
    (torch profiler table; the engine's set-up and its copy to the device are not profiled)."""
    engine_epoch(cell, spec, settings, 2, k, device, options)  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    run = prepared_epoch(cell, spec, settings, 3, k, device, options)
    sync(device)
    with torch.profiler.profile(activities=activities) as prof:
        run()
        sync(device)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=30)


def device_check(device: str, say) -> bool:
    """Float64 equivalence on ``device``: engine vs separately built networks (one epoch, then
    a second with early stops off), for the eager engine and, on CUDA, the engine replayed from
    CUDA graphs; True when every difference is within 1e-9. Runs with float64 as the default
    dtype: a capturable Adam (the graph path's) keeps its step count in the default dtype and
    computes its bias corrections in it (in float32, 1 - 0.999 is off by 5e-5)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _device_check(device, say)
    finally:
        torch.set_default_dtype(before)


def _device_check(device: str, say) -> bool:
    spec = cifar_proxy(image_size=16, width=0.25)  # 16x16: CUDA splits weight-gradient rows
    parent = start_cell("cnn", 8, random.Random(0))
    cells = [parent.remove_edge(e) for e in parent.edges[::7]]
    cells.append(Cell("cnn", parent.ops, [(0, 3), (0, 5)], parent.activation))
    seeds = list(range(len(cells)))
    settings = ProxyTraining(epochs=2, batch_size=32, min_accuracy=0.0, overfit_ratio=1e9)
    train, val = (synthetic(n, spec, device, s) for n, s in ((80, 0), (32, 1)))  # 2.5 batches
    train, val = ((x.double(), y) for x, y in (train, val))
    refs = []
    for cell, seed in zip(cells, seeds, strict=True):
        torch.manual_seed(seed)
        net = build_network(cell, spec).to(device).double()
        refs.append(train_proxy(net, train, val, settings, torch.Generator().manual_seed(seed)))
    default = used_depthwise("auto", device)
    inputs = resolve_node_inputs("auto", torch.device(device))
    other = "concat" if inputs == "buffer" else "buffer"
    variants: list[tuple[str, dict[str, Any]]] = [
        (f"engine, {default} depthwise, {inputs} node inputs", {}),
        (f"engine, {other} node inputs", {"node_inputs": other}),
    ]
    if device.startswith("cuda"):
        variants.append(("engine in CUDA graphs", {"cuda_graph": True}))
        variants.append(("engine, batch norm fused in Triton", {"bn": "triton"}))
        variants += [
            (f"engine, {other} depthwise", {"depthwise": other})
            for other in ("torch", "cudnn")
            if other != default
        ]
    ok = True
    for label, options in variants:
        engine, options = stacked_engine(union_cell(cells), spec, cells, seeds, options)
        engine = engine.to(device).double()
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        try:
            outs = dict(train_batched(engine, train, val, settings, gens, **options))
        except Exception as err:  # e.g. a kernel that does not compile: report, go on
            say(f"equivalence on {device}, {label}: FAIL ({type(err).__name__}: {err})")
            ok = False
            continue
        worst = 0.0
        for k, ref in enumerate(refs):
            for mine, theirs in zip(outs[k].history, ref.history, strict=True):
                worst = max(worst, *(abs(mine[key] - theirs[key]) for key in theirs))
            worst = max(worst, abs(len(outs[k].history) - len(ref.history)))
        passed = worst <= 1e-9
        ok = ok and passed
        say(
            f"equivalence on {device}, {label} (float64, {len(cells)} candidates, 2 epochs): "
            f"max |diff| {worst:.2e} -> {'PASS' if passed else 'FAIL'}"
        )
    return ok


def used_depthwise(backend: str, device: str) -> str:
    """The depthwise kernels ``backend`` runs on ``device``: off CUDA always PyTorch's
    (``stacked_ops.depthwise3x3`` chooses kernels on CUDA tensors only)."""
    return resolve_depthwise(backend) if device.startswith("cuda") else "torch"


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the command line chose (the batched evaluator's keywords, and
    ``compile`` where asked for), as the tables take them: CUDA graphs off unless asked for."""
    return {
        **PRECISIONS[args.precision],
        "cuda_graph": bool(args.cuda_graph),
        "depthwise": args.depthwise,
        "bn": args.bn,
        "node_inputs": args.node_inputs,
        **({"compile": True} if args.compile else {}),
    }


def precision_tag(args: argparse.Namespace) -> str:
    """``bf16``, ``tf32`` or ``fp32``: the engine's arithmetic on a GPU."""
    if args.precision == "auto":
        return "tf32" if is_cuda(args.device) else "fp32"
    return args.precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", type=local_device_argument)
    p.add_argument("--quick", action="store_true", help="tiny settings (CPU: well under 1 min)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="auto",
        help="the engine's arithmetic, as autoshrink search --precision: auto = float32 with "
        "TF32 matmuls on CUDA; fp32 = no TF32; bf16 = bfloat16 autocast",
    )
    p.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the engine replays each training step from a CUDA graph (CUDA only); default: "
        "off in the tables, the engine's own default in the search (a stack of one on CUDA)",
    )
    p.add_argument(
        "--depthwise",
        choices=DEPTHWISE_BACKENDS,
        default="auto",
        help="the engine's CUDA kernels for depthwise 3x3 convolutions (auto: triton where "
        "installed, else torch)",
    )
    p.add_argument(
        "--bn",
        choices=BN_BACKENDS,
        default="torch",
        help="the engine's batch norm + activation (torch: F.batch_norm then the activation; "
        "triton: fused in Triton, less memory, slower on an H200)",
    )
    p.add_argument(
        "--node-inputs",
        choices=NODE_INPUTS,
        default="auto",
        help="how the engine's nodes read their predecessors' outputs (auto: views of one "
        "buffer on CUDA, concatenated on the CPU; concat: torch.cat, the buffer's baseline)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="the tables' engine through torch.compile (an experiment: the search's engine "
        "changes shape as candidates stop and is never compiled)",
    )
    p.add_argument("--k", type=count, default=None, help="candidates at once (default 10; quick 4)")
    p.add_argument("--steps", type=count, default=None, help="timed batches (default 40; quick 3)")
    p.add_argument(
        "--threads", type=count, default=None, help="torch CPU threads (--quick on cpu: 1)"
    )
    p.add_argument(
        "--in-channels", type=int, default=3, help="table images' channels (Fashion-MNIST: 1)"
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="table images' size (default 32; quick 8)"
    )
    p.add_argument(
        "--verbose", action="store_true", help="log every engine epoch (time, candidates)"
    )
    p.add_argument("--check", action="store_true", help="float64 equivalence check, then exit")
    p.add_argument(
        "--profile", action="store_true", help="also print the profiler table of engine steps"
    )
    p.add_argument("--search-data", type=Path, default=None, help="Fashion-MNIST IDX folder")
    p.add_argument("--out", type=Path, default=None, help="search run folder (default: a temp dir)")
    p.add_argument("--time-limit", type=float, default=None, help="stop the search after S s")
    p.add_argument(
        "--no-table", action="store_true", help="skip the throughput table (e.g. search only)"
    )
    args = p.parse_args()
    if args.cuda_graph and not is_cuda(args.device):
        p.error("--cuda-graph needs --device cuda")
    if args.compile and args.search_data is not None:
        p.error("--compile times the tables only: drop --search-data")
    if args.compile and args.cuda_graph:
        p.error("--compile and --cuda-graph together are not supported: choose one")
    if args.threads or (args.quick and args.device == "cpu"):
        torch.set_num_threads(args.threads or 1)  # one thread: stable figures on a busy box
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("autoshrink.training.batched").setLevel(logging.DEBUG)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    info = print_machine(sys.stderr if args.json else None)
    if args.check:
        sys.exit(0 if device_check(args.device, say) else 1)
    k = args.k or (4 if args.quick else 10)
    steps = args.steps or (3 if args.quick else 40)
    geometry = {"in_channels": args.in_channels, "image_size": args.image_size}
    if args.quick:
        spec = cifar_proxy(**{**geometry, "image_size": args.image_size or 8}, width=0.5)
        settings = ProxyTraining(epochs=1, batch_size=32)
    else:
        spec = cifar_proxy(**{**geometry, "image_size": args.image_size or 32})
        settings = ProxyTraining(epochs=1)
    name = torch.cuda.get_device_name() if is_cuda(args.device) else "cpu"
    depthwise = used_depthwise(args.depthwise, args.device)  # the kernels that run here
    node_inputs = resolve_node_inputs(args.node_inputs, torch.device(args.device))
    table = (
        ""
        if args.no_table
        else f"K = {k}, batch {settings.batch_size}, "
        f"{spec.in_channels}x{spec.image_size}x{spec.image_size} images, "
        f"{steps} timed batches, best of {REPEATS}; "
    )
    say(
        f"device {name}; {table}engine {precision_tag(args)}"
        f"{' in CUDA graphs' if args.cuda_graph else ''}"
        f"{' through torch.compile' if args.compile else ''}, "
        f"depthwise {depthwise}, {node_inputs} node inputs"
    )
    rows = []
    cells = (
        ()
        if args.no_table
        else (
            ("complete-8", start_cell("cnn", 8, random.Random(0))),
            ("shrinkcnn", published_cell("shrinkcnn")),
        )
    )
    if cells:
        say(
            f"{'cell':<12}{'eager img/s':>14}{'engine img/s':>15}{'ratio':>8}"
            f"{'peak GPU mem':>15}{'new K, s':>13}"
        )
    for label, cell in cells:
        warmup = 1 if args.quick else 5
        base = eager_rate(cell, spec, settings, steps, args.device, warmup)
        rate, peak = engine_rate(
            cell, spec, settings, steps, warmup, k, args.device, engine_options(args)
        )
        rows.append(
            {
                "cell": label,
                "baseline_img_s": round(base, 1),
                "engine_img_s": round(rate, 1),
                "ratio": round(rate / base, 2),
                "engine_peak_gpu_gb": None if peak is None else round(peak, 2),
            }
        )
        cost = None
        if k >= 2 and not args.compile:  # compiled, a new K is a new compilation: minutes
            opts = engine_options(args)
            cost = round(new_shape_cost(cell, spec, settings, steps, k, args.device, opts), 3)
        rows[-1]["new_shape_s"] = cost
        mem = "n/a" if peak is None else f"{peak:.2f} GB"
        say(
            f"{label:<12}{base:>14.0f}{rate:>15.0f}{rate / base:>8.2f}{mem:>15}"
            f"{'n/a' if cost is None else f'{cost:.2f}':>13}"
        )
    report: dict[str, Any] = {
        "machine": info,
        "device": name,
        "k": k,
        "batch_size": settings.batch_size,
        "images": [spec.in_channels, spec.image_size, spec.image_size],
        "bf16": PRECISIONS[args.precision]["bf16"],
        "tf32": precision_tag(args) in ("tf32", "bf16") and is_cuda(args.device),  # in effect
        "precision": precision_tag(args),
        "cuda_graph": args.cuda_graph,
        "compile": args.compile,
        "depthwise": depthwise,
        "bn": args.bn,
        "node_inputs": node_inputs,
        "baseline_img_s": rows[0]["baseline_img_s"] if rows else None,
        "engine_img_s": rows[0]["engine_img_s"] if rows else None,
        "ratio": rows[0]["ratio"] if rows else None,
        "table": rows,
        "search": None,
    }
    if args.profile:
        say(f"profile of 3 engine steps, complete-8 cell, K = {k}:")
        cell = start_cell("cnn", 8, random.Random(0))
        say(profile_engine(cell, spec, settings, k, args.device, engine_options(args)))
    if args.search_data is not None:
        kind = "quick" if args.quick else "full-protocol"
        say(f"{kind} search on Fashion-MNIST from {args.search_data} ...")
        report["search"] = s = search(
            args.search_data,
            args.device,
            {**engine_options(args), "cuda_graph": args.cuda_graph},  # None: the default
            quick=args.quick,
            out=args.out,
            time_limit=args.time_limit,
            say=say,
        )
        state = "finished" if s["finished"] else f"stopped at the {args.time_limit:.0f} s limit"
        say(
            f"search {state}: {s['seconds']:.1f} s wall, {s['steps']} steps, "
            f"{s['candidates']} candidates, peak GPU memory {s['peak_gpu_memory']}; "
            f"run folder {s['run_dir']}"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    run_main(main)
