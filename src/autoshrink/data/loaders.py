"""Data at scale for final training: image data sets read per item, sharded global batches,
DataLoaders with worker processes and pinned memory.

- :class:`FolderImages` reads image files on access (Pillow, EXIF-upright, RGB) -- an
  ImageFolder tree of any size; :class:`ArrayImages` serves an in-memory :class:`ImageData`
  (digits, Fashion-MNIST, CIFAR-10). Both take keys ``(index, epoch)`` and augment each image
  with a generator seeded by ``(seed, epoch, index)``, so what an image looks like never
  depends on the worker, the process or the order it is read in.
- :class:`GlobalBatchSampler` cuts a seeded permutation of the whole data set into *global*
  batches and gives each process its contiguous share of every batch: N processes with
  global batch B see exactly the batches one process with batch B sees. Its state is
  ``(seed, epoch)``.
- :func:`folder_data` / :func:`array_data` make the train and validation :class:`TrainingData`
  of a run; :func:`make_loader` wraps one side in a DataLoader for one process.

Folder trees are ``root/train/<class>/...`` with ``root/val/<class>/...`` (or ``test``); a
root with only class folders gets a 20% validation split per class, drawn with
:data:`~autoshrink.data.images.SPLIT_SEED` whatever the run's seed (a search holds out
the same images). Classes come from
:func:`autoshrink.data.imagefolder.scan_classes` (sorted folder names).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from autoshrink.data.imagefolder import split_tree, upright_eight_bit
from autoshrink.data.images import SPLIT_SEED, ImageData, channel_stats
from autoshrink.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from autoshrink.errors import AutoshrinkError, ConfigError, DataError
from autoshrink.user_files import require_folder

logger = logging.getLogger(__name__)

Key = tuple[int, int]  # (image index, epoch)


class KeyedImages(Dataset):
    """Images and labels served by key ``(index, epoch)``, augmented by ``transform``."""

    def __init__(self, labels: np.ndarray, transform: ImageTransform, seed: int) -> None:
        self.labels = labels.astype(np.int64)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image | np.ndarray:
        """The image at ``index`` before augmentation; each subclass says how it is read."""
        raise NotImplementedError

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        index, epoch = key
        rng = np.random.default_rng((self.seed, epoch, index))
        return self.transform(self.image(index), rng), int(self.labels[index])


class FolderImages(KeyedImages):
    """Image files decoded on access (RGB, EXIF-upright).

    The paths are kept as one fixed-width bytes array, not a list of Python objects, so
    forked DataLoader workers share it instead of copying it page by page.
    """

    def __init__(
        self, paths: list[Path], labels: np.ndarray, transform: ImageTransform, seed: int
    ) -> None:
        super().__init__(labels, transform, seed)
        self.paths = np.array([os.fsencode(p) for p in paths])

    def image(self, index: int) -> Image.Image:
        """The file at ``index`` decoded as upright RGB; :class:`DataError` if it is unreadable."""
        path = os.fsdecode(self.paths[index])
        try:
            with Image.open(path) as img:
                return upright_eight_bit(img, path).convert("RGB")
        except DataError:
            raise
        except Exception as err:  # Pillow raises many kinds for a bad file
            raise DataError(f"{path}: unreadable image ({err})") from None


class ArrayImages(KeyedImages):
    """Images held in memory as ``[N, C, H, W]`` floats in [0, 1]."""

    def __init__(
        self, x: np.ndarray, labels: np.ndarray, transform: ImageTransform, seed: int
    ) -> None:
        super().__init__(labels, transform, seed)
        self.x = np.ascontiguousarray(x, dtype=np.float32)

    def image(self, index: int) -> np.ndarray:
        """The ``[C, H, W]`` float32 image at ``index`` (a view of the array, not a copy)."""
        return self.x[index]


@dataclass(frozen=True, eq=False)
class TrainingData:
    """The two sides of a final training, what the network must fit, and the per-channel
    ``mean`` and ``std`` its inputs are normalised with (what a deployed network needs too)."""

    train: KeyedImages
    val: KeyedImages
    classes: tuple[str, ...]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """The number of classes (``len(classes)``)."""
        return len(self.classes)


class AugmentSettings(Protocol):
    """What the loaders read from a recipe (:class:`autoshrink.training.recipes.Recipe`)."""

    @property
    def image_size(self) -> int | None:
        """The side images are served at; ``None``: the data's own (folders: 224 or 32, by
        ``augment``)."""
        ...

    @property
    def augment(self) -> str:
        """The training augmentation: ``imagenet``, ``crop-flip`` or ``none``."""
        ...

    @property
    def flip(self) -> bool:
        """Whether training flips images horizontally at random (not with ``augment`` ``none``)."""
        ...

    @property
    def crop_padding(self) -> int | None:
        """The reflect padding of ``crop-flip``'s random crop; ``None``: an eighth of the side."""
        ...

    @property
    def crop_scale(self) -> tuple[float, float]:
        """The range of the area fraction of ``imagenet``'s random-resized crop."""
        ...

    @property
    def eval_crop(self) -> float:
        """The centre square ``imagenet`` evaluation keeps, as a fraction of the short side."""
        ...

    @property
    def random_erasing(self) -> float:
        """The probability of erasing one random rectangle of a training image."""
        ...


