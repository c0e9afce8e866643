"""Per-image augmentation for final training, drawn from a per-image seeded generator.

An image arrives either as a Pillow image (decoded from a file) or as a float32 array
``[C, H, W]`` in [0, 1] (an in-memory data set); :class:`ImageTransform` turns it into a
normalised float tensor ``[C, S, S]``. Training augmentation, as the recipe names it:

- ``imagenet``: a random-resized crop (area 8%-100% of the image by default, aspect ratio
  3/4-4/3, ten tries then the centre) resized to ``S``, and a horizontal flip;
- ``crop-flip``: resize to ``S`` when needed, then a random ``S``-crop of the image padded by
  reflection, and a horizontal flip;
- ``none``: resize to ``S`` when needed;

then per-channel normalisation and, with probability ``random_erasing``, one random rectangle
(2%-33% of the area, aspect 0.3-3.3) replaced by standard-normal noise. Evaluation: the
``imagenet`` mode resizes the centre square of side ``eval_crop`` x the short side (the usual
resize-to-S/0.875-then-centre-crop), the others resize to ``S``. The generator is passed in, so
the same (seed, epoch, image) gives the same pixels in any process, worker or order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

#: Per-channel mean and standard deviation of ImageNet (RGB, in [0, 1]), used for folders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels


def random_resized_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A crop box covering a random fraction ``scale`` of the area at a random aspect ratio
    (log-uniform in ``ratio``); after ten misses, the largest centred box of legal ratio."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return (left, top, left + w, top + h)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return centred_box(width, height, w, h)


def centred_box(width: int, height: int, w: float, h: float) -> Box:
    """The ``w`` x ``h`` box centred in a ``width`` x ``height`` image."""
    left, top = (width - w) / 2, (height - h) / 2
    return (left, top, left + w, top + h)


def erase_box(
    rng: np.random.Generator, height: int, width: int, area: tuple[float, float] = (0.02, 1 / 3)
) -> tuple[int, int, int, int] | None:
    """A random rectangle ``(top, left, h, w)`` for random erasing, or ``None`` after ten misses."""
    log_ratio = (math.log(0.3), math.log(1 / 0.3))
    for _ in range(10):
        target = height * width * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        h = round(math.sqrt(target * aspect))
        w = round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of either kind of image."""
    if isinstance(image, Image.Image):
        return image.size
    return int(image.shape[2]), int(image.shape[1])


def crop_resize(image: Image.Image | np.ndarray, box: Box, size: int) -> np.ndarray:
    """The ``box`` of ``image`` resized (bilinear, antialiased) to ``[C, size, size]`` float32
    in [0, 1]; an array image is ``[C, H, W]`` float32 in [0, 1]."""
    if isinstance(image, Image.Image):
        small = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
        pixels = np.asarray(small, dtype=np.float32) / 255.0  # [S, S] or [S, S, C]
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    top, bottom = _pixel_span(box[1], box[3], image.shape[1])
    left, right = _pixel_span(box[0], box[2], image.shape[2])
    crop = image[:, top:bottom, left:right]
    if crop.shape[1] == size and crop.shape[2] == size:
        return crop.copy()
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(crop))[None],
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return resized[0].numpy()


def _pixel_span(start: float, end: float, length: int) -> tuple[int, int]:
    """The whole pixels ``[a, b)`` of the span ``[start, end)`` of an axis of ``length``
    pixels: its length rounded first (at least one pixel), then its start, as torchvision's
    ``CenterCrop`` does (rounding both ends made the 7-pixel centre crop of an 8-pixel image,
    a span of 0.5 to 7.5, the whole image)."""
    size = min(max(1, round(end - start)), length)
    first = min(max(0, round(start)), length - size)
    return first, first + size


def pad_crop(x: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``[C, H, W]`` crop of ``x`` after reflect padding by ``padding`` pixels."""
    if padding <= 0:
        return x
    _, h, w = x.shape
    dy, dx = (int(v) for v in rng.integers(0, 2 * padding + 1, size=2))
    return x[:, _reflect(dy - padding, h)][:, :, _reflect(dx - padding, w)]


def _reflect(start: int, n: int) -> np.ndarray:
    """Indices ``start .. start+n-1`` into ``n`` pixels, mirrored at the borders (the edge
    pixel not repeated) as often as it takes, as reflect padding (``np.pad``'s ``reflect``,
    any padding) then cropping would pick them."""
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    k = np.abs(np.arange(start, start + n)) % (2 * (n - 1))  # the mirror's period
    return np.where(k > n - 1, 2 * (n - 1) - k, k)


@dataclass(frozen=True)
class ImageTransform:
    """``(image, rng) -> [C, size, size]`` normalised; see the module docstring for the modes."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool
    augment: str = "none"
    flip: bool = True
    crop_padding: int | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    eval_crop: float = 0.875
    random_erasing: float = 0.0

    def __call__(self, image: Image.Image | np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """``image`` (Pillow, or ``[C, H, W]`` float32 in [0, 1]) as a normalised float32 tensor
        ``[C, size, size]``, augmented with draws from ``rng`` when ``train``."""
        width, height = _size(image)
        s = self.size
        if self.augment == "imagenet":
            if self.train:
                box = random_resized_box(rng, width, height, self.crop_scale)
            else:
                side = min(width, height) * self.eval_crop
                box = centred_box(width, height, side, side)
            x = crop_resize(image, box, s)
        else:
            x = crop_resize(image, (0, 0, width, height), s)
            if self.train and self.augment == "crop-flip":
                x = pad_crop(x, s // 8 if self.crop_padding is None else self.crop_padding, rng)
        if self.train and self.flip and self.augment != "none" and rng.random() < 0.5:
            x = x[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        x = (x - mean) / std  # a new contiguous [C, S, S] array
        if self.train and self.random_erasing > 0 and rng.random() < self.random_erasing:
            hole = erase_box(rng, s, s)
            if hole is not None:
                top, left, h, w = hole
                x[:, top : top + h, left : left + w] = rng.standard_normal((x.shape[0], h, w))
        return torch.from_numpy(x)
