"""Image classification data from a folder tree: ``root/<class>/*.png`` and friends.

Two layouts are accepted:

- ``root/<class>/...``: every sub-folder is a class; a seeded, per-class test split
  (``test_fraction``, 20% by default) is carved from it.
- ``root/train/<class>/...`` with ``root/test/<class>/...`` (or ``root/val/...``): the given
  split is used as is; the test classes must be among the training classes.

Classes are the folder names in sorted order. Images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``,
found recursively within a class folder) are read with Pillow, turned upright by their EXIF
orientation, converted to RGB -- or kept single-channel when every image is grayscale -- and
resized to ``image_size`` x ``image_size``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from autoshrink.data.images import SPLIT_SEED, ImageData
from autoshrink.errors import ConfigError, DataError
from autoshrink.user_files import require_folder

logger = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
#: 16-bit grayscale, as Pillow opens a 16-bit PNG: scaled to 8 bits (Pillow's own conversion
#: to "L" or "RGB" clips every value above 255 to white).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
GRAY_MODES = frozenset({"1", "L", "LA"}) | SIXTEEN_BIT_MODES
TEST_DIRS = ("test", "val")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def scan_classes(folder: Path) -> dict[str, list[Path]]:
    """Map each class folder name under ``folder`` (sorted) to its sorted image files.

    Raises :class:`DataError` naming the folder when it has no class folders, or naming a
    class folder that holds no images.
    """
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{folder}: no class folders; expected {folder}/<class>/*{{{','.join(EXTENSIONS)}}}"
        )
    classes: dict[str, list[Path]] = {}
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if _is_image(p))
        if not files:
            raise DataError(f"{d}: class folder holds no images ({', '.join(EXTENSIONS)})")
        classes[d.name] = files
    return classes


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except Exception as err:  # Pillow raises many kinds for a bad file
        raise DataError(f"{path}: unreadable image ({err})") from None


def pixel_mode(img: Image.Image) -> str:
    """``img``'s mode, a PNG's 32-bit integer mode ``"I"`` named ``"I;16"``: a PNG holds at
    most 16 bits a sample, and Pillow before 10.3 opens 16-bit grayscale PNGs as ``"I"``."""
    return "I;16" if img.mode == "I" and img.format == "PNG" else img.mode


def upright_eight_bit(img: Image.Image, path: Path | str) -> Image.Image:
    """``img`` as opened, turned upright by its EXIF orientation, in a mode Pillow converts
    without losing it: 16-bit grayscale scaled to 8 bits (its top byte); 32-bit integer or
    float pixels, whose range no file states, are a :class:`DataError` naming ``path``."""
    mode = pixel_mode(img)  # of the file: the upright copy has no format
    upright = ImageOps.exif_transpose(img)
    if mode in SIXTEEN_BIT_MODES:
        return Image.fromarray((np.asarray(upright).astype(np.uint16) >> 8).astype(np.uint8))
    if mode in ("I", "F"):
        raise DataError(
            f"{path}: {'32-bit integer' if mode == 'I' else 'floating-point'} pixels "
            f"(mode {mode}), of no stated range; save the images with 8 or 16 bits"
        )
    return upright


def _read_images(paths: list[Path], image_size: int) -> np.ndarray:
    """Decode, convert and resize ``paths`` into one ``[N, C, S, S]`` float32 array in [0, 1]."""
    modes = set()
    for p in paths:  # headers only: decide grayscale or RGB for the whole data set
        with _open(p) as img:
            modes.add(pixel_mode(img))
    mode = "L" if modes <= GRAY_MODES else "RGB"
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc="images", unit="img", disable=None)):
        with _open(p) as img:
            try:
                small = (
                    upright_eight_bit(img, p)
                    .convert(mode)
                    .resize((image_size, image_size), Image.Resampling.BILINEAR)
                )
            except DataError:
                raise
            except Exception as err:  # truncated or corrupt pixel data shows up here
                raise DataError(f"{p}: unreadable image ({err})") from None
        pixels = np.asarray(small, dtype=np.uint8)  # [S, S] or [S, S, 3]
        out[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return out.astype(np.float32) / 255.0


def _flatten(
    tree: dict[str, list[Path]], classes: tuple[str, ...]
) -> tuple[list[Path], np.ndarray]:
    index = {name: i for i, name in enumerate(classes)}
    paths = [p for name in tree for p in tree[name]]
    labels = np.array([index[name] for name in tree for _ in tree[name]], dtype=np.int64)
    return paths, labels


def carve_test_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: indices ``(train, test)``, ``round(n * test_fraction)`` of each
    class's ``n`` images to test, but always at least one left for training."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(int(round(len(idx) * test_fraction)), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True, eq=False)
class TreeSplit:
    """A tree's classes (sorted folder names) and its train and test image paths with labels."""

    classes: tuple[str, ...]
    train_paths: list[Path]
    train_y: np.ndarray
    test_paths: list[Path]
    test_y: np.ndarray


