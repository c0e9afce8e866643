"""The machine a benchmark ran on: the header line every ``benchmarks/bench_*.py`` prints first.

:func:`machine` gathers the facts a figure depends on -- the CPU model (read by
:func:`autoshrink.devices.cpu_name`), its logical cores and the 1-minute load average, torch's
version and thread count, onnxruntime's version where it is installed, and the GPU's name where
CUDA is available -- as a dict for a script's JSON; :func:`machine_line` says them in one line and
:func:`print_machine` prints that line and returns the dict.

It imports neither torch nor onnxruntime, so printing the header changes nothing a script
measures: a script that has not loaded torch (``bench_cli_startup`` times start-up in fresh
processes, ``bench_nb201_speed`` reports its peak memory) gets torch's installed version, marked
``not loaded``, and no thread count or GPU; onnxruntime's version comes from its package's
metadata. A script that loaded torch gets the thread count in force when it prints the header.

:func:`run_main` runs a script's ``main``: bad user input (an
:class:`~autoshrink.errors.AutoshrinkError`, such as a data folder that is not there) ends it as a
usage error does, one line naming the culprit and status 2, not a traceback; :func:`count` is
the ``type`` of an option that counts rounds, repeats or cells (a whole number >= 1).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from autoshrink.devices import cpu_name
from autoshrink.errors import AutoshrinkError

#: The package names onnxruntime is installed under (CPU or CUDA build).
ONNXRUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu")


def _installed_version(*packages: str) -> str | None:
    """The version of the first of ``packages`` that is installed, or ``None``."""
    for name in packages:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine() -> dict[str, Any]:
    """CPU, cores, load, torch (version, threads, ``loaded``), onnxruntime and GPU, JSON-ready.

    ``onnxruntime`` and ``gpu`` are ``None`` where there is none (``gpu`` also where torch is
    not loaded); ``torch_threads`` is ``None`` where torch is not loaded.
    """
    torch = sys.modules.get("torch")
    ort = sys.modules.get("onnxruntime")
    gpu = None
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
    return {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "torch": torch.__version__ if torch is not None else _installed_version("torch"),
        "torch_loaded": torch is not None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "onnxruntime": ort.__version__
        if ort is not None
        else _installed_version(*ONNXRUNTIME_PACKAGES),
        "gpu": gpu,
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """``info`` (by default :func:`machine`) in one line, starting ``machine:``."""
    m = machine() if info is None else info
    torch = f"torch {m['torch']}"
    if m["torch_loaded"]:
        torch += f", {m['torch_threads']} thread{'s' if m['torch_threads'] != 1 else ''}"
        gpu = f"GPU {m['gpu']}" if m["gpu"] else "no CUDA GPU"
    else:
        torch += " (not loaded)"
        gpu = ""
    parts = [
        f"{m['cpu']}, {m['logical_cores']} logical cores, load average {m['load_average']:.2f}",
        torch,
        f"onnxruntime {m['onnxruntime']}" if m["onnxruntime"] else "no onnxruntime",
        gpu,
    ]
    return "machine: " + "; ".join(p for p in parts if p)


def print_machine(file: TextIO | None = None) -> dict[str, Any]:
    """Print :func:`machine_line` (to ``file``, by default stdout) and return :func:`machine`.

    A script whose ``--json`` prints JSON on stdout passes ``sys.stderr`` there and puts the
    returned dict in its JSON under ``"machine"``.
    """
    info = machine()
    print(machine_line(info), file=sys.stdout if file is None else file, flush=True)
    return info


def run_main(main: Callable[[], object]) -> None:
    """Run a script's ``main``; an :class:`~autoshrink.errors.AutoshrinkError` (bad user input)
    ends it with ``SCRIPT: error: MESSAGE`` on stderr and status 2, as argparse's usage errors."""
    try:
        main()
    except AutoshrinkError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def count(text: str) -> int:
    """An argparse ``type`` for a number of rounds, repeats, cells...: a whole number >= 1 (0
    left a script with nothing to time, and a traceback or NaN figures)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def fill_sizes(
    args: argparse.Namespace, quick: Mapping[str, object], sizes: Mapping[str, object]
) -> argparse.Namespace:
    """``args`` with each size it was not given (``None``) set to ``quick``'s value under
    ``--quick``, else to ``sizes``': a size given wins over ``--quick`` (which took their place
    without a word in some scripts)."""
    for name, value in (quick if args.quick else sizes).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args
