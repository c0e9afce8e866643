"""``autoshrink count CELL.json --macro NAME``: parameters and MACs by the published convention."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoshrink.cli import (
    SUBCOMMANDS,
    count_number,
    int_at_most,
    millions,
    refuse_for_arch,
)
from autoshrink.cost.cells import count
from autoshrink.cost.rnn import RNN_MACROS, count_rnn
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.ranges import MAX_CLASSES
from autoshrink.singlepath.space import MBConvArch, count_arch, is_arch_file
from autoshrink.spaces.macros import MACROS, get_macro

CNN_DEFAULT, RNN_DEFAULT = "shrinkcnn-imagenet", "shrinkrnn-ptb"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``count`` parser to ``sub``."""
    p = sub.add_parser(
        "count",
        help=SUBCOMMANDS["count"],
        description="Count parameters and multiply-accumulates by the published convention "
        "(convolutions and linear layers; no BN, pooling or adds).",
    )
    p.add_argument("cell", type=Path, help="a cell JSON file or an mbconv architecture file")
    p.add_argument(
        "--macro",
        default=None,
        choices=sorted(MACROS) + sorted(RNN_MACROS),
        help=f"the network (default: {CNN_DEFAULT} for a cnn cell, the published ShrinkCNN; "
        f"{RNN_DEFAULT} for an rnn cell; cifar-proxy is the network a search scores)",
    )
    p.add_argument("--width", type=float, default=None, help="width multiplier, in (0, 64]")
    p.add_argument("--image-size", type=count_number, default=None, help="input size in pixels")
    p.add_argument("--num-classes", type=int_at_most(MAX_CLASSES), default=None)
    p.add_argument(
        "--in-channels",
        type=count_number,
        default=None,
        help="input image channels (1: the grayscale data sets, as search and train count them)",
    )
    p.add_argument(
        "--nhid",
        type=count_number,
        default=None,
        help=f"rnn cells: the hidden (and embedding) size ({RNN_DEFAULT}'s: 745)",
    )
    p.add_argument(
        "--vocab",
        type=int_at_most(MAX_CLASSES),
        default=None,
        help=f"rnn cells: the vocabulary size ({RNN_DEFAULT}'s: 10,000)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the parameters and MACs of the cell's (or mbconv file's) network; 0."""
    if is_arch_file(args.cell):
        return run_arch(args)
    cell = Cell.load(args.cell)
    macro = args.macro or (RNN_DEFAULT if cell.kind == "rnn" else CNN_DEFAULT)
    settings = {
        k: v
        for k, v in (
            ("width", args.width),
            ("image_size", args.image_size),
            ("num_classes", args.num_classes),
            ("in_channels", args.in_channels),
        )
        if v is not None
    }
    sizes = {k: v for k, v in (("nhid", args.nhid), ("vocab", args.vocab)) if v is not None}
    if macro in RNN_MACROS:  # language models: MACs per token
        if settings:
            flags = ", ".join("--" + k.replace("_", "-") for k in settings)
            raise ConfigError(f"{flags}: settings of a CNN macro; {macro} has none")
        rnn_spec = RNN_MACROS[macro](**sizes)
        name, counts, unit = rnn_spec.name, count_rnn(cell, rnn_spec), " per token"
        echoed: dict[str, float | int] = {"nhid": rnn_spec.nhid, "vocab": rnn_spec.vocab}
    elif sizes:
        flags = ", ".join(f"--{k}" for k in sizes)
        raise ConfigError(f"{flags}: settings of an RNN language model; {macro} has none")
    else:
        spec = get_macro(macro, **settings)
        name, counts, unit, echoed = spec.name, count(cell, spec), "", spec.settings()
    if args.json:
        print(json.dumps({"params": counts.params, "macs": counts.macs, "macro": name, **echoed}))
    else:
        print(
            f"{name}: {counts.params:,} params ({millions(counts.params)}), "
            f"{counts.macs:,} MACs ({millions(counts.macs)}){unit}"
        )
    return 0


def run_arch(args: argparse.Namespace) -> int:
    """An mbconv architecture file (``--macro`` does not apply: the file is the network)."""
    refuse_for_arch(args, "macro", "nhid", "vocab")
    arch = MBConvArch.load(
        args.cell,
        width=args.width,
        image_size=args.image_size,
        num_classes=args.num_classes,
        in_channels=args.in_channels,
    )
    counts = count_arch(arch)
    name = arch.name
    if args.json:
        settings = {k: v for k, v in arch.to_dict().items() if k not in ("format", "layers")}
        print(json.dumps({"params": counts.params, "macs": counts.macs, "macro": name, **settings}))
    else:
        print(f"{name}: {millions(counts.params)} params, {millions(counts.macs)} MACs")
    return 0
