"""Zero-cost scores of NAS-Bench-201 cells, computed on demand and cached by cell code.

:class:`NB201ZeroCost` is the ``rank`` callable of the zero-cost-screened AutoShrink variant of
``autoshrink bench nb201`` (strategy ``autoshrink-zc``). A cell's value is the proxy on its
topology network (``C = 16, N = 5``, the data set's classes and image size) at a default
initialisation seeded by the cell's code, on one fixed batch of ``batch`` N(0, 1) images with
uniform random labels drawn from ``seed`` -- the benchmark's images are not on the machine, and
for synflow and params (the data-free proxies) the batch's content does not matter. Values are
kept for the whole bench (every run shares them) and, with ``cache``, in a ``.npz`` file that
later benches reuse and extend (:meth:`NB201ZeroCost.load_cache`): ``values``, 15,625 float64
(NaN = not computed), and ``settings``, what made them (proxy, data set, seed, batch) as JSON.
A cache of other settings, or a file that is not a cache, is refused, never overwritten.
``params`` is read from the analytic count of
:func:`~autoshrink.cost.nb201.topology_cost_table` (the same numbers as counting a built
network's parameters, see the tests), so it costs nothing.

Why not NASLib's stored scores: its file covers about 725 of the 15,625 cells, so it holds one
or two of the up to 24 cells of a typical shrink space.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoshrink.atomic_write import locked, write_atomic
from autoshrink.cost.nb201 import topology_cost_table
from autoshrink.devices import own_generators, torch_threads
from autoshrink.errors import BenchmarkError, ConfigError
from autoshrink.nn.nb201 import topology_network
from autoshrink.outputs import check_output_file
from autoshrink.spaces.nb201 import DATASETS, NUM_CELLS, NB201Cell, dataset_name
from autoshrink.zero_cost import proxy

log = logging.getLogger(__name__)

#: The ``format`` a cache file's settings name.
CACHE_FORMAT = "autoshrink.nb201-zero-cost/1"


class NB201ZeroCost:
    """``scores(cells) -> proxy values``; computes the missing ones (see the module docstring).
    :meth:`load_cache` starts it from the values of a cache file."""

    def __init__(
        self,
        name: str,
        dataset: str,
        *,
        batch: int = 64,
        seed: int = 0,
        cache: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        self.name = name
        self.threads = threads  # torch threads while computing (None: torch's own)
        self._proxy = proxy(name)
        self.dataset = dataset_name(dataset)
        self.num_classes, size = DATASETS[self.dataset]
        g = torch.Generator().manual_seed(seed)
        self.batch_x = torch.randn(batch, 3, size, size, generator=g)
        self.batch_y = torch.randint(0, self.num_classes, (batch,), generator=g)
        self.seed = seed
        self.batch = batch
        self.cache = None if cache is None else Path(cache)
        if self.cache is not None and self.cache.suffix != ".npz":
            raise ConfigError(
                f"the zero-cost cache must be a .npz file, which records the proxy and data set "
                f"of its values, got {self.cache}; a .npy cache of earlier versions records "
                "neither: give a new .npz file (its values are computed again)"
            )
        self.values = np.full(NUM_CELLS, np.nan)
        if name == "params":  # the analytic count is exactly the proxy (tested): no networks
            self.values = topology_cost_table(self.dataset)[0].astype(np.float64)
        self.computed = 0
        self.seconds = 0.0

    @property
    def settings(self) -> dict[str, Any]:
        """What the values depend on, as a cache file records it."""
        return {
            "format": CACHE_FORMAT,
            "proxy": self.name,
            "dataset": self.dataset,
            "seed": self.seed,
            "batch": self.batch,
        }

    def load_cache(self) -> None:
        """Start from the values ``cache`` holds when that file exists -- a cache of other
        :attr:`settings` is a one-line :class:`BenchmarkError` -- and check now that it can be
        written, for :meth:`save` at the end (the constructor reads no file)."""
        if self.cache is None:
            return
        check_output_file(self.cache, "the zero-cost cache")
        if self.cache.is_file():
            values, settings = read_cache(self.cache)
            if settings != self.settings:
                keys = sorted(set(settings) | set(self.settings))  # one it lacks or has extra too
                differ = [k for k in keys if settings.get(k) != self.settings.get(k)]
                said = ", ".join(
                    f"{k} {settings.get(k)!r}, not {self.settings.get(k)!r}" for k in differ
                )
                raise BenchmarkError(
                    f"{self.cache}: a zero-cost cache of other settings ({said}); give another file"
                )
            if self.name != "params":  # params: the analytic count, exact already
                self.values = values

    def __call__(self, cells: list[NB201Cell]) -> list[float]:
        """The proxy values of ``cells``; a missing one is computed on the cell's topology network
        (initialised from ``seed`` and the cell's code) at the fixed batch, and kept."""
        t0 = time.perf_counter()
        for cell in cells:
            if np.isnan(self.values[cell.code]):
                with torch_threads(self.threads), own_generators():
                    torch.manual_seed(self.seed * NUM_CELLS + cell.code)
                    net = topology_network(cell, num_classes=self.num_classes)
                    self.values[cell.code] = self._proxy(net, self.batch_x, self.batch_y)
                self.computed += 1
        self.seconds += time.perf_counter() - t0
        return [float(self.values[cell.code]) for cell in cells]

    def save(self) -> None:
        """Write the values to ``cache`` (when given), in one step: a failed write leaves the
        cache as it was. Under the cache's lock, values another bench saved there meanwhile
        fill the cells this one lacks, so that two benches sharing a cache lose none."""
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)  # the lock file lives beside it
            settings = np.array(json.dumps(self.settings))
            with locked(self.cache):  # another bench may have saved values meanwhile: kept
                values = self.values.copy()
                if self.cache.is_file():
                    saved, made_with = read_cache(self.cache)
                    if made_with == self.settings:  # else it is replaced, as it was before
                        values = np.where(np.isnan(values), saved, values)

                def write(tmp: Path) -> None:
                    with tmp.open("wb") as f:  # a file, not a name: np.savez would add ".npz"
                        np.savez(f, values=values, settings=settings)

                write_atomic(self.cache, write)
            log.info("%s: %d %s values", self.cache, np.count_nonzero(~np.isnan(values)), self.name)

    def summary(self) -> dict[str, float | int | str]:
        """Proxy, cells computed (not from the cache) and seconds spent."""
        return {"proxy": self.name, "computed": self.computed, "seconds": round(self.seconds, 3)}


