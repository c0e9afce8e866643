"""Device names -- ``cpu``, ``cuda``, ``cuda:N`` and ``auto`` -- parsed and checked in one place.

:func:`gpu_index` reads a name without torch (configs and settings check theirs where torch is
not loaded); :func:`resolve_device` checks it against this machine and gives the torch device;
:func:`device_argument` is the ``--device`` type of every command (``auto`` resolved, the form
checked), :func:`local_device_argument` the benchmarks' (also checked against this machine). A
name this machine cannot run is a :class:`~autoshrink.errors.ConfigError` that names it.
Thread counts are checked here too (:func:`check_threads`), and :func:`torch_threads` sets one
for a block and restores it; :func:`own_generators` gives a block that seeds torch's global
generators its own. :func:`cpu_name` reads this machine's CPU model (without torch).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from autoshrink.errors import ConfigError

if TYPE_CHECKING:
    import torch

AUTO = "auto"

#: The most torch threads a setting may ask for: OpenMP allocates per thread up front, and
#: a count far beyond any machine's cores (a typing slip) aborts the process from C.
MAX_THREADS = 1024


def cpu_name() -> str:
    """This machine's CPU model from ``/proc/cpuinfo`` (else the platform's, else ``unknown``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check_threads(threads: object, what: str = "threads") -> None:
    """Raise :class:`ConfigError` naming ``what`` unless ``threads`` is an integer in
    ``1..MAX_THREADS``."""
    ok = isinstance(threads, int) and not isinstance(threads, bool)
    if not (ok and 1 <= threads <= MAX_THREADS):  # type: ignore[operator]
        raise ConfigError(f"{what} must be an integer in 1..{MAX_THREADS}, got {threads!r}")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` and restore the count it had after
    (``None``: leave torch's count as it is)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def own_generators(device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the body, which may seed torch's global generators (a candidate's initial weights),
    and give the caller's generator states back after: the CPU's, and the GPU's of
    ``device``."""
    import torch

    dev = torch.device(device)
    gpus = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        yield


def gpu_index(device: str) -> int | None:
    """``None`` for ``cpu``, the GPU number for ``cuda`` (0) or ``cuda:N``; else a ConfigError."""
    name, sep, num = str(device).partition(":")
    if name == "cpu" and not sep:
        return None
    if name == "cuda" and (not sep or num.isdigit()):
        return int(num) if sep else 0
    raise ConfigError(f"unknown device {device!r}; expected cpu, cuda or cuda:N")


def is_cuda(device: str) -> bool:
    """Whether ``device`` (a valid name, or ``auto``) names a GPU."""
    return str(device).partition(":")[0] == "cuda"


def resolve_device(device: str, *, local_rank: int = 0) -> torch.device:
    """The torch device of ``device`` on this machine.

    ``auto`` is ``cuda:<local_rank>`` when torch sees a GPU, else ``cpu``; plain ``cuda`` is
    ``cuda:<local_rank>`` (GPU 0 in a single process). A GPU this machine lacks is a
    :class:`~autoshrink.errors.ConfigError` naming the device.
    """
    import torch

    if device == AUTO:
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    index = gpu_index(device)
    if index is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: torch {torch.__version__} sees no CUDA GPU here; use cpu"
        )
    if device == "cuda":
        index = local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    return torch.device("cuda", index)


def device_argument(text: str) -> str:
    """``argparse`` type of a ``--device`` option. ``auto`` becomes the device it resolves to
    on this machine: ``cuda`` when torch sees a GPU (a process's own: GPU 0 alone, the one Ray
    gives a task; ``cuda:0`` would be refused by ``--executor ray``), else ``cpu``. Any other
    name is checked for its form here (a usage error naming it) and against the machine where
    it is used: a Ray cluster's GPUs are not the head's."""
    if text == AUTO:
        return resolve_device(AUTO).type
    try:
        gpu_index(text)
    except ConfigError:  # auto is a name here too
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; expected {AUTO}, cpu, cuda or cuda:N"
        ) from None
    return text


def local_device_argument(text: str) -> str:
    """:func:`device_argument` for a tool that runs on this machine only (the benchmarks): a
    GPU this machine lacks is a usage error too, naming it."""
    name = device_argument(text)
    try:
        resolve_device(name)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name
