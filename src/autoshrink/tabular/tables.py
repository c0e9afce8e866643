"""NAS-Bench-201 accuracy tables: the flat CSV loader and the one query function.

A :class:`NB201Tables` holds, for each ``(dataset, metric, epochs, split)`` it knows, one
float64 array over the 15,625 official indices (``NaN`` where a cell is not recorded), and the
official index <-> cell mapping. :func:`load_flat_tables` reads the two flat CSVs (a few MB,
well under a second, about a megabyte of arrays):

- ``nb201_12epoch_valtest.csv`` -- columns ``arch`` (official index), ``cellstr`` (arch string),
  ``cifar10-val``, ``cifar10-test``, ``cifar100-val``, ``cifar100-test``, ``imagenet-val``,
  ``imagenet-test``: 12-epoch top-1 accuracy in percent;
- ``nb201_200epoch_test.csv`` -- ``CIFAR10TestAccuracy200Epochs``,
  ``CIFAR100TestAccuracy200Epochs``, ``ImageNetTestAccuracy200Epochs``, ``ArchitectureString``,
  row ``i`` = official index ``i``: 200-epoch test accuracy in percent.

What the numbers are (checked against the official records, see :mod:`.archive`):
CIFAR-10 *valid* is the ``cifar10-valid`` run (trained on half of the training set, evaluated
on the other half), mean of its seeds; CIFAR-10 *test* is the ``cifar10`` run (trained on the
whole training set) on the test set; CIFAR-100 and ImageNet16-120 *valid*/*test* are the two
halves of their test sets (``x-valid``/``x-test``). 200-epoch test numbers are seed means.

:func:`query` has no defaults: data set, metric, epochs and split are always spelled out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoshrink.errors import BenchmarkError, CellError, ConfigError
from autoshrink.spaces.nb201 import NUM_CELLS, ArchIndex, NB201Cell, dataset_name
from autoshrink.user_files import require_folder

SPLITS: tuple[str, ...] = ("valid", "test")
FILE_12EPOCH = "nb201_12epoch_valtest.csv"
FILE_200EPOCH = "nb201_200epoch_test.csv"
#: The largest table file read (each flat table is about 3 MB): a huge file in its place is
#: refused before it is read, instead of filling the memory.
TABLE_LIMIT = 64 * 2**20
_COLUMNS_12 = {
    ("cifar10", "valid"): "cifar10-val",
    ("cifar10", "test"): "cifar10-test",
    ("cifar100", "valid"): "cifar100-val",
    ("cifar100", "test"): "cifar100-test",
    ("ImageNet16-120", "valid"): "imagenet-val",
    ("ImageNet16-120", "test"): "imagenet-test",
}
_COLUMNS_200 = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "ImageNet16-120": "ImageNetTestAccuracy200Epochs",
}

Key = tuple[str, str, int, str]  # (dataset, metric, epochs, split)


@dataclass(frozen=True)
class NB201Tables:
    """Benchmark numbers by official index.

    Attributes:
        index: the official index <-> cell mapping.
        values: ``(dataset, metric, epochs, split) -> float64[15625]`` (read-only, NaN = none).
        source: where the numbers came from (for messages).
    """

    index: ArchIndex
    values: Mapping[Key, np.ndarray]
    source: str

    def keys(self) -> list[Key]:
        """The ``(dataset, metric, epochs, split)`` combinations these tables hold."""
        return sorted(self.values)

    def column(self, *, dataset: str, metric: str, epochs: int, split: str) -> np.ndarray:
        """The read-only array of one combination, by official index; a clear error if absent."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
            raise ConfigError(  # int(200.7) read the 200-epoch numbers
                f"epochs must be a whole number of training epochs (e.g. 12 or 200), got {epochs!r}"
            )
        key = (dataset_name(dataset), metric, int(epochs), split)
        arr = self.values.get(key)
        if arr is None:
            have = ", ".join(f"{d}/{m}/{e}ep/{s}" for d, m, e, s in self.keys())
            raise BenchmarkError(
                f"{self.source} has no {key[2]}-epoch {split} {metric} for {key[0]}; it has: {have}"
            )
        return arr


def _resolve(tables: NB201Tables, arch: NB201Cell | int | str) -> tuple[int, NB201Cell]:
    if isinstance(arch, NB201Cell):
        return tables.index.index(arch), arch
    if isinstance(arch, str):
        cell = NB201Cell.from_string(arch)
        return tables.index.index(cell), cell
    if isinstance(arch, (int, np.integer)) and not isinstance(arch, bool):
        return int(arch), tables.index.cell(int(arch))
    raise CellError(f"arch must be a cell, an arch string or an official index, got {arch!r}")


def query(
    tables: NB201Tables,
    arch: NB201Cell | int | str,
    *,
    dataset: str,
    metric: str,
    epochs: int,
    split: str,
) -> float:
    """One number of one cell: e.g. ``dataset="cifar10", metric="accuracy", epochs=200,
    split="test"``. ``arch`` is a cell, an arch string or an official index. Raises
    :class:`BenchmarkError` when the tables lack the combination or the cell."""
    column = tables.column(dataset=dataset, metric=metric, epochs=epochs, split=split)
    i, cell = _resolve(tables, arch)
    value = float(column[i])
    if value != value:  # NaN: not recorded
        raise BenchmarkError(
            f"{tables.source} has no {epochs}-epoch {split} {metric} of {dataset} "
            f"for cell {i} {cell}"
        )
    return value