def read_cache(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The 15,625 float64 values of a zero-cost cache file (NaN: not computed) and the settings
    it records; never unpickles (``allow_pickle`` stays False). Anything else, a file whose
    bytes changed (the zip's CRC-32) included, is a one-line :class:`BenchmarkError` naming the
    file."""
    what = f"{path}: not a zero-cost cache (an .npz file of 'values' and 'settings')"
    try:
        archive = np.load(path)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise BenchmarkError(f"{what}; a single array, which says not what made it")
        with archive:
            if set(archive.files) != {"values", "settings"}:
                raise BenchmarkError(f"{what}; it holds {sorted(archive.files)}")
            stored, text = archive["values"], archive["settings"]
    except OSError as err:
        raise BenchmarkError(f"{path}: cannot read the zero-cost cache ({err.strerror})") from None
    except zipfile.BadZipFile as err:  # a zip's start (numpy's test), its CRC-32 or end wrong
        raise BenchmarkError(
            f"{path}: a damaged zero-cost cache ({err}); delete it: its values are computed again"
        ) from None
    except (ValueError, EOFError):  # EOF: an empty file; ValueError: one numpy reads only by
        raise BenchmarkError(what) from None  # unpickling (never done)
    if stored.shape != (NUM_CELLS,) or stored.dtype.kind not in "fiu":
        raise BenchmarkError(
            f"{path}: expected {NUM_CELLS} numbers, got {stored.dtype} {stored.shape}"
        )
    try:
        settings = json.loads(str(text)) if text.dtype.kind == "U" and text.ndim == 0 else None
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise BenchmarkError(f"{what}; its 'settings' are not a JSON object")
    return stored.astype(np.float64), settings
