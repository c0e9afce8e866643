"""``autoshrink latency CELL.json --macro NAME``: measured latency, and optionally a table's.

Times the network on this machine (see :mod:`autoshrink.hardware.latency`) and prints the median and
inter-quartile range in ms with the settings it ran under; ``--json`` prints one object.
``--latency-table FILE`` also predicts the latency from a lookup table
(:mod:`autoshrink.hardware.table`), first measuring the blocks of this network the table lacks
and saving them into FILE.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autoshrink.cli import (
    SUBCOMMANDS,
    add_latency_table,
    count_number,
    int_at_most,
    refuse_for_arch,
)
from autoshrink.devices import check_threads, device_argument
from autoshrink.errors import ConfigError
from autoshrink.graph import A_CELL_OF, Cell
from autoshrink.hardware.blocks import network_blocks
from autoshrink.hardware.latency import LatencyResult, measure_cell, measure_module
from autoshrink.hardware.latency_settings import BACKENDS, CLOCKS, LatencySettings
from autoshrink.hardware.table import LatencyTable, extend_table
from autoshrink.nouns import count
from autoshrink.outputs import check_output_file
from autoshrink.ranges import MAX_CLASSES, require
from autoshrink.singlepath.space import MBConvArch, build_arch, is_arch_file
from autoshrink.spaces.macros import DEFAULT_MACRO, MACROS, MacroSpec, get_macro
from autoshrink.stop_signals import StopSignals


def add_macro_options(p: argparse.ArgumentParser) -> None:
    """``--macro`` and the macro settings (``--width``, ``--image-size``, ...)."""
    p.add_argument(
        "--macro",
        default=None,
        choices=sorted(MACROS),
        help=f"the network of a cell (default {DEFAULT_MACRO}; not for an mbconv file)",
    )
    p.add_argument("--width", type=float, default=None, help="width multiplier, in (0, 64]")
    p.add_argument("--image-size", type=count_number, default=None, help="input size in pixels")
    p.add_argument("--in-channels", type=count_number, default=None, help="input image channels")
    p.add_argument("--num-classes", type=int_at_most(MAX_CLASSES), default=None)


def _network_settings(args: argparse.Namespace, inferred: dict[str, Any]) -> dict[str, Any]:
    """``--width``, ``--image-size``, ``--in-channels`` and ``--num-classes`` where given, else
    ``inferred``'s values."""
    names = ("width", "image_size", "in_channels", "num_classes")
    return {**inferred, **{k: getattr(args, k) for k in names if getattr(args, k) is not None}}


def macro_from_args(args: argparse.Namespace, **inferred: Any) -> MacroSpec:
    """The macro of ``--macro`` (else ``inferred``'s ``macro``, else the default) with the
    settings given (else ``inferred``'s, else the macro's defaults)."""
    name = args.macro or inferred.pop("macro", None) or DEFAULT_MACRO
    return get_macro(name, **_network_settings(args, inferred))


