"""The official NATS-Bench archive format (``*.pickle.pbz2``), read only on explicit opt-in.

An archive folder (e.g. ``NATS-tss-v1_0-3ffb9-simple/``) holds ``meta.pickle.pbz2`` (the
arch string of every official index) and one ``NNNNNN.pickle.pbz2`` per cell: for each
training length (``hp`` = ``"12"``, ``"200"``; the size space also ``"01"``, ``"90"``) and each
``(dataset, seed)`` run, the per-epoch accuracies and losses, ``params`` and ``flop`` (in M).

**Why the opt-in.** These files are bz2-compressed Python pickles, and unpickling a file can run
any code its author chose. The loaders therefore refuse unless the caller passes
``allow_pickle=True`` (``--allow-pickle`` on the command line), and even then they read with a
restricted unpickler (:mod:`autoshrink.safe_pickle`, allow-list ``NUMPY_SCALARS``) that builds
only builtin containers, numbers and strings plus the three globals these files use --
``collections.OrderedDict``, and numpy's ``dtype``/``scalar`` pair, replaced by a plain decoder
of the scalar's bytes (no numpy code runs). Any other global makes the load fail.

Numbers extracted (:func:`record_entries`), per dataset and training length ``E``:
``valid`` = ``x-valid@E-1`` (CIFAR-10: of the ``cifar10-valid`` run), ``test`` = ``x-test@E-1``
(CIFAR-10: ``ori-test@E-1`` of the ``cifar10`` run), each the mean over the recorded seeds --
the same numbers the flat tables hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.errors import BenchmarkError, CellError
from autoshrink.safe_pickle import NUMPY_SCALARS, bunzip2, load_pickle_file
from autoshrink.spaces.nb201 import NUM_CELLS, ArchIndex, dataset_name
from autoshrink.tabular.tables import Key, NB201Tables
from autoshrink.user_files import require_folder

#: What a refused record of a ``-full`` archive (the trained weights, as torch tensors) adds.
FULL_ARCHIVE = (
    "a NATS-Bench -full archive holds torch tensors: read the -simple one "
    "(NATS-tss-v1_0-3ffb9-simple, NATS-sss-v1_0-50262-simple)"
)


def read_pbz2(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """The object in one ``.pickle.pbz2`` file, read with the restricted unpickler.

    Raises :class:`BenchmarkError` unless ``allow_pickle`` is true, and for a missing,
    corrupt or disallowed file.
    """
    return load_pickle_file(
        path,
        NUMPY_SCALARS,
        allow_pickle=allow_pickle,
        error=BenchmarkError,
        what="NATS-Bench archive file",
        decompress=bunzip2,
        hints={"torch": FULL_ARCHIVE},
    )


@dataclass(frozen=True)
class ArchiveEntry:
    """One cell's numbers on one data set at one training length (seed means)."""

    index: int
    arch: str
    dataset: str
    epochs: int
    params: float  # millions
    flop: float  # millions
    accuracy: Mapping[str, float] = field(default_factory=dict)  # split -> percent
    loss: Mapping[str, float] = field(default_factory=dict)  # split -> loss
    seeds: tuple[int, ...] = ()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _split_runs(results: Mapping[Any, Any], dataset: str, split: str) -> tuple[list[Any], str]:
    """The runs and the eval name that hold ``split`` of ``dataset`` (see the module doc)."""
    if dataset == "cifar10":
        name, tag = ("cifar10-valid", "x-valid") if split == "valid" else ("cifar10", "ori-test")
    else:
        name, tag = dataset, ("x-valid" if split == "valid" else "x-test")
    return [res for (run, _seed), res in results.items() if run == name], tag


