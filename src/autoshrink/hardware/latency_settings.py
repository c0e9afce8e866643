"""How a latency is measured (:class:`LatencySettings`: backend, device, batch, threads, the
repeat and stop rule, the clock), apart from the measuring so that a config reads it without
torch (:mod:`autoshrink.hardware.latency` measures)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from autoshrink.devices import check_threads, gpu_index
from autoshrink.errors import ConfigError
from autoshrink.user_files import fields_type_problem

#: The backends that run a measured network.
BACKENDS = ("torch", "onnxruntime")
#: The clocks that time a pass on the CPU: the wall's, or this thread's CPU time.
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True, kw_only=True)
class LatencySettings:
    """How to measure: backend, device, batch size, threads, and the repeat/stop rule."""

    backend: str = "torch"
    device: str = "cpu"
    batch: int = 1
    threads: int = 1
    warmup: int = 5
    min_repeats: int = 20
    max_repeats: int = 2000
    max_seconds: float = 5.0
    rtol: float = 0.02
    steady_heap: bool = True
    clock: str = "wall"

    def __post_init__(self) -> None:
        # a table file's settings come from JSON: 1.5 warm-ups, "no"
        if problem := fields_type_problem(self):
            raise ConfigError(f"latency settings: {problem}")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown latency backend {self.backend!r}; expected one of {BACKENDS}"
            )
        gpu_index(self.device)
        check_threads(self.threads, "latency threads")
        for name in ("batch", "min_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"latency {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"latency warmup must be >= 0, got {self.warmup}")
        if self.max_repeats < self.min_repeats:
            raise ConfigError(
                f"latency max_repeats ({self.max_repeats}) must be >= min_repeats "
                f"({self.min_repeats})"
            )
        if self.clock not in CLOCKS:
            raise ConfigError(f"unknown latency clock {self.clock!r}; expected one of {CLOCKS}")
        if self.clock == "cpu" and (self.threads != 1 or self.device != "cpu"):
            raise ConfigError(
                "latency clock 'cpu' (this thread's CPU time) needs device cpu and threads 1"
            )
        if not 0 < self.max_seconds < math.inf or not 0 < self.rtol < math.inf:
            raise ConfigError("latency max_seconds and rtol must be finite and > 0")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a flat, JSON-ready dict of their fields."""
        return asdict(self)

    def nanoseconds(self) -> Callable[[], int]:
        """The clock that times a pass off the GPU, in ns: this thread's CPU time
        (``clock="cpu"``) or the wall's (CUDA passes are timed with events)."""
        return time.thread_time_ns if self.clock == "cpu" else time.perf_counter_ns