def split_tree(root: Path, test_fraction: float, seed: int) -> TreeSplit:
    """The image files of either layout of the module docstring, split into train and test.

    Raises :class:`DataError` for a root without class folders, fewer than two classes, an
    empty class folder, test classes that have no training folder, a ``train/`` folder
    without its ``test/`` or ``val/`` (its class folders would be read as one class, "train"),
    or a ``test/`` or ``val/`` of class folders without ``train/`` (likewise, one class), and a
    split of classes too small to leave a test image. Where both are there, ``test/`` is read
    (logged).
    """
    found = [root / d for d in TEST_DIRS if (root / d).is_dir()]
    test_dir = found[0] if found else None
    if len(found) > 1:  # which one was read went unsaid
        logger.info("%s: testing on %s/; %s/ beside it is not read", root, *(p.name for p in found))
    if (root / "train").is_dir() and test_dir is None:
        raise DataError(f"{root}: has train/ but no val/ or test/ folder beside it")
    if (
        test_dir is not None
        and not (root / "train").is_dir()
        and any(p.is_dir() and not p.name.startswith(".") for p in test_dir.iterdir())
    ):
        raise DataError(
            f"{root}: has {test_dir.name}/ of class folders but no train/ folder beside it "
            "(the other class folders belong in train/)"
        )
    split = _split_tree(root, test_dir, test_fraction, seed)
    if len(split.classes) < 2:
        raise DataError(
            f"{root}: {len(split.classes)} class folder ({', '.join(split.classes)}); a data set "
            "to classify needs at least 2"
        )
    if not split.test_paths:  # training would end dividing by zero test images
        largest = int(np.max(np.bincount(split.train_y)))
        raise DataError(
            f"{root}: no image left to test on: {test_fraction:.0%} of each class's images rounds "
            f"to none (the largest class has {largest}); give the classes more images, or put "
            "the test images in val/ or test/ beside a train/ folder"
        )
    untested = sorted(set(split.classes) - {split.classes[i] for i in np.unique(split.test_y)})
    if untested:  # its accuracy counts none of their images
        logger.warning(
            "%s: %d class(es) without a test image (%s%s): too small for %.0f%% of their images "
            "to round to one, or none in the test folder",
            root,
            len(untested),
            ", ".join(untested[:3]),
            ", ..." if len(untested) > 3 else "",
            100 * test_fraction,
        )
    return split


def _split_tree(root: Path, test_dir: Path | None, test_fraction: float, seed: int) -> TreeSplit:
    """:func:`split_tree` of a checked root."""
    if (root / "train").is_dir() and test_dir is not None:
        train_tree, test_tree = scan_classes(root / "train"), scan_classes(test_dir)
        classes = tuple(train_tree)
        unknown = sorted(set(test_tree) - set(train_tree))
        if unknown:
            raise DataError(
                f"{test_dir}: classes {unknown} have no training folder in {root / 'train'}"
            )
        return TreeSplit(classes, *_flatten(train_tree, classes), *_flatten(test_tree, classes))
    tree = scan_classes(root)
    classes = tuple(tree)
    paths, labels = _flatten(tree, classes)
    tr, te = carve_test_split(labels, test_fraction, seed)
    return TreeSplit(
        classes, [paths[i] for i in tr], labels[tr], [paths[i] for i in te], labels[te]
    )


def load_image_folder(
    root: str | Path, *, image_size: int = 32, test_fraction: float = 0.2, seed: int = SPLIT_SEED
) -> ImageData:
    """Read a class-per-folder image tree (see the module docstring) into an :class:`ImageData`.

    Raises :class:`DataError` naming the path for a missing root, a root without class folders,
    an empty class folder or an unreadable image.
    """
    if image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    root = Path(root)
    require_folder(root, DataError, f"an image folder, {root}/<class>/*.png ...")
    split = split_tree(root, test_fraction, seed)
    classes, train_y, test_y = split.classes, split.train_y, split.test_y
    x = _read_images(split.train_paths + split.test_paths, image_size)
    train_x, test_x = x[: len(split.train_paths)], x[len(split.train_paths) :]
    logger.info(
        "imagefolder: %d classes, %d train, %d test images of %dx%dx%d from %s",
        len(classes),
        len(train_y),
        len(test_y),
        x.shape[1],
        image_size,
        image_size,
        root,
    )
    return ImageData("imagefolder", train_x, train_y, test_x, test_y, classes)