def _entry(info: Mapping[str, Any], dataset: str) -> ArchiveEntry | None:
    results = info["all_results"]
    seeds = sorted(int(seed) for (run, seed) in results if run == dataset)
    if not seeds:
        return None
    first = results[(dataset, seeds[0])]
    epochs = int(first["epochs"])
    acc: dict[str, float] = {}
    loss: dict[str, float] = {}
    for split in ("valid", "test"):
        runs, tag = _split_runs(results, dataset, split)
        at = f"{tag}@{epochs - 1}"
        acc[split] = _mean([r["eval_acc1es"][at] for r in runs if at in r["eval_acc1es"]])
        loss[split] = _mean([r["eval_losses"][at] for r in runs if at in r["eval_losses"]])
    return ArchiveEntry(
        index=int(info["arch_index"]),
        arch=str(info["arch_str"]),
        dataset=dataset,
        epochs=epochs,
        params=float(first["params"]),
        flop=float(first["flop"]),
        accuracy=acc,
        loss=loss,
        seeds=tuple(seeds),
    )


def record_entries(record: Mapping[str, Any], source: str) -> list[ArchiveEntry]:
    """The :class:`ArchiveEntry` list of one per-cell record (see the module docstring)."""
    out: list[ArchiveEntry] = []
    try:
        for info in record.values():
            for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
                entry = _entry(info, dataset)
                if entry is not None:
                    out.append(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise BenchmarkError(f"NATS-Bench record {source} is malformed: {err!r}") from None
    return out


@dataclass(frozen=True)
class Archive:
    """An archive folder: the official arch list and the entries of the cells present."""

    arch_strings: tuple[str, ...]
    entries: tuple[ArchiveEntry, ...]
    source: str


def read_archive(directory: str | Path, *, allow_pickle: bool = False) -> Archive:
    """Read ``meta.pickle.pbz2`` and every ``NNNNNN.pickle.pbz2`` of an archive folder."""
    directory = Path(directory)
    require_folder(directory, BenchmarkError, "a NATS-Bench archive folder")
    meta = read_pbz2(directory / "meta.pickle.pbz2", allow_pickle=allow_pickle)
    if not isinstance(meta, dict) or not isinstance(meta.get("meta_archs"), list):
        raise BenchmarkError(f"{directory}/meta.pickle.pbz2 has no 'meta_archs' list")
    entries: list[ArchiveEntry] = []
    for path in sorted(directory.glob("[0-9]*.pickle.pbz2")):
        record = read_pbz2(path, allow_pickle=allow_pickle)
        if not isinstance(record, dict):
            raise BenchmarkError(f"NATS-Bench record {path} is not a dict of training lengths")
        entries.extend(record_entries(record, str(path)))
    return Archive(tuple(str(a) for a in meta["meta_archs"]), tuple(entries), str(directory))


def archive_tables(archive: Archive) -> NB201Tables:
    """Topology-space tables from an archive: NaN for every cell the folder has no record of."""
    if len(archive.arch_strings) != NUM_CELLS:
        raise BenchmarkError(
            f"{archive.source} lists {len(archive.arch_strings)} archs; a topology archive "
            f"has {NUM_CELLS}"
        )
    try:
        index = ArchIndex(archive.arch_strings, source=archive.source)
    except CellError as err:
        raise BenchmarkError(str(err)) from None
    values: dict[Key, np.ndarray] = {}
    for e in archive.entries:
        if not 0 <= e.index < NUM_CELLS:  # a negative one indexed from the end
            raise BenchmarkError(
                f"{archive.source}: record of {e.arch!r} has arch_index {e.index}; expected "
                f"0..{NUM_CELLS - 1}"
            )
        if archive.arch_strings[e.index] != e.arch:
            raise BenchmarkError(f"{archive.source}: record {e.index} is not {e.arch!r}")
        for metric, numbers in (("accuracy", e.accuracy), ("loss", e.loss)):
            for split, value in numbers.items():
                if metric == "accuracy" and not (math.isnan(value) or 0 <= value <= 100):
                    raise BenchmarkError(
                        f"{archive.source}: record {e.index}, {e.dataset} {split} accuracy "
                        f"{value} is outside 0..100"
                    )
                key = (dataset_name(e.dataset), metric, e.epochs, split)
                arr = values.setdefault(key, np.full(NUM_CELLS, np.nan))
                arr[e.index] = value
    for arr in values.values():
        arr.setflags(write=False)
    return NB201Tables(index=index, values=values, source=f"archive {archive.source}")
