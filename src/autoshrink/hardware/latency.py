"""Measured inference latency of a network on this machine: torch or onnxruntime, CPU or CUDA.

:func:`measure_module` times a module's forward pass the way a deployment runs it: the module
in eval mode under ``torch.inference_mode`` (backend ``torch``) or the module exported to ONNX
and run by an onnxruntime session (backend ``onnxruntime``). It warms up, then times single
calls in rounds of ``min_repeats`` until the median moves by less than ``rtol`` between rounds
(or ``max_repeats`` / ``max_seconds`` is reached: the result then says ``stable: false``), and
reports the median and inter-quartile range in milliseconds with the settings it ran under.

Timing: on the CPU, wall-clock ``perf_counter_ns`` around each call. With torch on CUDA, a
pair of CUDA events recorded on the current stream around each call, read after the end
event has synchronised, so the time is the GPU's, not the launch's. onnxruntime's
``session.run`` returns host arrays, so on CUDA its wall-clock time includes the copies of the
input and output between host and device. Thread count: ``torch.set_num_threads`` for the
measurement only (restored afterwards), or the session's ``intra_op_num_threads``.
A backend or device this machine lacks raises :class:`~autoshrink.errors.HardwareError`.
"""

from __future__ import annotations

import ctypes
import inspect
import io
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from autoshrink.devices import cpu_name, gpu_index, resolve_device, torch_threads
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.graph import Cell
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.macros import MacroSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyResult:
    """Milliseconds per forward pass: median, quartiles, and how they were obtained."""

    median_ms: float
    iqr_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    stable: bool
    settings: LatencySettings
    input_shapes: tuple[tuple[int, ...], ...]
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON object: the figures, the settings echoed, the environment."""
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "q1_ms": self.q1_ms,
            "q3_ms": self.q3_ms,
            "repeats": self.repeats,
            "stable": self.stable,
            **self.settings.to_dict(),
            "input_shapes": [list(s) for s in self.input_shapes],
            "environment": self.environment,
        }


# ------------------------------------------------------------------ devices and backends
def check_available(settings: LatencySettings) -> None:
    """Raise :class:`HardwareError` when this machine cannot run ``settings``."""
    gpu = gpu_index(settings.device)
    if gpu is not None:
        try:
            resolve_device(settings.device)
        except ConfigError as err:  # a valid name, but not this machine's
            raise HardwareError(str(err)) from None
    if settings.backend == "onnxruntime":
        onnx_module()  # the network is exported to ONNX first
        ort = onnxruntime_module()
        if gpu is not None and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise HardwareError(
                f"backend onnxruntime on {settings.device} needs onnxruntime-gpu; this "
                f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}"
            )


#: How to install what the ONNX backend and ``export`` need (the ``onnx`` extra's packages).
ONNX_INSTALL = "pip install onnx onnxruntime (or onnx onnxruntime-gpu)"


def onnxruntime_module() -> Any:
    """The ``onnxruntime`` module, or a HardwareError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise HardwareError(f"backend onnxruntime is not installed; {ONNX_INSTALL}") from None
    return onnxruntime


def onnx_module() -> Any:
    """The ``onnx`` module, which torch's ONNX exporter needs (without it the export is torch's
    traceback), or a HardwareError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise HardwareError(
            f"onnx is not installed, and torch's ONNX export needs it; {ONNX_INSTALL}"
        ) from None
    return onnx


def environment(settings: LatencySettings) -> dict[str, Any]:
    """Library versions and the machine a measurement ran on."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    if settings.backend == "onnxruntime":
        env["onnxruntime"] = onnxruntime_module().__version__
    gpu = gpu_index(settings.device)
    if gpu is not None:
        env["gpu"] = torch.cuda.get_device_name(gpu)
        env["cuda"] = torch.version.cuda
    return env


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def steady_heap() -> bool:
    """Make glibc keep freed memory for reuse (as a caching allocator does); ``True`` if set.

    By default glibc hands blocks above ~128 KiB back to the OS on free and trims the heap
    top, so PyTorch eager page-faults its activations in again on every forward pass: on
    small CPU networks that doubles the latency and makes it depend on what ran before.
    This raises the mmap and trim thresholds to 1 GiB for the rest of the process (there is
    no way to read the old values back). A no-op returning ``False`` without glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        return False
    return bool(ok)


# ------------------------------------------------------------------ ONNX
def onnx_bytes(
    module: nn.Module, inputs: Sequence[torch.Tensor], *, dynamic_batch: bool = False
) -> bytes:
    """The ONNX model of ``module`` (eval mode) traced with ``inputs``, as bytes.

    Inputs are named ``input`` (or ``input0``, ``input1``, ...), the output ``output``;
    ``dynamic_batch`` makes dimension 0 of every input and of the output symbolic.
    """
    onnx_module()
    names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    axes = {n: {0: "batch"} for n in [*names, "output"]} if dynamic_batch else None
    buf = io.BytesIO()
    module = module.eval()
    # the TorchScript exporter: seconds faster per export than torch.export, and just as exact
    # here; torch 2.4+ must be told (its default changed), 2.2 and 2.3 have no choice
    exporter: dict[str, Any] = (
        {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            tuple(inputs),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
            **exporter,
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=17,
        )
    return buf.getvalue()


def ort_session(model: bytes, *, device: str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session of ``model`` on ``device`` with ``threads`` intra-op threads."""
    ort = onnxruntime_module()
    gpu = gpu_index(device)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers: list[Any] = ["CPUExecutionProvider"]
    if gpu is not None:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu}))
    return ort.InferenceSession(model, sess_options=options, providers=providers)


