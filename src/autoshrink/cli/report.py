"""``autoshrink report FOLDER``: a static HTML report of a search run or a bench output; with
several run folders and ``--out DIR``, a comparison of the runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoshrink.cli import SUBCOMMANDS, folder_path
from autoshrink.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` parser to ``sub``."""
    p = sub.add_parser(
        "report",
        help=SUBCOMMANDS["report"],
        description="Write a static report (opens from disk) of a search run folder -- score, "
        "accuracy and cost per step, the Pareto front of all candidates, the chosen cells, "
        "the steps and the config -- or of an 'autoshrink bench nb201 --out' folder. "
        "Reads only the folder; writes only FOLDER/report/. Several run folders with --out DIR: "
        "one page comparing them (best score against candidates, best cells).",
    )
    p.add_argument(
        "folders", type=Path, nargs="+", metavar="FOLDER", help="run folder or bench --out folder"
    )
    p.add_argument(
        "--out",
        type=folder_path,
        default=None,
        metavar="DIR",
        help="where the comparison page goes",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the HTML report of a run or bench folder, or a comparison; 0."""
    # matplotlib comes with the report modules: not for --help or a bad argument
    if len(args.folders) == 1 and args.out is None:
        from autoshrink.report.folder import write_report

        page = write_report(args.folders[0])
    elif args.out is None:
        raise ConfigError("several run folders are compared on one page: give --out DIR")
    else:
        from autoshrink.report.compare import write_comparison

        page = write_comparison(args.folders, args.out)
    print(f"report: {page}")
    return 0