def _read_csv(path: Path, required: list[str]) -> tuple[list[str], list[list[str]]]:
    if path.is_dir():
        raise BenchmarkError(f"NAS-Bench-201 table {path} is a folder; expected the flat CSV")
    if not path.is_file():
        raise BenchmarkError(
            f"NAS-Bench-201 table {path} not found; expected the flat CSV {path.name} "
            "(see ../shared/data/README.md)"
        )
    if path.stat().st_size > TABLE_LIMIT:
        raise BenchmarkError(
            f"NAS-Bench-201 table {path} is larger than {TABLE_LIMIT // 2**20} MiB; expected the "
            f"flat CSV {path.name} (about 3 MB)"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # a spreadsheet's BOM too
            text = f.read()
        rows = list(csv.reader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BenchmarkError(f"cannot read NAS-Bench-201 table {path}: {err}") from None
    while rows and not rows[-1]:  # blank lines at the end (an editor's extra line break)
        rows.pop()
    if not rows:
        raise BenchmarkError(f"NAS-Bench-201 table {path} is empty; expected a CSV header")
    if not text.endswith("\n"):  # cut inside the last number, it would read as another
        raise BenchmarkError(
            f"NAS-Bench-201 table {path} ends inside a line (cut short?); expected each line, "
            "the last too, to end with a line break"
        )
    header, body = rows[0], rows[1:]
    missing = [c for c in required if c not in header]
    if missing:
        raise BenchmarkError(f"NAS-Bench-201 table {path} lacks the columns {missing}")
    if len(body) != NUM_CELLS:
        raise BenchmarkError(
            f"NAS-Bench-201 table {path} has {len(body)} data rows; expected {NUM_CELLS}"
        )
    for i, row in enumerate(body):  # a field too many shifted every number after it
        if len(row) != len(header):
            raise BenchmarkError(
                f"NAS-Bench-201 table {path}, line {i + 2}: {len(row)} fields, the header "
                f"has {len(header)}"
            )
    return header, body


def _floats(path: Path, header: list[str], body: list[list[str]], name: str) -> np.ndarray:
    k = header.index(name)
    out = np.empty(NUM_CELLS, dtype=np.float64)
    for i, row in enumerate(body):
        try:
            out[i] = float(row[k])  # every row has the header's fields (_read_csv)
        except ValueError:
            raise BenchmarkError(
                f"NAS-Bench-201 table {path}, line {i + 2}, column {name}: "
                f"expected an accuracy in percent, got {row[k]!r}"
            ) from None
    bad = ~((out >= 0.0) & (out <= 100.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BenchmarkError(
            f"NAS-Bench-201 table {path}, line {i + 2}, column {name}: "
            f"accuracy {out[i]} is outside 0..100"
        )
    if out.max() <= 1.0:  # read as percent, every number would be a hundred times too small
        raise BenchmarkError(
            f"NAS-Bench-201 table {path}, column {name}: every accuracy is within 0..1 "
            "(fractions?); expected percent"
        )
    out.setflags(write=False)
    return out


def load_flat_tables(directory: str | Path) -> NB201Tables:
    """Load :data:`FILE_12EPOCH` and :data:`FILE_200EPOCH` from ``directory``.

    Both files must list the same arch string for every official index; a missing file, a
    missing column, a wrong row count or a bad number raises :class:`BenchmarkError`.
    """
    directory = Path(directory)
    require_folder(
        directory,
        BenchmarkError,
        f"a NAS-Bench-201 table folder with {FILE_12EPOCH} and {FILE_200EPOCH}",
    )
    p12, p200 = directory / FILE_12EPOCH, directory / FILE_200EPOCH
    h12, b12 = _read_csv(p12, ["arch", "cellstr", *_COLUMNS_12.values()])
    h200, b200 = _read_csv(p200, ["ArchitectureString", *_COLUMNS_200.values()])
    k_idx, k_str, k_str200 = (
        h12.index("arch"),
        h12.index("cellstr"),
        h200.index("ArchitectureString"),
    )
    strings: list[str] = [""] * NUM_CELLS
    for line, row in enumerate(b12, start=2):
        try:
            i = int(row[k_idx])
        except ValueError:
            raise BenchmarkError(
                f"NAS-Bench-201 table {p12}, line {line}: expected an official index and an "
                "arch string"
            ) from None
        if i != line - 2:
            raise BenchmarkError(
                f"NAS-Bench-201 table {p12}, line {line}: official index {i}, expected {line - 2} "
                "(rows must be in index order)"
            )
        text = row[k_str]
        if b200[i][k_str200] != text:
            raise BenchmarkError(
                f"NAS-Bench-201 tables disagree at official index {i}: {p12.name} has {text!r}, "
                f"{p200.name} does not"
            )
        strings[i] = text
    try:
        index = ArchIndex(strings, source=str(p12))
    except CellError as err:
        raise BenchmarkError(str(err)) from None
    values: dict[Key, np.ndarray] = {}
    for (dataset, split), name in _COLUMNS_12.items():
        values[(dataset, "accuracy", 12, split)] = _floats(p12, h12, b12, name)
    for dataset, name in _COLUMNS_200.items():
        values[(dataset, "accuracy", 200, "test")] = _floats(p200, h200, b200, name)
    return NB201Tables(index=index, values=values, source=f"flat tables in {directory}")
