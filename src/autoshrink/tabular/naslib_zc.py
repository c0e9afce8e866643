"""NASLib's stored zero-cost scores of NAS-Bench-201 cells (``naslib_zc_nasbench201.json``).

The file (automl/NASLib, NAS-Bench-Suite-Zero) maps each data set (``cifar10``, ``cifar100``,
``ImageNet16-120``) to about 725 cells; a cell's key is NASLib's op-index tuple, e.g.
``"(0, 2, 3, 2, 3, 1)"``, and its record holds ``{"score": float, "time": float}`` per proxy
(``synflow``, ``snip``, ``grad_norm``, ``jacov``, ``nwot``, ``params``, ``flops``, ...) and
``val_accuracy`` (200-epoch validation accuracy, percent). Its ``idx`` is NASLib's own
numbering, not the official index, so cells are matched by their ops.

NASLib's encoding: op index ``0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1,
4 avg_pool_3x3`` on its edges ``(1,2) (1,3) (1,4) (2,3) (2,4) (3,4)`` (nodes from 1), i.e. ours
``(0,1) (0,2) (0,3) (1,2) (1,3) (2,3)`` -- edges 2 and 3 swap against
:data:`~autoshrink.spaces.nb201.EDGES`. Checked: with this mapping the file's validation
accuracy has Spearman 0.98 with the 200-epoch test accuracy of ``nb201_200epoch_test.csv``
(0.75 without the swap). No torch in this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from autoshrink.errors import BenchmarkError, ConfigError
from autoshrink.spaces.nb201 import NB201Cell, dataset_name
from autoshrink.user_files import read_json_file

FILE_NASLIB_ZC = "naslib_zc_nasbench201.json"
NASLIB_OPS: tuple[str, ...] = (
    "skip_connect",
    "none",
    "nor_conv_3x3",
    "nor_conv_1x1",
    "avg_pool_3x3",
)
#: Position in NASLib's tuple of each of our edges (:data:`~autoshrink.spaces.nb201.EDGES`).
_NASLIB_POSITION = (0, 1, 3, 2, 4, 5)
#: Our proxy names -> the file's names.
FILE_NAMES: Mapping[str, str] = {"naswot": "nwot"}


def cell_from_naslib(key: str) -> NB201Cell:
    """Our cell of a NASLib op-index tuple string such as ``"(0, 2, 3, 2, 3, 1)"``."""
    try:
        digits = tuple(int(t) for t in key.strip().strip("()").split(","))
    except ValueError:
        digits = ()
    if len(digits) != 6 or not all(0 <= d < len(NASLIB_OPS) for d in digits):
        raise BenchmarkError(f"not a NASLib NAS-Bench-201 op tuple: {key!r}")
    ops = tuple(NASLIB_OPS[digits[p]] for p in _NASLIB_POSITION)
    return NB201Cell(ops)


@dataclass(frozen=True)
class StoredScores:
    """One data set's records: ``scores[proxy][cell code]`` and ``val_accuracy[cell code]``."""

    dataset: str
    scores: Mapping[str, Mapping[int, float]]
    val_accuracy: Mapping[int, float]

    def proxy(self, name: str) -> Mapping[int, float]:
        """Scores of our proxy ``name`` (``naswot`` is the file's ``nwot``) by cell code."""
        got = self.scores.get(FILE_NAMES.get(name, name))
        if got is None:
            raise ConfigError(f"NASLib's file has no proxy {name!r}; it has {sorted(self.scores)}")
        return got

    def cells(self) -> list[NB201Cell]:
        """The cells the file covers, by ascending code."""
        return [NB201Cell.from_code(c) for c in sorted(self.val_accuracy)]


def load_naslib_scores(path: str | Path, dataset: str = "cifar10") -> StoredScores:
    """Read one data set of the NASLib file (``path`` the file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NASLIB_ZC
    if not path.is_file():
        raise BenchmarkError(f"NASLib zero-cost file not found: {path}")
    data = read_json_file(path, BenchmarkError, "NASLib zero-cost")
    name = dataset_name(dataset)
    if not isinstance(data, dict) or name not in data:
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise BenchmarkError(f"{path} has no data set {name!r}; it has {have}")
    records = data[name]
    if not isinstance(records, dict):  # "has no data set 'cifar10'; it has ['cifar10']"
        raise BenchmarkError(
            f"{path}: data set {name!r} is a {type(records).__name__}; expected an object of cells"
        )
    scores: dict[str, dict[int, float]] = {}
    val: dict[int, float] = {}
    for key, rec in records.items():
        try:
            code = cell_from_naslib(key).code
            val[code] = float(rec["val_accuracy"])
            for proxy, entry in rec.items():
                if isinstance(entry, dict) and "score" in entry:
                    scores.setdefault(proxy, {})[code] = float(entry["score"])
        except BenchmarkError as err:
            raise BenchmarkError(f"{path}: {err}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise BenchmarkError(
                f"{path}: {name} record {key!r} is malformed ({type(err).__name__}: {err})"
            ) from None
    return StoredScores(dataset=name, scores=scores, val_accuracy=val)
