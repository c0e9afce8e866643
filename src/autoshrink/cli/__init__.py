"""The ``autoshrink`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package with a ``register(subparsers)``
function that adds its parser and sets ``handler``; :data:`SUBCOMMANDS` lists them in the
order ``--help`` shows. A run loads the module of its sub-command only, so ``--help``,
``show`` or ``count`` start without importing torch. Errors a user can cause print as one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from autoshrink import __version__
from autoshrink.errors import AutoshrinkError, ConfigError, os_error_line
from autoshrink.ranges import MAX_COUNT, MAX_SEED
from autoshrink.stop_signals import sigint_deferred

#: The sub-commands in the order ``--help`` lists them, with their one-line help.
SUBCOMMANDS = {
    "search": "run (or resume) an AutoShrink search (or a random / REA baseline)",
    "show": "print a cell and write its picture (PNG/SVG)",
    "count": "parameters and MACs of a network built from a cell",
    "train": "train a cell's network on a data set and report test accuracy",
    "bench": "compare search strategies on a tabular benchmark (NAS-Bench-201)",
    "latency": "measure a cell's network latency on this machine (torch or onnxruntime)",
    "export": "export a cell's or an mbconv architecture's network: ONNX, safetensors "
    "weights, one standalone PyTorch file",
    "report": "write FOLDER/report/index.html for a search run (also while it runs), a "
    "bench or a singlepath search; compare several runs with --out DIR",
    "singlepath": "Single-Path NAS: the most accurate MobileNetV2-space network under a "
    "latency target",
}

#: How the command line writes a log line (the pool's workers write theirs the same way).
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

EPILOG = """\
examples:
  autoshrink search --preset demo --out runs/demo      a real search on the embedded digits
  autoshrink search --resume runs/demo                 continue a killed search
  autoshrink show runs/demo/best_cell.json             print a cell, write its picture
  autoshrink count CELL.json --macro shrinkcnn-imagenet
  autoshrink train runs/demo/best_cell.json --dataset digits --no-flip --epochs 30
  autoshrink singlepath --preset demo --latency-target 5 --out runs/sp   Single-Path NAS
"""


def shows_default(default: object, text: str) -> bool:
    """Whether an option's help should end with ``(default: X)``: not for an option without a
    default (``None``: the preset's or the run's value applies), a flag (``False``), or help
    that already names its default."""
    return not (default is None or default is False or "default" in text)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to an option's help where :func:`shows_default` says so."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        return super()._get_help_string(action) if shows_default(action.default, text) else text


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors (an unknown option, a bad choice, a value its
    type refuses) print as one line naming where the options are listed, and exit with status
    2, as the command's other errors do; argparse's own prints its usage block first."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


class RenamedFlag(argparse.Action):
    """An option's old name, kept working but hidden from ``--help``: it stores into the new
    name's destination and prints a one-line warning that names the new one."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        """Warn, then store ``values`` as the new name would."""
        print(f"autoshrink: warning: {option_string} is now {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def renamed_flag(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, kind: type
) -> None:
    """Keep ``old`` working as a hidden alias of the option ``new`` (same ``dest``)."""
    parser.add_argument(
        old, dest=dest, type=kind, action=RenamedFlag, new=new, help=argparse.SUPPRESS
    )


#: The most images an option counts (a data set's training split, say: ImageNet's is 1.28M).
MAX_IMAGES = 2**31 - 1


def int_at_most(high: int) -> Callable[[str], int]:
    """An ``argparse`` type: an integer of at most ``high`` (lower bounds are checked where
    the value is used, with its own message); anything else is argparse's one-line error."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text}")
        return value

    return integer


def count_number(text: str) -> int:
    """An ``argparse`` type: a size or count of at most :data:`MAX_COUNT` (epochs, batches,
    candidates, hidden units, workers)."""
    return int_at_most(MAX_COUNT)(text)


def images_number(text: str) -> int:
    """An ``argparse`` type: a number of images, at most :data:`MAX_IMAGES`."""
    return int_at_most(MAX_IMAGES)(text)


def seed_number(text: str) -> int:
    """An ``argparse`` type: a seed, an integer in ``0..MAX_SEED``."""
    value = int_at_most(MAX_SEED)(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def folder_path(text: str) -> Path:
    """An ``argparse`` type: an output folder, or a run to resume; an empty string (a shell
    variable left unset, say) is refused rather than read as the current folder."""
    return Path(non_empty_path(text, "a folder"))


def data_path(text: str) -> str:
    """An ``argparse`` type: ``--data``, a data folder or a text file; an empty string is
    refused, as by :func:`folder_path`, rather than read as the current folder."""
    return non_empty_path(text, "a folder or file")


def non_empty_path(text: str, what: str) -> str:
    """``text``, unless it is empty or blank: an ``argparse`` error expecting ``what``."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected {what}, got an empty path")
    return text


def refuse_for_arch(args: argparse.Namespace, *names: str) -> None:
    """Refuse the options ``names`` (argparse names) given for an mbconv architecture file,
    which is the network: a macro, or a language model's sizes, would be ignored."""
    given = ["--" + name.replace("_", "-") for name in names if getattr(args, name) is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: not for an mbconv architecture file ({args.cell}), which is "
            "the network itself"
        )