def _transforms(
    recipe: AugmentSettings, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[ImageTransform, ImageTransform]:
    keys = ("augment", "flip", "crop_padding", "crop_scale", "eval_crop", "random_erasing")
    common = {k: getattr(recipe, k) for k in keys}
    return (
        ImageTransform(size, mean, std, train=True, **common),
        ImageTransform(size, mean, std, train=False, **common),
    )


def array_data(data: ImageData, recipe: AugmentSettings, *, seed: int = 0) -> TrainingData:
    """An in-memory data set, normalised with its training set's per-channel statistics."""
    mean, std = channel_stats(data.train_x)
    size = recipe.image_size or data.image_size
    mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    train_t, val_t = _transforms(recipe, size, mean_t, std_t)
    return TrainingData(
        ArrayImages(data.train_x, data.train_y, train_t, seed),
        ArrayImages(data.test_x, data.test_y, val_t, seed),
        data.classes,
        data.in_channels,
        size,
        mean_t,
        std_t,
    )


def folder_data(root: str | Path, recipe: AugmentSettings, *, seed: int = 0) -> TrainingData:
    """An ImageFolder tree (see the module docstring) read per image, ImageNet-normalised RGB.

    Raises :class:`DataError` for a missing root, a root without class folders, an empty
    class folder, or validation classes that have no training folder.
    """
    root = Path(root).expanduser()
    require_folder(
        root,
        DataError,
        f"an image folder, {root}/train/<class>/ and {root}/val/<class>/ (or {root}/<class>/)",
    )
    # the held-out images do not move with the training seed (a search carves them so too)
    split = split_tree(root, 0.2, SPLIT_SEED)  # a train/ without val/ or test/ is refused there
    size = recipe.image_size or (224 if recipe.augment == "imagenet" else 32)
    train_t, val_t = _transforms(recipe, size, IMAGENET_MEAN, IMAGENET_STD)
    logger.info(
        "imagefolder %s: %d classes, %d train, %d val images, at %dpx",
        root,
        len(split.classes),
        len(split.train_paths),
        len(split.test_paths),
        size,
    )
    return TrainingData(
        FolderImages(split.train_paths, split.train_y, train_t, seed),
        FolderImages(split.test_paths, split.test_y, val_t, seed),
        split.classes,
        3,
        size,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )


class GlobalBatchSampler:
    """This process's share of every global batch, as lists of keys ``(index, epoch)``.

    Training (``shuffle``): a permutation seeded by ``(seed, epoch)``, cut into global batches
    of ``global_batch``; the last incomplete batch is dropped. Evaluation: the images in order,
    every batch (the last one too) split as evenly as possible over the processes.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch % world_size:
            raise ConfigError(
                f"global batch {global_batch} must be a multiple of the {world_size} processes"
            )
        if shuffle and n < global_batch:
            raise ConfigError(f"batch size {global_batch} exceeds the {n} training images")
        self.n, self.global_batch = n, global_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch``'s batches next: its permutation and its keys ``(index, epoch)``."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """The state a checkpoint keeps: ``{"seed": ..., "epoch": ...}``."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed and epoch :meth:`state_dict` returned."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def __len__(self) -> int:
        if self.shuffle:
            return self.n // self.global_batch
        return -(-self.n // self.global_batch)

    def __iter__(self) -> Iterator[list[Key]]:
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        else:
            order = np.arange(self.n)
        for b in range(len(self)):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            share = np.array_split(batch, self.world_size)[self.rank]
            if len(share):
                yield [(int(i), self.epoch) for i in share]


def make_loader(
    images: KeyedImages,
    sampler: GlobalBatchSampler,
    *,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``images`` in ``sampler``'s batches, with ``workers`` processes."""
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    return DataLoader(
        images,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=leave_sigterm_to_the_training,
    )


def batches(loader: DataLoader) -> Iterator[Any]:
    """The batches of ``loader``; an autoshrink error raised in a worker comes out as the worker
    raised it -- one line -- where torch re-raises it with the worker's whole traceback in its
    message ("Caught DataError in DataLoader worker process 0. Original Traceback ...")."""
    try:
        yield from loader
    except AutoshrinkError as err:
        first, _, trace = str(err).partition("\n")
        if not (first.startswith("Caught ") and trace.strip()):
            raise
        said = trace.strip().splitlines()[-1]  # "autoshrink.errors.DataError: <its message>"
        raise type(err)(said.split(": ", 1)[-1]) from None


def close_workers(loader: DataLoader) -> None:
    """Stop ``loader``'s persistent worker processes now, as torch does when it drops them
    (a loader keeps them as long as it lives, and they ignore SIGTERM: an interpreter that
    exited with one alive, after an error, waited on it for ever)."""
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    loader._iterator = None  # torch's own attribute, which __iter__ remakes
    if shutdown is not None:
        shutdown()


def leave_sigterm_to_the_training(worker_id: int) -> None:
    """In a DataLoader worker: ignore SIGTERM, as torch's workers ignore SIGINT. A SIGTERM to
    the whole process group (``timeout``, Slurm, ``kill -- -PGID``) then stops the training,
    which says how to resume and shuts its workers down; a worker killed by it first made
    torch print tracebacks after that line. So did a worker whose batch the stopping training
    was fetching (:func:`quiet_when_the_reader_left`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = quiet_when_the_reader_left


def quiet_when_the_reader_left(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """A DataLoader worker's ``sys.excepthook``: the connection of ``multiprocessing``'s
    resource sharer (its thread hands a batch's shared memory to the training, and reports its
    errors through this hook) reset by a training that stopped mid-fetch is said in nothing --
    the training has said how it stopped; anything else as Python says it."""
    shared = any(Path(f.filename).name == "resource_sharer.py" for f in traceback.extract_tb(trace))
    if not (shared and issubclass(kind, (ConnectionError, EOFError))):
        sys.__excepthook__(kind, error, trace)
