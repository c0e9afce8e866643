"""Choose an executor by name: ``inprocess`` or ``pool`` (one single-thread worker per core)."""

from __future__ import annotations

from autoshrink.errors import ConfigError
from autoshrink.executors.base import Executor, InProcessExecutor
from autoshrink.executors.pool import LocalPoolExecutor

EXECUTORS = ("inprocess", "pool")


def build_executor(
    name: str | None, workers: int | None = None, *, device: str = "cpu"
) -> Executor:
    """The executor ``name``; ``None`` picks the default for ``device`` (pool on CPU)."""
    name = name or ("pool" if device == "cpu" else "inprocess")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if name == "inprocess":
        return InProcessExecutor()
    if name == "pool":
        return LocalPoolExecutor(workers)
    raise ConfigError(f"unknown executor {name!r}; expected one of {EXECUTORS}")
