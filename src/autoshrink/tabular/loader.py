"""One entry point for benchmark tables: the flat CSVs, or an official archive on opt-in."""

from __future__ import annotations

from pathlib import Path

from autoshrink.errors import BenchmarkError
from autoshrink.tabular.archive import archive_tables, read_archive
from autoshrink.tabular.tables import FILE_12EPOCH, FILE_200EPOCH, NB201Tables, load_flat_tables
from autoshrink.user_files import require_folder


def load_tables(directory: str | Path, *, allow_pickle: bool = False) -> NB201Tables:
    """Tables from ``directory``: the flat CSVs when it holds them (preferred: no pickle),
    else an official NATS-Bench topology archive folder (``meta.pickle.pbz2`` + per-cell
    files), which needs ``allow_pickle=True`` -- see :mod:`autoshrink.tabular.archive`."""
    directory = Path(directory)
    require_folder(directory, BenchmarkError, "a folder of NAS-Bench-201 tables")
    if (directory / FILE_12EPOCH).is_file() or (directory / FILE_200EPOCH).is_file():
        return load_flat_tables(directory)
    if (directory / "meta.pickle.pbz2").is_file():
        return archive_tables(read_archive(directory, allow_pickle=allow_pickle))
    raise BenchmarkError(
        f"no NAS-Bench-201 tables in {directory}; expected {FILE_12EPOCH} and {FILE_200EPOCH} "
        "(flat tables) or meta.pickle.pbz2 (an official archive folder, with --allow-pickle)"
    )
