"""Multi-domain image data sets for domain generalisation, built offline and deterministically.

Four data sets, each a list of *domains* built from data on hand (no download):

- ``rotated-digits`` / ``rotated-fashion-mnist`` (Rotated MNIST as in DomainBed): domains
  ``0``, ``15``, ``30``, ``45``, ``60``, ``75`` (degrees). Each domain is a disjoint, seeded
  subset of the source images (scikit-learn's 1,797 8x8 digits: 299 per domain; Fashion-MNIST's
  70,000 train+test images: :data:`FASHION_PER_DOMAIN` per domain), every image rotated by the
  domain's angle (``scipy.ndimage.rotate``, bilinear, same size). Ten classes.
- ``colored-digits`` / ``colored-fashion-mnist`` (DomainBed's Colored MNIST): domains ``0.9``,
  ``0.8``, ``0.1`` -- the probability that an image's colour agrees with its label. The label
  is binary, flipped with probability 0.25; the colour is the (noisy) label, flipped with
  probability ``1 - p``; images have two channels (red, green) and the channel that is not
  the colour is zeroed. Digits: label ``digit < 5`` (as DomainBed), 8x8 images, 599 per
  domain. Fashion-MNIST: label *upper-body garment* -- T-shirt/top, Pullover, Dress, Coat,
  Shirt (classes 0, 2, 3, 4, 6) -- against the rest (Trouser, Sandal, Sneaker, Bag, Ankle
  boot), a 5/5 split of the ten classes; images 2x2-average-pooled to 14x14 (as DomainBed),
  :data:`FASHION_PER_DOMAIN` per domain.

Each domain is split 80/20 into a train and a test part from a seed. A domain is built from the
source images and its own seeds only, so building some domains never touches the others.

The leave-one-domain-out protocol lives in the loaders: :func:`load_training_domains` builds
only the training domains (never the held-out one) and is all the search may call;
:func:`load_held_out_domain` builds the held-out domain and is called by final evaluation code
only (``autoshrink train --test-domain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoshrink.data.images import ImageData
from autoshrink.errors import ConfigError, DataError

ROTATIONS = ("0", "15", "30", "45", "60", "75")
COLOUR_AGREEMENT = ("0.9", "0.8", "0.1")
#: The domains of every multi-domain data set, in order.
DOMAINS: dict[str, tuple[str, ...]] = {
    "rotated-digits": ROTATIONS,
    "rotated-fashion-mnist": ROTATIONS,
    "colored-digits": COLOUR_AGREEMENT,
    "colored-fashion-mnist": COLOUR_AGREEMENT,
}
#: Fashion-MNIST images per domain (CPU-sized; the source has 70,000).
FASHION_PER_DOMAIN = {"rotated-fashion-mnist": 2000, "colored-fashion-mnist": 4000}
#: Fashion-MNIST classes labelled 1 ("upper-body garment") in the colored variant.
UPPER_BODY = (0, 2, 3, 4, 6)
LABEL_NOISE = 0.25
TEST_FRACTION = 0.2
BUILD_SEED = 2021  # fixed: the data sets are the same for every search seed


@dataclass(frozen=True, eq=False)
class DomainImageData(ImageData):
    """An :class:`ImageData` whose images carry a domain: ``train_domain [N]`` and
    ``test_domain [M]`` index into ``domains`` (the names of the domains it holds)."""

    train_domain: np.ndarray
    test_domain: np.ndarray
    domains: tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.train_domain) != len(self.train_y) or len(self.test_domain) != len(self.test_y):
            raise DataError(f"{self.name}: one domain label per image expected")


@dataclass(frozen=True, eq=False)
class HeldOutDomain:
    """All images of one held-out domain: ``x [N, C, H, W]`` in [0, 1], labels ``y [N]``."""

    dataset: str
    domain: str
    x: np.ndarray
    y: np.ndarray


def check_test_domain(dataset: str, test_domain: str | None) -> None:
    """Raise :class:`ConfigError` unless ``test_domain`` is ``None`` or a domain of ``dataset``."""
    if test_domain is None:
        return
    if dataset not in DOMAINS:
        raise ConfigError(
            f"--test-domain {test_domain}: {dataset!r} has a single domain; the multi-domain "
            f"data sets are {sorted(DOMAINS)}"
        )
    if test_domain not in DOMAINS[dataset]:
        raise ConfigError(
            f"unknown test domain {test_domain!r} of {dataset}; expected one of "
            f"{list(DOMAINS[dataset])}"
        )


# ------------------------------------------------------------------ sources
def _digits_source() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)  # [N, 8, 8]


def _fashion_source(root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    from autoshrink.data.idx import load_fashion_mnist

    d = load_fashion_mnist(None if root is None else Path(root).expanduser())
    x = np.concatenate([d.train_x, d.test_x])[:, 0]  # [70000, 28, 28]
    return x, np.concatenate([d.train_y, d.test_y])


def _source(dataset: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Source images ``[N, H, W]``, labels and images per domain."""
    x, y = _digits_source() if dataset.endswith("digits") else _fashion_source(root)
    per_domain = FASHION_PER_DOMAIN.get(dataset, len(y) // len(DOMAINS[dataset]))
    return x, y, per_domain


# ------------------------------------------------------------------ building
def build_domain(
    dataset: str, domain: str, source: tuple[np.ndarray, np.ndarray, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[n, C, H, W]`` and labels of one domain, from the source images only."""
    x_all, y_all, per_domain = source
    index = DOMAINS[dataset].index(domain)
    order = np.random.default_rng(BUILD_SEED).permutation(len(y_all))
    pick = order[index * per_domain : (index + 1) * per_domain]
    x, y = x_all[pick], y_all[pick]
    rng = np.random.default_rng((BUILD_SEED, index))
    if dataset.startswith("rotated"):
        return _rotate(x, float(domain)), y
    return _colour(dataset, x, y, float(domain), rng)


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.ndimage import rotate

    if degrees == 0:
        out = x
    else:
        out = rotate(x, degrees, axes=(2, 1), reshape=False, order=1, mode="constant")
    return np.clip(out, 0.0, 1.0).astype(np.float32)[:, None]


def _colour(
    dataset: str, x: np.ndarray, y: np.ndarray, agreement: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "colored-fashion-mnist":
        n, h, w = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))  # 14x14, as DomainBed
        binary = np.isin(y, UPPER_BODY).astype(np.int64)
    else:
        binary = (y < 5).astype(np.int64)
    label = binary ^ (rng.random(len(y)) < LABEL_NOISE)
    colour = label ^ (rng.random(len(y)) >= agreement)  # agrees with probability `agreement`
    images = np.stack([x, x], axis=1).astype(np.float32)  # [n, 2, H, W]: red, green
    images[np.arange(len(y)), 1 - colour] = 0.0
    return images, label.astype(np.int64)


def _split(index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng((BUILD_SEED, index, 1)).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return order[n_test:], order[:n_test]


def _classes(dataset: str) -> tuple[str, ...]:
    if dataset == "colored-digits":
        return ("digit>=5", "digit<5")
    if dataset == "colored-fashion-mnist":
        return ("other", "upper-body")
    if dataset == "rotated-digits":
        return tuple(str(c) for c in range(10))
    from autoshrink.data.idx import FASHION_MNIST_CLASSES

    return FASHION_MNIST_CLASSES


def load_training_domains(
    dataset: str, root: str | Path | None = None, *, test_domain: str | None = None
) -> DomainImageData:
    """The domains of ``dataset`` except ``test_domain``, their train and test parts.

    The held-out domain is never built: nothing of it is in the returned object. This is the
    only loader the search calls.
    """
    if dataset not in DOMAINS:
        raise ConfigError(f"unknown multi-domain data set {dataset!r}; expected {sorted(DOMAINS)}")
    check_test_domain(dataset, test_domain)
    names = tuple(d for d in DOMAINS[dataset] if d != test_domain)
    source = _source(dataset, root)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("trx", "try", "trd", "tex", "tey", "ted")}
    for i, name in enumerate(names):
        x, y = build_domain(dataset, name, source)
        tr, te = _split(DOMAINS[dataset].index(name), len(y))
        parts["trx"].append(x[tr])
        parts["try"].append(y[tr])
        parts["trd"].append(np.full(len(tr), i, dtype=np.int64))
        parts["tex"].append(x[te])
        parts["tey"].append(y[te])
        parts["ted"].append(np.full(len(te), i, dtype=np.int64))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return DomainImageData(
        dataset,
        cat["trx"],
        cat["try"],
        cat["tex"],
        cat["tey"],
        _classes(dataset),
        cat["trd"],
        cat["ted"],
        names,
    )


def load_held_out_domain(
    dataset: str, test_domain: str, root: str | Path | None = None
) -> HeldOutDomain:
    """Every image (train and test part) of the held-out domain. Final evaluation only."""
    check_test_domain(dataset, test_domain)
    x, y = build_domain(dataset, test_domain, _source(dataset, root))
    return HeldOutDomain(dataset, test_domain, x, y)
