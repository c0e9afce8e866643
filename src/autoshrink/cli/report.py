"""``autoshrink report FOLDER``: write a static HTML report of a search run or a bench output."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoshrink.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write FOLDER/report/index.html for a search run (also while it runs) or a bench",
        description="Write a static report (opens from disk) of a search run folder -- score, "
        "accuracy and cost per step, the Pareto front of all candidates, the chosen cells, "
        "the steps and the config -- or of an 'autoshrink bench nb201 --out' folder. "
        "Reads only the folder; writes only FOLDER/report/.",
    )
    p.add_argument("folder", type=Path, metavar="FOLDER", help="run folder or bench --out folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    page = write_report(args.folder)
    print(f"report: {page}")
    return 0
