"""Image data sets and the seeded proxy split the search trains candidates on.

An :class:`ImageData` holds a data set as numpy arrays (``[N, C, H, W]`` float32 in [0, 1],
int64 labels) with its train and test parts. :func:`proxy_split` draws the search's proxy task
from the training part: ``per_class`` images of each class for training and ``val_size``
held-out training images for validation, without replacement, from a seed, normalised per
channel with the proxy training set's statistics. :func:`load_images` is the one entry point
that reads a named data set from a path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from autoshrink.errors import ConfigError, DataError
from autoshrink.nouns import count
from autoshrink.ranges import SEED, WHOLE, check_value

#: The last four are multi-domain (:mod:`autoshrink.data.domains`).
DATASETS = (
    "digits",
    "fashion-mnist",
    "cifar10",
    "imagefolder",
    "rotated-digits",
    "rotated-fashion-mnist",
    "colored-digits",
    "colored-fashion-mnist",
)

#: The data sets built from scikit-learn's embedded digits: they read no folder.
EMBEDDED = ("digits", "rotated-digits", "colored-digits")

#: The seed of the test split carved from ``digits`` and from an image folder without
#: ``train/``: one for every run, so that a search and ``train`` at any ``--seed`` hold out the
#: same images.
SPLIT_SEED = 0


def check_root(name: str, root: str | Path | None) -> None:
    """Raise :class:`DataError` for a folder given to a data set that reads none (a
    ``--data-dir`` that would be silently ignored)."""
    if root is not None and name in EMBEDDED:
        raise DataError(
            f"--data-dir {root}: {reads_no_folder(name)}; drop --data-dir or choose another "
            "--dataset"
        )


def reads_no_folder(name: str) -> str:
    """Why the data set ``name`` of :data:`EMBEDDED` takes no folder."""
    return f"{name!r} is built from scikit-learn's embedded digits and reads no folder"


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image data set: ``train_x [N, C, H, W]`` float32 in [0, 1], ``train_y [N]``."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise DataError(
                    f"{self.name}: {part} images must be [N, C, H, W] with N labels, "
                    f"got {x.shape} and {y.shape}"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(f"{self.name}: train and test images differ in shape")

    @property
    def num_classes(self) -> int:
        """The number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Channels of an image (``C`` of ``[N, C, H, W]``)."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Side of an image in pixels (``H`` of ``[N, C, H, W]``)."""
        return int(self.train_x.shape[2])


_Split = TypeVar("_Split", bound="ProxySplit")


@dataclass(frozen=True, eq=False)
class ProxySplit:
    """The normalised proxy task: training and validation images with labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def restricted(self: _Split, classes: Sequence[int]) -> _Split:
        """The images of ``classes`` only (labels and normalisation unchanged): a progressive
        screening stage's task (:mod:`autoshrink.screening`)."""
        keep = np.asarray(sorted(classes), dtype=np.int64)
        return self.subset(np.isin(self.train_y, keep), np.isin(self.val_y, keep))

    def subset(self: _Split, train: np.ndarray, val: np.ndarray) -> _Split:
        """The images where the boolean masks ``train`` and ``val`` hold."""
        return replace(
            self,
            train_x=self.train_x[train],
            train_y=self.train_y[train],
            val_x=self.val_x[val],
            val_y=self.val_y[val],
        )


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``[N, C, H, W]`` images (std >= 1e-6)."""
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.maximum(x.std(axis=(0, 2, 3), dtype=np.float64), 1e-6)
    return mean, std


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``x [N, C, H, W]`` standardised per channel by ``mean`` and ``std`` ``[C]``, float32."""
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def proxy_split(data: ImageData, *, per_class: int, val_size: int, seed: int) -> ProxySplit:
    """Draw ``per_class`` training images of each class and ``val_size`` held-out ones."""
    return split_at(data, *proxy_indices(data, per_class=per_class, val_size=val_size, seed=seed))


