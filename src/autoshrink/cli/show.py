"""``autoshrink show CELL.json``: print a cell and write its picture."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from autoshrink.cli import SUBCOMMANDS
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nouns import count
from autoshrink.outputs import check_output_file
from autoshrink.report.picture import picture_format, render, to_text
from autoshrink.singlepath.space import is_arch_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``show`` parser to ``sub``."""
    p = sub.add_parser("show", help=SUBCOMMANDS["show"])
    p.add_argument("cell", type=Path, help="a cell JSON file (format autoshrink.cell/1)")
    p.add_argument(
        "--picture",
        type=Path,
        default=None,
        help="where to write the picture (.png, .svg or .dot, the Graphviz source; default: next "
        "to the cell, .png; a cell read from a pipe needs it)",
    )
    p.set_defaults(handler=run)


#: Paths that name an open file descriptor, not a file in a folder of its own.
DESCRIPTOR_PATHS = ("/dev/stdin", "/dev/fd/*", "/proc/*/fd/*")


def default_picture(cell: Path) -> Path:
    """Where the picture of the cell file ``cell`` goes without ``--picture``: beside it, as
    ``.png``; a cell read from a pipe (``<(cat cell.json)``) or a descriptor (``/dev/stdin``,
    ``/dev/fd/N``, even of a regular file) has no folder of its own for one: a
    :class:`ConfigError` asking for ``--picture``."""
    if not cell.is_file():
        raise ConfigError(f"{cell}: not a regular file (a pipe?): give --picture FILE")
    if any(Path(os.path.abspath(cell)).match(named) for named in DESCRIPTOR_PATHS):
        raise ConfigError(f"{cell}: not a file of a folder (a descriptor?): give --picture FILE")
    return cell.with_suffix(".png")


def run(args: argparse.Namespace) -> int:
    """Print the cell, its key and live nodes, and write its picture; 0."""
    if is_arch_file(args.cell):
        raise ConfigError(
            f"{args.cell}: a Single-Path architecture (autoshrink.mbconv/1), not a cell; show "
            "draws cells (count, latency, export and train take this file)"
        )
    cell = Cell.load(args.cell)
    picture = check_output_file(args.picture or default_picture(args.cell), "--picture")
    picture_format(picture)  # before anything is printed
    if args.cell.resolve() == picture.resolve():
        raise ConfigError(f"--picture {picture}: the picture would write over the cell file")
    print(to_text(cell), end="")
    print(f"key {cell.key}, {count(cell.num_edges, 'edge')}, live nodes {list(cell.live_nodes)}")
    written = render(cell, picture, title=args.cell.name)
    print(f"picture: {written}")
    return 0
