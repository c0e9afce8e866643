"""``autoshrink export CELL.json --macro NAME --out DIR``: ONNX, weights, standalone PyTorch.

Writes ``model.onnx``, ``model.safetensors``, ``model.py`` (plain PyTorch, no autoshrink),
``cell.json`` and ``export.json`` into DIR (see :mod:`autoshrink.export.bundle`), and checks that
onnxruntime and the standalone file reproduce PyTorch's outputs. An mbconv architecture file
(``autoshrink singlepath``'s) gets the same files with ``architecture.json`` for ``cell.json``
(:mod:`autoshrink.export.mbconv`). Exit status 1 when a check fails; 2, before anything is
written, for a ``--weights`` that is not a usable weights file (a folder, not safetensors, not
this network's, holding NaN/inf, or with malformed metadata of ``autoshrink train``).
``--json`` prints strict JSON (``null`` for a difference that cannot be measured).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autoshrink.cli import SUBCOMMANDS, folder_path, seed_number
from autoshrink.cli.latency import (
    add_macro_options,
    arch_from_args,
    macro_cell,
    macro_from_args,
)
from autoshrink.export.bundle import (
    MANIFEST,
    RTOL,
    ExportResult,
    export_network,
    infer_settings,
)
from autoshrink.outputs import claim_folder, held_folder, unfinished
from autoshrink.singlepath.space import is_arch_file
from autoshrink.stop_signals import StopSignals


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser to ``sub``."""
    p = sub.add_parser(
        "export",
        help=SUBCOMMANDS["export"],
        description="Write model.onnx (checked with onnxruntime), model.safetensors and "
        "model.py (plain PyTorch that imports nothing from autoshrink) into --out. Weights "
        "come from --weights (e.g. autoshrink train's weights.safetensors; input channels "
        "and classes are read from it, and from autoshrink train's also the image size and "
        "width it trained at, and the input normalisation, which export.json records) or a "
        "seeded random initialisation.",
    )
    p.add_argument("cell", type=Path, help="a cell JSON file or an mbconv architecture file")
    add_macro_options(p)
    p.add_argument("--out", type=folder_path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--weights", type=Path, default=None, metavar="FILE", help="a .safetensors file")
    p.add_argument("--seed", type=seed_number, default=0, help="random init and check input seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the network's ONNX, weights and ``model.py`` into ``--out``, held by this process
    alone (:func:`~autoshrink.outputs.held_folder`: a second export there at once wrote over
    this one's files), which SIGINT and SIGTERM stop as one line, the folder let go; 0."""
    claim_folder(args.out, "export", resume=False)  # before the folder is made to be held
    # an export killed midway (its export.json still "incomplete"): its temporaries go too
    again = unfinished(args.out / MANIFEST)
    with StopSignals(), held_folder(args.out, resume=again):
        return run_arch(args) if is_arch_file(args.cell) else run_cell(args)


def run_cell(args: argparse.Namespace) -> int:
    """A cell file: its network in ``--macro``."""
    cell = macro_cell(args.cell, "export")
    inferred = infer_settings(args.weights, args.macro) if args.weights is not None else {}
    spec = macro_from_args(args, **inferred)
    r = export_network(cell, spec, args.out, weights=args.weights, seed=args.seed)
    return finish(args, r, f"{spec.name} network of cell {cell.key}")


def run_arch(args: argparse.Namespace) -> int:
    """An mbconv architecture file: the same files, ``architecture.json`` for ``cell.json``."""
    from autoshrink.export.mbconv import export_arch

    inferred = {} if args.weights is None else infer_settings(args.weights, architecture=True)
    arch = arch_from_args(args, **inferred)
    r = export_arch(arch, args.out, weights=args.weights, seed=args.seed)
    return finish(args, r, f"mbconv network {arch.key}")


def _diff(value: float | None) -> str:
    return "not measurable" if value is None else f"{value:.2e}"


def finish(args: argparse.Namespace, r: ExportResult, what: str) -> int:
    """Print what an export wrote and its checks (``--json``: one object); 1 if a check failed."""
    if args.json:
        fields = {
            "out": str(r.out_dir),
            "files": list(r.files),
            "input": list(r.input_shape),
            "onnx_max_abs_diff": r.onnx_max_abs_diff,
            "standalone_max_abs_diff": r.standalone_max_abs_diff,
            "ok": r.ok,
        }
        print(json.dumps(fields, allow_nan=False))
    else:
        print(f"{what}, input [B, {', '.join(map(str, r.input_shape))}]")
        for name in r.files:
            size = (r.out_dir / name).stat().st_size
            print(f"  {r.out_dir / name}  ({size / 1024:.1f} KiB)")
        print(
            f"checks vs PyTorch (atol {r.atol:g}, rtol {RTOL:g}): onnxruntime max |diff| "
            f"{_diff(r.onnx_max_abs_diff)}, standalone model.py "
            f"{_diff(r.standalone_max_abs_diff)} -> {'ok' if r.ok else 'FAILED'}"
        )
    if not r.ok:
        print("autoshrink: export check failed; see export.json", file=sys.stderr)
        return 1
    return 0