def macro_cell(path: Path, command: str) -> Cell:
    """The cell in ``path`` for a command that builds a macro network from it (``latency``,
    ``export``); an RNN cell is one line saying the command takes CNN cells (it was refused
    later, by a macro the user never named, or as a weights file of another network)."""
    cell = Cell.load(path)
    if cell.kind != "cnn":
        raise ConfigError(
            f"{command} takes a cnn cell or an mbconv architecture; {path} holds "
            f"{A_CELL_OF[cell.kind]}"
        )
    return cell


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``latency`` parser to ``sub``."""
    p = sub.add_parser(
        "latency",
        help=SUBCOMMANDS["latency"],
        description="Warm up, then time single forward passes until the median is stable; "
        "print median and inter-quartile range (ms) with the backend, device and threads. "
        "With --latency-table FILE, also predict the latency from a lookup table, measuring and "
        "saving the blocks FILE lacks.",
    )
    p.add_argument("cell", type=Path, help="a cell JSON file or an mbconv architecture file")
    add_macro_options(p)
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument(
        "--device",
        type=device_argument,
        default="cpu",
        help="cpu, cuda, cuda:N or auto (default cpu)",
    )
    p.add_argument(
        "--batch",
        type=count_number,
        default=1,
        help="images per forward pass (default 1)",
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall: elapsed time (default); cpu: this thread's CPU time, steadier on a busy "
        "machine (cpu device, 1 thread)",
    )
    p.add_argument("--warmup", type=count_number, default=5, help="untimed runs first (default 5)")
    p.add_argument(
        "--repeats",
        type=count_number,
        default=20,
        help="timed runs per round (default 20); rounds go on until the median moves < 2%%",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=5.0,
        help="stop adding rounds after this many seconds of timing (default 5); the warm-up "
        "and the first round always run whole",
    )
    add_latency_table(p, "latency table JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace) -> LatencySettings:
    """The :class:`LatencySettings` of the measurement flags (their bounds named by flag)."""
    require("--repeats", args.repeats, ">= 1")
    require("--warmup", args.warmup, ">= 0")
    require("--batch", args.batch, ">= 1")
    require("--max-seconds", args.max_seconds, "finite and > 0")
    check_threads(args.threads, "--threads")
    return LatencySettings(
        backend=args.backend,
        device=args.device,
        batch=args.batch,
        threads=args.threads,
        clock=args.clock,
        warmup=args.warmup,
        min_repeats=args.repeats,
        max_repeats=max(2000, 2 * args.repeats),  # at least two rounds to compare
        max_seconds=args.max_seconds,
    )


def arch_from_args(args: argparse.Namespace, **inferred: int) -> MBConvArch:
    """The mbconv architecture file ``args.cell`` with the macro settings given (else
    ``inferred``, else the file's); ``--macro`` is refused (the file is the network)."""
    refuse_for_arch(args, "macro")
    return MBConvArch.load(args.cell, **_network_settings(args, inferred))


def run(args: argparse.Namespace) -> int:
    """Measure the network's latency (and a table's estimate) and print it, which SIGINT and
    SIGTERM stop as one line (a table's saves are atomic: it keeps what it held); 0."""
    settings = settings_from_args(args)
    if args.table is not None:
        check_output_file(args.table, "--latency-table")
    with StopSignals():
        return run_arch(args, settings) if is_arch_file(args.cell) else run_cell(args, settings)


def run_cell(args: argparse.Namespace, settings: LatencySettings) -> int:
    """A cell file: its network in ``--macro``; ``--latency-table`` predicts from the block
    table (and measures the blocks it lacks into it)."""
    cell = macro_cell(args.cell, "latency")
    spec = macro_from_args(args)
    # read and checked before the measurement, which takes up to --max-seconds
    table = None if args.table is None else LatencyTable.load_checked(args.table, settings)
    result = measure_cell(cell, spec, settings)
    out = {
        "macro": spec.name,
        **spec.settings(),
        "cell": str(args.cell),
        "key": cell.key,
        **result.to_dict(),
    }
    if args.table is not None:
        blocks = network_blocks(cell, spec)
        before = len(table) if table is not None else 0
        table = extend_table(table, [cell], spec, settings, source=str(args.table))
        new = len(table) - before
        if new:  # a search's workers may be adding blocks to it meanwhile: theirs are kept
            table = table.save_shared(args.table)
        out |= {
            "table_ms": table.predict_blocks(blocks),
            "table": str(args.table),
            "table_blocks": len(blocks),
            "table_new_blocks": new,
        }
    if args.json:
        print(json.dumps(out))
        return 0
    print_measurement(f"{spec.name}, cell {cell.key}", result, settings)
    if args.table is not None:
        print(
            f"table prediction {out['table_ms']:.3f} ms from {out['table_blocks']} blocks "
            f"({count(out['table_new_blocks'], 'entry')} measured now, the blocks' and the "
            f"cost of a call on their outputs; table {args.table})"
        )
    return 0


def run_arch(args: argparse.Namespace, settings: LatencySettings) -> int:
    """An mbconv architecture file; ``--latency-table`` predicts from the Single-Path layer table
    (:mod:`autoshrink.singlepath.latency_model`): the table's sum, and the search's calibrated
    prediction where the calibration beside the table was fitted for these settings."""
    from autoshrink.singlepath.latency_model import (
        Calibration,
        LatencyModel,
        calibration_path,
        load_or_measure,
    )

    arch = arch_from_args(args)
    table, new = None, 0  # first: a table of other settings is refused before any measuring
    if args.table is not None:
        table, new = load_or_measure(args.table, arch.spec, settings)
    shape = (settings.batch, arch.in_channels, arch.image_size, arch.image_size)
    result = measure_module(build_arch(arch).eval(), [shape], settings)
    settings_of_arch = {k: v for k, v in arch.to_dict().items() if k != "format"}
    out = {"architecture": str(args.cell), **settings_of_arch, **result.to_dict()}
    if table is not None:
        raw = LatencyModel.from_table(table, arch.spec)
        cal = Calibration.load_matching(calibration_path(args.table), settings, arch.spec, raw)
        out |= {
            "table_ms": raw.predict(arch),
            "calibrated_ms": None if cal is None else raw.calibrated(cal).predict(arch),
            "table": str(args.table),
            "table_new_blocks": new,
        }
    if args.json:
        print(json.dumps(out))
        return 0
    network = f"{arch.name}, layers {arch.key}"
    print_measurement(network, result, settings)
    if args.table is not None:
        calibrated = out["calibrated_ms"]
        print(
            (f"table prediction {calibrated:.3f} ms calibrated, " if calibrated is not None else "")
            + f"table sum {out['table_ms']:.3f} ms ({count(new, 'table entry')} measured now)"
        )
    return 0


def print_measurement(network: str, result: LatencyResult, settings: LatencySettings) -> None:
    """The three lines ``autoshrink latency`` prints of a measurement: the network (``network``
    and its input), the median and spread, and what it ran under."""
    env = result.environment
    where = env.get("gpu") or env.get("cpu", "")
    threads = f"{settings.threads} thread{'s' if settings.threads > 1 else ''}"
    print(f"{network}, input {list(result.input_shapes[0])}")
    print(
        f"latency {result.median_ms:.3f} ms median, IQR {result.iqr_ms:.3f} ms "
        f"({count(result.repeats, 'run')}{'' if result.stable else ', median not yet stable'})"
    )
    print(
        f"backend {settings.backend} (torch {env.get('torch')}"
        + (f", onnxruntime {env['onnxruntime']}" if "onnxruntime" in env else "")
        + f"), device {settings.device} ({where}), {threads}, batch {settings.batch}, "
        f"clock {settings.clock}"
    )