# ------------------------------------------------------------------ timing
def runner(
    module: nn.Module, inputs: list[torch.Tensor], settings: LatencySettings
) -> Callable[[], object]:
    """The call to time (inputs already on the device)."""
    if settings.backend == "torch":
        dev = torch.device(settings.device)
        module = module.to(dev).eval()
        on_dev = [x.to(dev) for x in inputs]
        return lambda: module(*on_dev)
    session = ort_session(
        onnx_bytes(module, inputs), device=settings.device, threads=settings.threads
    )
    names = [i.name for i in session.get_inputs()]
    feeds = {n: x.numpy() for n, x in zip(names, inputs, strict=True)}
    return lambda: session.run(None, feeds)


def clock(fn: Callable[[], object], settings: LatencySettings) -> Callable[[], float]:
    """A function that runs ``fn`` once and returns its time in ms."""
    gpu = gpu_index(settings.device)
    if settings.backend == "torch" and gpu is not None:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def cuda_once() -> float:
            with torch.cuda.device(gpu):  # the events on the stream the module runs on
                start.record()
                fn()
                end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return cuda_once

    tick = settings.nanoseconds()

    def wall_once() -> float:
        t0 = tick()
        fn()
        return (tick() - t0) / 1e6

    return wall_once


def until_stable(once: Callable[[], float], settings: LatencySettings) -> tuple[np.ndarray, bool]:
    """Call ``once`` (which returns ms) ``warmup`` times untimed, then in rounds of
    ``min_repeats`` until the median moves by at most ``rtol`` between rounds (or
    ``max_repeats`` / ``max_seconds`` is reached); ``(all samples, stable)``."""
    for _ in range(settings.warmup):
        once()
    samples: list[float] = []
    previous: float | None = None
    t0 = time.perf_counter()
    while True:
        samples.extend(once() for _ in range(settings.min_repeats))
        median = float(np.median(samples))
        if previous is not None and abs(median - previous) <= settings.rtol * previous:
            return np.asarray(samples), True
        if len(samples) >= settings.max_repeats or time.perf_counter() - t0 > settings.max_seconds:
            log.debug("latency median not stable after %d samples", len(samples))
            return np.asarray(samples), False
        previous = median


def time_samples(fn: Callable[[], object], settings: LatencySettings) -> tuple[np.ndarray, bool]:
    """Warm up, then time ``fn`` in rounds until the median is stable; ``(ms samples, stable)``."""
    return until_stable(clock(fn, settings), settings)


def measure_module(
    module: nn.Module,
    input_shapes: Sequence[Sequence[int]],
    settings: LatencySettings,
    *,
    with_environment: bool = True,
) -> LatencyResult:
    """Latency of ``module(*inputs)`` for random float32 inputs of ``input_shapes``
    (batch dimension included)."""
    check_available(settings)
    heap = settings.steady_heap and settings.backend == "torch" and steady_heap()
    shapes = tuple(tuple(int(d) for d in s) for s in input_shapes)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=gen) for s in shapes]
    with torch_threads(settings.threads), torch.inference_mode():
        samples, stable = time_samples(runner(module, inputs, settings), settings)
    q1, median, q3 = (float(v) for v in np.percentile(samples, [25, 50, 75]))
    return LatencyResult(
        median_ms=median,
        iqr_ms=q3 - q1,
        q1_ms=q1,
        q3_ms=q3,
        repeats=len(samples),
        stable=stable,
        settings=settings,
        input_shapes=shapes,
        environment={**environment(settings), "steady_heap": heap} if with_environment else {},
    )


def network_input_shape(spec: MacroSpec, batch: int) -> tuple[int, int, int, int]:
    """``(B, C, H, W)`` of the images a macro network takes."""
    return (batch, spec.in_channels, spec.image_size, spec.image_size)


def measure_cell(cell: Cell, spec: MacroSpec, settings: LatencySettings) -> LatencyResult:
    """Latency of the whole network ``spec`` built from ``cell`` (random weights)."""
    check_available(settings)
    model = build_network(cell, spec)
    return measure_module(model, [network_input_shape(spec, settings.batch)], settings)
