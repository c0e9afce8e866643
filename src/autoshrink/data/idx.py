"""Fashion-MNIST read from its four IDX files (gzip-compressed or raw).

The IDX format is a 4-byte magic number (two zero bytes, a type code -- ``0x08`` for unsigned
bytes -- and the number of dimensions), one big-endian uint32 per dimension, then the data in
row-major order. :func:`read_idx` reads and validates one such file; :func:`load_fashion_mnist`
reads the standard train/test images and labels from a folder, by default the one Debian's
``dataset-fashion-mnist`` package installs, and returns ``[N, 1, 28, 28]`` float32 images in
[0, 1].
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

from autoshrink.data.images import ImageData
from autoshrink.errors import DataError
from autoshrink.nouns import count
from autoshrink.user_files import require_folder

logger = logging.getLogger(__name__)

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

UBYTE = 0x08
IMAGE_SIDE = 28


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with ``ndim`` dimensions (``.gz`` is decompressed).

    Raises :class:`DataError` naming the file when it is missing, not gzip where its name says
    so, has a wrong magic number or dimension count, or holds more or fewer bytes than its
    header announces.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read IDX file ({err})") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file, {len(raw)} bytes is shorter than its header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}, expected 0x0000{UBYTE:02x}{ndim:02x} "
            f"(unsigned bytes, {ndim} dimensions)"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header announces {'x'.join(map(str, dims))} = {expected} bytes of data, "
            f"the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_file(root: Path, stem: str) -> Path:
    """The raw file ``root/stem`` if present, else ``root/stem.gz`` (which may not exist)."""
    raw = root / stem
    return raw if raw.is_file() else root / f"{stem}.gz"


def _read_part(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx_file(root, FASHION_MNIST_FILES[f"{part}_images"])
    labels_path = find_idx_file(root, FASHION_MNIST_FILES[f"{part}_labels"])
    images = read_idx(images_path, ndim=3)  # [N, 28, 28] uint8
    labels = read_idx(labels_path, ndim=1)  # [N] uint8
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {count(len(labels), 'label')} for the "
            f"{count(len(images), 'image')} of {images_path}"
        )
    if not len(images):  # a training without a test: ZeroDivisionError after its first epoch
        raise DataError(f"{images_path}: no images; the {part} part needs some")
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"{labels_path}: label {int(labels.max())} out of range, expected 0.."
            f"{len(FASHION_MNIST_CLASSES) - 1}"
        )
    x = (images.astype(np.float32) / 255.0)[:, None]  # [N, 1, 28, 28]
    return x, labels.astype(np.int64)


def load_fashion_mnist(root: str | Path | None = None) -> ImageData:
    """Fashion-MNIST (60,000 train, 10,000 test images of 28x28) from the IDX files in ``root``.

    ``root`` defaults to :data:`DEFAULT_FASHION_MNIST_ROOT` (Debian's ``dataset-fashion-mnist``).
    Each of the four files may be raw or ``.gz``; the raw one wins when both exist.
    """
    root = DEFAULT_FASHION_MNIST_ROOT if root is None else Path(root)
    require_folder(
        root,
        DataError,
        f"a Fashion-MNIST folder with {FASHION_MNIST_FILES['train_images']}"
        "[.gz] and the three other IDX files (Debian: apt install dataset-fashion-mnist)",
    )
    train_x, train_y = _read_part(root, "train")
    test_x, test_y = _read_part(root, "test")
    logger.info("fashion-mnist: %d train, %d test images from %s", len(train_y), len(test_y), root)
    return ImageData("fashion-mnist", train_x, train_y, test_x, test_y, FASHION_MNIST_CLASSES)