def split_at(data: ImageData, train: np.ndarray, val: np.ndarray) -> ProxySplit:
    """The proxy task of the training part's images at indices ``train`` and ``val``,
    normalised with the statistics of the ``train`` images."""
    mean, std = channel_stats(data.train_x[train])
    return ProxySplit(
        train_x=normalise(data.train_x[train], mean, std),
        train_y=data.train_y[train].astype(np.int64),
        val_x=normalise(data.train_x[val], mean, std),
        val_y=data.train_y[val].astype(np.int64),
        num_classes=data.num_classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def proxy_indices(
    data: ImageData, *, per_class: int, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The indices into ``data.train_x`` of :func:`proxy_split`'s training and validation sets;
    a :class:`ConfigError` for a ``per_class`` or ``val_size`` that is no whole number >= 1 (0
    gave an empty training or validation set) or a ``seed`` that is no whole number >= 0."""
    for name, value in (("per_class", per_class), ("val_size", val_size)):
        check_value(f"proxy_split: {name}", value, WHOLE)
    check_value("proxy_split: seed", seed, SEED)
    rng = np.random.default_rng(seed)
    train_idx: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for c in range(data.num_classes):
        idx = np.flatnonzero(data.train_y == c)
        if len(idx) < per_class:
            raise DataError(
                f"{data.name}: class {data.classes[c]!r} has {count(len(idx), 'training image')}, "
                f"fewer than the {per_class} per class the proxy task asks for; lower per_class "
                "(--per-class)"
            )
        idx = rng.permutation(idx)
        train_idx.append(idx[:per_class])
        rest.append(idx[per_class:])
    held_out = np.concatenate(rest)
    if len(held_out) < val_size:
        raise DataError(
            f"{data.name}: only {count(len(held_out), 'held-out training image')} for a "
            f"validation set of {val_size}; lower per_class (--per-class, now {per_class}) or "
            "val_size (--val-size)"
        )
    val_idx = rng.choice(held_out, size=val_size, replace=False)
    return rng.permutation(np.concatenate(train_idx)), val_idx


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits: 1,797 images of values 0..16 and their labels, read from the
    CSV file scikit-learn ships without importing it (and SciPy: a second of every digits
    run's start-up); through its loader where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    origin = None if spec is None or spec.origin is None else Path(spec.origin)
    csv = None if origin is None else origin.parent / "datasets" / "data" / "digits.csv.gz"
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(csv, delimiter=",")  # 64 pixels, then the label, per row
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits(test_fraction: float = 0.2, seed: int = SPLIT_SEED) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images), split into train/test from a seed."""
    images, target = bundled_digits()
    x = (images.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8]
    y = target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return ImageData(
        "digits", x[train], y[train], x[test], y[test], tuple(str(c) for c in range(10))
    )


def load_images(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = 32,
    test_domain: str | None = None,
) -> ImageData:
    """Load a named data set from :data:`DATASETS`.

    - ``digits``: scikit-learn's embedded 8x8 digits; ``root`` must be ``None``
      (:func:`check_root`) and ``download`` is ignored.
    - ``fashion-mnist``: the four IDX files in ``root`` (default: Debian's
      ``/usr/share/datasets/fashion-mnist``).
    - ``cifar10``: the binary batches folder at or in ``root``, or the python (pickle) batches
      folder at ``root`` itself; with ``download``, the official binary archive is fetched into
      ``root`` first when neither is there.
    - ``imagefolder``: a ``root/<class>/*.png`` tree, resized to ``image_size``; without a
      ``train``/``test`` split a 20% test split is carved.

    - ``rotated-*`` / ``colored-*``: multi-domain (:mod:`autoshrink.data.domains`), every
      domain but ``test_domain`` (which is never built), with a domain label per image.

    The test split carved from ``digits`` and from an image folder is always the one of
    :data:`SPLIT_SEED`, whatever a run's seed: a search never trains on the images
    ``autoshrink train`` tests on. Raises :class:`DataError` for a missing ``root`` or
    unreadable files, :class:`~autoshrink.errors.ConfigError` for an unknown name (as the
    multi-domain loader does) or a ``test_domain`` the data set lacks.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")
    from autoshrink.data.domains import DOMAINS, check_test_domain, load_training_domains

    check_test_domain(name, test_domain)
    check_root(name, root)
    if download:
        fetch_images(name, root)
    if name in DOMAINS:
        return load_training_domains(name, root, test_domain=test_domain)
    if name == "digits":
        return load_digits(seed=SPLIT_SEED)
    if name == "fashion-mnist":
        from autoshrink.data.idx import load_fashion_mnist

        return load_fashion_mnist(None if root is None else Path(root).expanduser())
    if root is None:
        raise DataError(no_root(name))
    root = Path(root).expanduser()
    if name == "cifar10":
        from autoshrink.data.cifar import load_cifar10

        return load_cifar10(root)
    from autoshrink.data.imagefolder import load_image_folder

    return load_image_folder(root, image_size=image_size, seed=SPLIT_SEED)


def no_root(name: str) -> str:
    """The line that says data set ``name`` was given no folder, and where to give one."""
    return (
        f"data set {name!r} needs a root folder to read it from: --data-dir DIR on the command "
        "line, data_dir in a config"
    )


def fetch_images(name: str, root: str | Path | None) -> None:
    """``--download``: fetch the data set ``name`` into ``root`` when it is not there, without
    loading it. CIFAR-10 only: every other data set is on the machine or the user's, and is
    refused with :class:`DataError`, as is a missing ``root``."""
    if name != "cifar10":
        raise DataError(f"--download is only available for cifar10, not for {name!r}")
    if root is None:
        raise DataError(no_root(name))
    from autoshrink.data import download as dl
    from autoshrink.data.cifar import find_cifar10

    root = Path(root).expanduser()
    if find_cifar10(root) is None:
        dl.download_cifar10(root)  # looked up on the module: tests aim it at a local server
