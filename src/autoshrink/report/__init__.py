"""Static HTML reports of a search's run folder or a NAS-Bench-201 bench folder.

:func:`write_report` looks at the folder and writes ``FOLDER/report/index.html`` with SVG
plots and cell pictures beside it: a search run (``config.json`` + ``journal.jsonl``; it may
still be running) gets :func:`~autoshrink.report.run_report.write_run_report`, a bench output
(``bench.json``) gets :func:`~autoshrink.report.bench_report.write_bench_report`. The page
opens from disk: no server, no scripts, relative image links.
"""

from __future__ import annotations

from pathlib import Path

from autoshrink.errors import AutoshrinkError
from autoshrink.report.bench_report import BENCH, write_bench_report
from autoshrink.report.reading import CONFIG, read_run
from autoshrink.report.run_report import write_run_report

__all__ = ["read_run", "write_bench_report", "write_report", "write_run_report"]


def write_report(folder: str | Path) -> Path:
    """Write the report of a run folder or bench folder; returns ``FOLDER/report/index.html``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutoshrinkError(f"{folder}: no such folder; expected a run or bench output folder")
    if (folder / CONFIG).is_file():
        return write_run_report(folder)
    if (folder / BENCH).is_file():
        return write_bench_report(folder)
    raise AutoshrinkError(
        f"{folder}: neither a search run folder ({CONFIG}) nor a bench output folder ({BENCH})"
    )
