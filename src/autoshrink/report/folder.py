"""One entry point for any output folder (``FOLDER/report/index.html``): a search run gets the
run report, a bench output the bench report, a Single-Path search its own."""

from __future__ import annotations

from pathlib import Path

from autoshrink.errors import AutoshrinkError
from autoshrink.outputs import holder, unfinished
from autoshrink.report.bench_report import BENCH, write_bench_report
from autoshrink.report.reading import CONFIG
from autoshrink.report.run_report import write_run_report
from autoshrink.report.singlepath_report import DECISIONS, write_singlepath_report
from autoshrink.user_files import require_folder


def write_report(folder: str | Path) -> Path:
    """Write the report of a search run, bench or Single-Path folder; returns
    ``FOLDER/report/index.html``."""
    folder = Path(folder)
    require_folder(folder, AutoshrinkError, "a run or bench output folder")
    if (folder / CONFIG).exists():  # not a file: read_run says so
        return write_run_report(folder)
    if (folder / BENCH).is_file():
        if unfinished(folder / BENCH):
            raise AutoshrinkError(
                f"{folder / BENCH}: the bench stopped before its end and left no results to "
                "report; run it again into this folder"
            )
        return write_bench_report(folder)
    if (folder / DECISIONS).is_file():
        return write_singlepath_report(folder)
    found = holder(folder)
    if found is not None and found[0] == "singlepath":  # it said "neither ... nor ..."
        raise AutoshrinkError(
            f"{folder}: its singlepath search has not ended its first epoch ({DECISIONS} gets a "
            "line after each): nothing to report yet"
        )
    raise AutoshrinkError(
        f"{folder}: neither a search run folder ({CONFIG}) nor a bench output folder ({BENCH}) "
        f"nor a singlepath folder ({DECISIONS})"
    )