def add_latency_table(parser: argparse.ArgumentParser, help: str) -> None:
    """The ``--latency-table FILE`` option (``dest="table"``) of ``latency`` and ``singlepath``,
    with its old name ``--table``."""
    parser.add_argument(
        "--latency-table", dest="table", type=Path, default=None, metavar="FILE", help=help
    )
    renamed_flag(parser, "--table", "--latency-table", dest="table", kind=Path)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or with ``command`` the parser of that one alone: the
    others are listed but their modules (several import torch, seconds) are not loaded."""
    parser = OneLineErrorParser(
        prog="autoshrink",
        description="Topology-aware neural architecture search (AutoShrink, AAAI 2020).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autoshrink {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, line in SUBCOMMANDS.items():
        if command in (None, name):
            importlib.import_module(f"autoshrink.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=line)
    for command_parser in sub.choices.values():  # `autoshrink search -v` works too
        command_parser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
    return parser


def chosen_command(argv: Sequence[str]) -> str:
    """The sub-command ``argv`` names (its first word that is not an option), or ``""``."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a search stopped early, 2 bad
    input, a path that cannot be read or written or sizes beyond this machine's memory, 130
    interrupted by Ctrl-C, 143 by SIGTERM, 141 quietly when the reader of its output has
    closed the pipe; ``-v`` logs the traceback of an OSError)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    sizes = NETWORK_SIZES  # what an out-of-memory line names; a command may name its own
    try:
        # building the parser imports the command's modules (torch): a Ctrl-C there is said
        # once they are imported -- raised inside torch's C import of numpy it was swallowed,
        # or left numpy half imported for a traceback later
        with sigint_deferred() as ctrl_c:
            command = chosen_command(argv)
            parser = build_parser(command)
        if ctrl_c:
            raise KeyboardInterrupt
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # argparse would name the top-level --help: name the command's
            where = f"{parser.prog} {command}" if command else parser.prog
            parser.exit(2, f"{where}: error: unrecognized arguments: {' '.join(unknown)} "
                        f"(see: {where} --help)\n")  # fmt: skip
        sizes = getattr(args, "memory_sizes", sizes)
        configure_logging(args.verbose)
        with lines_above_bars():
            status = int(args.handler(args) or 0)
        sys.stdout.flush()  # a pipe its reader closed fails here, not at the exit's flush
        return status
    except AutoshrinkError as err:
        if not (isinstance(err, ConfigError) and said_by_rank_zero()):
            print(f"autoshrink: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `autoshrink show cell.json | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # 128 + SIGPIPE, as a shell reports a command its pipe ended
    except OSError as err:  # a path named by the user that cannot be read or written
        logging.getLogger(__name__).debug("%s", err, exc_info=True)
        print(f"autoshrink: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:  # e.g. latency --image-size 65536
        line = out_of_memory_line(err, sizes)
        if line is None:
            raise
        print(f"autoshrink: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C (130), or SIGTERM during a search (143)
        if not said_by_rank_zero():
            print(f"autoshrink: {str(err) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(err, "signum", 2)


def configure_logging(verbose: bool) -> None:
    """Log the package's own lines (its debug ones too with ``-v``) and other libraries'
    warnings (matplotlib's errors only: a stale font cache warns for every label), for the rest
    of the process, as ``logging.basicConfig`` does."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)  # where none is set yet
    logging.getLogger("autoshrink").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)


def lines_above_bars() -> contextlib.AbstractContextManager[object]:
    """While a command runs, a line logged to the terminal is written above the progress bars
    (``tqdm.write``), not into them; where logging writes elsewhere (a host program's own
    handlers), nothing changes."""
    from tqdm.contrib.logging import logging_redirect_tqdm  # 30 ms: not at every start-up

    console = any(
        type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)
        for h in logging.getLogger().handlers
    )
    return logging_redirect_tqdm() if console else contextlib.nullcontext()


def said_by_rank_zero() -> bool:
    """Whether this is one of torchrun's processes other than rank 0. Given the same command
    line and files, and torchrun's signals, it meets the same configuration errors and stops
    as rank 0, which alone says them; its other errors (its own GPU, an image only it reads)
    are not configuration errors, and it says them."""
    return "TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("RANK", "0") != "0"


def millions(n: float) -> str:
    """``n`` in millions: one decimal from 10M up (``383.7M``), three below (``3.601M``,
    ``0.034M``: a small cell's MACs printed as ``0.0M`` before)."""
    return f"{n / 1e6:.1f}M" if n >= 1e7 else f"{n / 1e6:.3f}M"


#: The settings an out-of-memory line names, unless the command sets ``memory_sizes``.
NETWORK_SIZES = "batch, image size, width, nodes"


def out_of_memory_line(err: BaseException, sizes: str = NETWORK_SIZES) -> str | None:
    """One line for an allocation that failed (Python's, or torch's on the CPU or a GPU),
    naming the settings ``sizes`` that ask for the memory; None for any other error."""
    text = str(err)
    oom = type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in text
    if not (oom or isinstance(err, MemoryError)):
        return None
    asked = re.search(r"tried to allocate (\d+ bytes|[\d.]+ \w+)", text, re.I)
    size = asked[1] if asked else ""
    if size.endswith(" bytes"):  # the CPU allocator's count
        size = f"{int(size.split()[0]) / 1e9:.1f} GB"
    return (
        f"out of memory{f' (tried to allocate {size})' if size else ''}: the sizes asked for "
        f"({sizes}) do not fit this machine"
    )


if __name__ == "__main__":
    sys.exit(main())
