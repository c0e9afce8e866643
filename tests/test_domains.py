"""Multi-domain data sets: DomainBed's constructions, checked against the source images."""

from __future__ import annotations

import numpy as np
import pytest

from autoshrink.data import domains
from autoshrink.data.domains import (
    DOMAINS,
    DomainImageData,
    load_held_out_domain,
    load_training_domains,
)
from autoshrink.data.idx import DEFAULT_FASHION_MNIST_ROOT
from autoshrink.data.images import DATASETS, load_images, proxy_split
from autoshrink.errors import ConfigError


def _digit_index(images: np.ndarray) -> np.ndarray:
    """Which scikit-learn digit each 8x8 image ``[N, 8, 8]`` is (exact match)."""
    from sklearn.datasets import load_digits

    src = load_digits().images.astype(np.float32) / 16.0
    lookup = {img.tobytes(): i for i, img in enumerate(src)}
    return np.array([lookup[img.astype(np.float32).tobytes()] for img in images])


def test_every_multi_domain_set_is_a_named_data_set():
    assert set(DOMAINS) <= set(DATASETS)
    assert DOMAINS["rotated-digits"] == ("0", "15", "30", "45", "60", "75")
    assert DOMAINS["colored-digits"] == ("0.9", "0.8", "0.1")


def test_colored_digits_follows_domainbed():
    data = load_training_domains("colored-digits")
    assert isinstance(data, DomainImageData) and data.in_channels == 2
    x = np.concatenate([data.train_x, data.test_x])
    y = np.concatenate([data.train_y, data.test_y])
    d = np.concatenate([data.train_domain, data.test_domain])
    gray = x.max(axis=1)  # one channel is zeroed, the other holds the digit
    assert (x.min(axis=1) == 0).all()
    idx = _digit_index(gray)
    assert len(set(idx)) == len(idx)  # the domains are disjoint subsets
    from sklearn.datasets import load_digits

    clean = (load_digits().target[idx] < 5).astype(int)
    noise = (clean != y).mean()
    assert abs(noise - 0.25) < 3 * np.sqrt(0.25 * 0.75 / len(y))  # 25% label noise
    green = (x[:, 1].sum(axis=(1, 2)) > 0).astype(int)
    for i, p in enumerate((0.9, 0.8, 0.1)):
        m = d == i
        agree = (green[m] == y[m]).mean()
        assert abs(agree - p) < 4 * np.sqrt(p * (1 - p) / m.sum()), (p, agree)


def test_rotated_digits_domains_are_disjoint_rotations():
    data = load_training_domains("rotated-digits")
    zero = np.concatenate(
        [data.train_x[data.train_domain == 0], data.test_x[data.test_domain == 0]]
    )
    idx0 = _digit_index(zero[:, 0])  # 0 degrees: the source images themselves
    assert len(idx0) == 1797 // 6
    # a 75-degree image is the source image turned: its centre of mass turns with it
    held = load_held_out_domain("rotated-digits", "75")
    from sklearn.datasets import load_digits

    order = np.random.default_rng(domains.BUILD_SEED).permutation(1797)
    src = load_digits().images.astype(np.float32)[order[5 * 299 : 6 * 299]] / 16.0
    assert not set(order[5 * 299 : 6 * 299]) & set(idx0)

    def angle(img: np.ndarray) -> float:
        r, c = np.mgrid[:8, :8] - 3.5
        w = img / img.sum()
        return np.degrees(np.arctan2(-(w * r).sum(), (w * c).sum()))

    turned = [
        (angle(h[0]) - angle(s)) % 360
        for h, s in zip(held.x, src, strict=True)
        if np.hypot(*[(s / s.sum() * g).sum() for g in np.mgrid[:8, :8] - 3.5]) > 0.6
    ]
    assert len(turned) > 50 and abs(np.median(turned) - 75) < 10


def test_test_domain_is_never_in_the_training_domains():
    full = load_images("rotated-digits")
    part = load_images("rotated-digits", test_domain="75")
    assert part.domains == ("0", "15", "30", "45", "60")
    assert len(part.train_y) == len(full.train_y) * 5 // 6
    held = load_held_out_domain("rotated-digits", "75")
    seen = {img.tobytes() for img in np.concatenate([part.train_x, part.test_x])}
    assert not any(img.tobytes() in seen for img in held.x)
    again = load_images("rotated-digits", test_domain="75")  # deterministic
    assert np.array_equal(again.train_x, part.train_x)
    split = proxy_split(part, per_class=50, val_size=100, seed=0)
    assert len(split.train_y) == 500


def test_a_domain_label_indexes_the_domains_the_data_holds():
    """Holding out 15 degrees, the data holds 0, 30, 45, 60, 75: label 1 is the 30-degree
    domain (label 2 of the full data), and the labels run 0..4 (a label of the full list, 5
    for 75, was out of range of the 5 codes the generator is given)."""
    full = load_images("rotated-digits")
    part = load_images("rotated-digits", test_domain="15")
    assert part.domains == ("0", "30", "45", "60", "75")
    assert set(part.train_domain) == set(part.test_domain) == {0, 1, 2, 3, 4}
    for mine, theirs in ((1, 2), (4, 5)):
        assert np.array_equal(
            part.train_x[part.train_domain == mine], full.train_x[full.train_domain == theirs]
        )


@pytest.mark.parametrize(
    ("dataset", "domain", "needle"),
    [
        ("rotated-digits", "90", "unknown test domain '90'"),
        ("digits", "0", "single domain"),
        ("colored-digits", "75", "unknown test domain"),
    ],
)
def test_bad_test_domain(dataset, domain, needle):
    with pytest.raises(ConfigError, match=needle):
        load_images(dataset, test_domain=domain)


def test_classes_of_each_digits_variant_and_an_unknown_set():
    assert load_training_domains("rotated-digits").classes == tuple("0123456789")
    assert load_training_domains("colored-digits").classes == ("digit>=5", "digit<5")
    with pytest.raises(ConfigError, match=r"unknown multi-domain data set 'nope'; expected \["):
        load_training_domains("nope")


@pytest.mark.parametrize("dataset", ["rotated-fashion-mnist", "colored-fashion-mnist"])
def test_fashion_variants(dataset):
    if not (DEFAULT_FASHION_MNIST_ROOT / "train-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST_ROOT}")
    data = load_images(dataset, test_domain=DOMAINS[dataset][-1])
    per = domains.FASHION_PER_DOMAIN[dataset]
    assert len(data.train_y) + len(data.test_y) == per * (len(DOMAINS[dataset]) - 1)
    if dataset.startswith("colored"):
        assert data.train_x.shape[1:] == (2, 14, 14) and data.classes == ("other", "upper-body")
    else:
        assert data.train_x.shape[1:] == (1, 28, 28) and data.num_classes == 10
        assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
