"""The ``autoshrink`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package with a ``register(subparsers)``
function that adds its parser and sets ``handler``; :data:`SUBCOMMANDS` lists them in the
order ``--help`` shows. Errors a user can cause print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from autoshrink import __version__
from autoshrink.errors import AutoshrinkError

SUBCOMMANDS = (
    "search",
    "show",
    "count",
    "train",
    "bench",
    "latency",
    "export",
    "report",
    "singlepath",
)

EPILOG = """\
examples:
  autoshrink search --preset demo --out runs/demo      a real search on the embedded digits
  autoshrink search --resume runs/demo                 continue a killed search
  autoshrink show runs/demo/best_cell.json             print a cell, write its picture
  autoshrink count CELL.json --macro shrinkcnn-imagenet
  autoshrink train runs/demo/best_cell.json --dataset digits
  autoshrink singlepath --preset demo --latency-target 5 --out runs/sp   Single-Path NAS
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoshrink",
        description="Topology-aware neural architecture search (AutoShrink, AAAI 2020).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autoshrink {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"autoshrink.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a search stopped early, 2 bad
    input, 130 interrupted by Ctrl-C, 143 by SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except AutoshrinkError as err:
        print(f"autoshrink: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C (130), or SIGTERM during a search (143)
        print(f"autoshrink: {err or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(err, "signum", 2)


if __name__ == "__main__":
    sys.exit(main())
