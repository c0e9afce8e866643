"""CIFAR-10 read from its binary or its python-batch (pickle) distribution folder.

Two layouts are accepted:

- binary, ``cifar-10-batches-bin/``, given as the folder itself or its parent:
  ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin`` (records of one label byte
  and 3,072 pixel bytes, red then green then blue planes of 32x32) and ``batches.meta.txt`` (one
  class name a line). No pickle is involved; this is what ``--download`` fetches.
- python, ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
  ``batches.meta``, which are pickles. They are read only from the folder itself: naming it is
  the user's explicit request for a pickle format (a parent holding one is refused, saying
  so), and even then they are read by the restricted unpickler of :mod:`autoshrink.safe_pickle`,
  which can rebuild numpy arrays and plain containers and refuses every other global (a
  :class:`DataError` naming the file).

:func:`load_cifar10` returns ``[N, 3, 32, 32]`` float32 images in [0, 1].
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.data.images import ImageData
from autoshrink.errors import DataError
from autoshrink.nouns import count
from autoshrink.safe_pickle import NUMPY_ARRAYS, load_pickle_file

logger = logging.getLogger(__name__)

BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
SIDE = 32
NUM_CLASSES = 10
PIXELS = 3 * SIDE * SIDE  # 3,072 bytes per image
RECORD = 1 + PIXELS  # binary layout: label byte + pixels


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` with the restricted unpickler (numpy arrays only, ``encoding="bytes"``);
    the opt-in is the python batches folder named (:func:`find_cifar10`).

    Raises :class:`DataError` naming the file when it is missing, truncated or corrupt, or
    when it refers to a global other than numpy's array reconstruction.
    """
    return load_pickle_file(
        path,
        NUMPY_ARRAYS,
        allow_pickle=True,
        error=DataError,
        what="CIFAR-10 python batch",
        encoding="bytes",
    )


def find_cifar10(root: str | Path) -> tuple[Path, str] | None:
    """The CIFAR-10 folder in or at ``root`` and its layout, ``"bin"`` or ``"py"``; or None.

    The binary layout is found in ``root`` or its ``cifar-10-batches-bin/``, and wins; the
    python layout only when ``root`` is that folder itself (its pickles are read only when
    named).
    """
    root = Path(root)
    candidates = [
        (root / BIN_DIR, "data_batch_1.bin", "bin"),
        (root, "data_batch_1.bin", "bin"),
        (root, "data_batch_1", "py"),
    ]
    for folder, first, layout in candidates:
        if (folder / first).is_file():
            return folder, layout
    return None


def _data_batches(folder: Path, suffix: str) -> list[Path]:
    """``data_batch_1{suffix}`` .. ``data_batch_k{suffix}``: the consecutive run from 1."""
    pattern = re.compile(rf"data_batch_(\d+){re.escape(suffix)}")
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise DataError(
            f"{folder}: training batches numbered {numbers}, expected data_batch_1{suffix} "
            f"onwards without gaps"
        )
    return [folder / f"data_batch_{n}{suffix}" for n in numbers]


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"{path}: labels span {int(labels.min())}..{int(labels.max())}, expected 0.."
            f"{num_classes - 1}"
        )


def _read_bin_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read CIFAR-10 binary batch ({err})") from None
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records"
        )
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_labels(path, labels, num_classes)
    return records[:, 1:], labels  # [n, 3072] uint8, [n]


def _read_py_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_load(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array [n, {PIXELS}], got {got}")
    try:  # not floats, truncated to a class; not integers beyond int64
        found = np.asarray(labels)
        if found.dtype.kind not in "iu":
            raise TypeError(found.dtype)
        labels = found.astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: b'labels' must be a list of integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {count(labels.size, 'label')} for {count(len(data), 'image')}")
    _check_labels(path, labels, num_classes)
    return data, labels


def _read_classes(folder: Path, layout: str) -> tuple[str, ...]:
    if layout == "bin":
        path = folder / "batches.meta.txt"
        try:
            text = path.read_text(encoding="utf-8")
            names = [line.strip() for line in text.splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read the class names ({err})") from None
    else:
        path = folder / "batches.meta"
        meta = restricted_load(path)
        raw = meta.get(b"label_names") if isinstance(meta, dict) else None
        if not isinstance(raw, list) or not all(isinstance(n, bytes | str) for n in raw):
            raise DataError(f"{path}: expected a dict with b'label_names', a list of names")
        try:
            names = [n.decode("utf-8") if isinstance(n, bytes) else n for n in raw]
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: a class name that is not UTF-8 ({err})") from None
    if len(names) != NUM_CLASSES:  # "air plane" made 11, and every label one class off
        raise DataError(f"{path}: {len(names)} class names; CIFAR-10 has {NUM_CLASSES}, one a line")
    return tuple(names)


#: The images of each training batch, and of the test batch, of the published CIFAR-10.
OFFICIAL_TRAIN, OFFICIAL_TEST = (10_000,) * 5, 10_000


def _to_images(flat: list[np.ndarray]) -> np.ndarray:
    """Row-major ``[n, 3072]`` uint8 batches -> one ``[N, 3, 32, 32]`` float32 array in [0, 1]."""
    pixels = np.concatenate(flat)
    return (pixels.astype(np.float32) / 255.0).reshape(-1, 3, SIDE, SIDE)


#: How a missing CIFAR-10 is fetched: ``search`` is the command with ``--download`` (singlepath and
#: train, which read the same folders, have none, and were told to "use --download").
FETCH = "with autoshrink search --download (in Python: fetch_images)"


def load_cifar10(root: str | Path) -> ImageData:
    """CIFAR-10 from ``root``: a binary batches folder or its parent, or a python batches folder.

    Raises :class:`DataError` naming the path when no layout is found or a file is corrupt.
    """
    found = find_cifar10(root)
    if found is None and (Path(root) / PY_DIR / "data_batch_1").is_file():
        raise DataError(
            f"{root}: holds only {PY_DIR}/, CIFAR-10's pickle layout, which is read only when "
            f"named: give {Path(root) / PY_DIR} itself as the data folder, or fetch the binary "
            f"layout beside it {FETCH}"
        )
    if found is None:
        raise DataError(
            f"{root}: no CIFAR-10 found; expected {BIN_DIR}/ (data_batch_1.bin ...) or its "
            f"parent, or {PY_DIR}/ itself (data_batch_1 ...), or fetch it {FETCH}"
        )
    folder, layout = found
    suffix = ".bin" if layout == "bin" else ""
    read = _read_bin_batch if layout == "bin" else _read_py_batch
    classes = _read_classes(folder, layout)
    train = [read(p, len(classes)) for p in _data_batches(folder, suffix)]
    test_path = folder / f"test_batch{suffix}"
    if not test_path.is_file():
        raise DataError(f"{test_path}: CIFAR-10 test batch not found")
    test_pixels, test_y = read(test_path, len(classes))
    logger.info(
        "cifar10: %d train batches, %d test images from %s (%s layout)",
        len(train),
        len(test_y),
        folder,
        layout,
    )
    sizes = [len(y) for _, y in train]
    if sizes != list(OFFICIAL_TRAIN) or len(test_y) != OFFICIAL_TEST:
        logger.warning(
            "%s: training batches of %s images and %d test images; CIFAR-10 has 5 of 10,000 "
            "and 10,000 (a partial copy? numbers from it are not CIFAR-10's)",
            folder,
            sizes,
            len(test_y),
        )
    return ImageData(
        "cifar10",
        _to_images([p for p, _ in train]),
        np.concatenate([y for _, y in train]),
        _to_images([test_pixels]),
        test_y,
        classes,
    )
