"""Data at scale: ImageFolder train/val trees, per-image seeded augmentation, sharded batches."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoshrink.data.imagefolder import split_tree
from autoshrink.data.images import SPLIT_SEED, ImageData
from autoshrink.data.loaders import GlobalBatchSampler, array_data, folder_data, make_loader
from autoshrink.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    crop_resize,
    erase_box,
    pad_crop,
    random_resized_box,
)
from autoshrink.errors import ConfigError, DataError
from autoshrink.training.recipes import get_recipe


def write_tree(root: Path, classes: int = 3, train: int = 8, val: int = 4, size: int = 12) -> Path:
    """``root/{train,val}/class<k>/<i>.png``: noisy RGB images whose class is their hue."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((size, size, 3))
                base[..., c % 3] = 180
                pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_folder_data_reads_train_and_val(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    data = folder_data(root, get_recipe("cifar", image_size=16))
    assert data.classes == ("class0", "class1", "class2")
    assert (len(data.train), len(data.val), data.in_channels, data.image_size) == (24, 12, 3, 16)
    x, y = data.val[(5, 0)]
    assert x.shape == (3, 16, 16) and y == 1
    # evaluation only resizes and normalises: a solid colour stays exact
    Image.new("RGB", (12, 12), (255, 0, 0)).save(root / "val" / "class0" / "0.png")
    x, _ = data.val[(0, 0)]
    expected = (np.array([1.0, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)


def test_a_tree_with_both_test_and_val_reads_test_and_says_so(tmp_path: Path, caplog) -> None:
    root = write_tree(tmp_path / "tree")
    shutil.copytree(root / "val", root / "test")
    for image in (root / "test" / "class0").iterdir():  # test/ differs: 4 images fewer
        image.unlink()
    (root / "test" / "class0" / "0.png").write_bytes(
        (root / "val" / "class0" / "0.png").read_bytes()
    )
    with caplog.at_level(logging.INFO, logger="autoshrink.data.imagefolder"):
        data = folder_data(root, get_recipe("cifar", image_size=16))
    assert len(data.val) == 9  # test/'s images, not val/'s 12
    assert f"{root}: testing on test/; val/ beside it is not read" in caplog.text


def test_folder_without_split_gets_a_seeded_validation_split(tmp_path: Path) -> None:
    write_tree(tmp_path / "t", val=0, train=5)
    flat = tmp_path / "t" / "train"
    data = folder_data(flat, get_recipe("cifar"))
    assert (len(data.train), len(data.val)) == (12, 3)  # 20% of 5 per class
    assert data.image_size == 32  # a recipe without a size: 32 px, 224 for ImageNet crops
    assert folder_data(flat, get_recipe("shrinkcnn-imagenet", image_size=None)).image_size == 224
    # the training seed drew another split: a seed's test images could be another's training
    # images, and the search's (which carves with the split seed) too
    other = folder_data(flat, get_recipe("cifar"), seed=7)
    held_out = [os.fsdecode(p) for p in other.val.paths]
    assert held_out == [os.fsdecode(p) for p in data.val.paths]
    assert held_out == [str(p) for p in split_tree(flat, 0.2, SPLIT_SEED).test_paths]  # search's


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda r: r / "missing", "missing: no such folder; expected an image folder"),
        (lambda r: (r / "only" / "train" / "a").mkdir(parents=True) or r / "only", "no val/"),
        (lambda r: (r / "empty" / "x").mkdir(parents=True) or r / "empty", "holds no images"),
    ],
)
def test_missing_folders_are_named(tmp_path: Path, make, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        folder_data(make(tmp_path), get_recipe("cifar"))


def test_a_mislabelled_validation_class_is_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    (root / "val" / "class2").rename(root / "val" / "klass2")
    with pytest.raises(DataError, match=r"\['klass2'\] have no training folder"):
        folder_data(root, get_recipe("cifar"))


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    (root / "train" / "class0" / "0.png").write_bytes(b"not a png")
    data = folder_data(root, get_recipe("cifar"))
    with pytest.raises(DataError, match="0.png: unreadable image"):
        data.train[(0, 0)]


def test_augmentation_is_a_function_of_seed_epoch_and_image(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    recipe = get_recipe("shrinkcnn-imagenet", image_size=16)
    a, b = folder_data(root, recipe, seed=3), folder_data(root, recipe, seed=3)
    torch.testing.assert_close(a.train[(4, 2)][0], b.train[(4, 2)][0], rtol=0, atol=0)
    assert not torch.equal(a.train[(4, 2)][0], a.train[(4, 3)][0])  # another epoch
    assert not torch.equal(a.train[(4, 2)][0], folder_data(root, recipe, seed=4).train[(4, 2)][0])
    torch.testing.assert_close(a.val[(4, 2)][0], a.val[(4, 3)][0], rtol=0, atol=0)  # no aug


def test_workers_give_the_same_batches_as_the_main_process(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    data = folder_data(root, get_recipe("cifar", image_size=16, random_erasing=0.5))
    batches = []
    for workers in (0, 2):
        sampler = GlobalBatchSampler(len(data.train), 8, seed=1)
        sampler.set_epoch(2)
        batches.append(list(make_loader(data.train, sampler, workers=workers)))
    for (x0, y0), (x1, y1) in zip(*batches, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_processes_share_every_global_batch() -> None:
    one = GlobalBatchSampler(50, 8, seed=7)
    ranks = [GlobalBatchSampler(50, 8, rank=r, world_size=2, seed=7) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(3)
    assert len(one) == 6  # 50 // 8: the incomplete last batch is dropped
    for whole, first, second in zip(one, *ranks, strict=True):
        assert whole == first + second and len(first) == 4
    one.set_epoch(4)
    assert [k[0] for b in one for k in b] != [k[0] for b in ranks[0] for k in b]


def test_evaluation_batches_cover_every_image_once() -> None:
    parts = [GlobalBatchSampler(11, 4, rank=r, world_size=2, shuffle=False) for r in range(2)]
    seen = sorted(k[0] for s in parts for b in s for k in b)
    assert seen == list(range(11))


def test_sampler_rejects_impossible_batches() -> None:
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        GlobalBatchSampler(100, 8, world_size=3)
    with pytest.raises(ConfigError, match="exceeds the 5 training images"):
        GlobalBatchSampler(5, 8)


def test_array_data_normalises_with_training_statistics() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(20, 1, 8, 8)).astype(np.float32)
    y = np.arange(20) % 2
    data = array_data(ImageData("toy", x, y, x[:4], y[:4], ("a", "b")), get_recipe("cifar"))
    got = torch.stack([data.val[(i, 0)][0] for i in range(4)])
    want = (x[:4] - x.mean()) / x.std()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def test_transform_pieces() -> None:
    rng = np.random.default_rng(0)
    img = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    np.testing.assert_array_equal(pad_crop(img, 0, rng), img)
    crops = {pad_crop(img, 2, rng).tobytes() for _ in range(300)}
    assert len(crops) == 25  # every offset of a 2-pixel reflect padding
    padded = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    windows = {padded[:, y : y + 6, x : x + 6].tobytes() for y in range(5) for x in range(5)}
    assert crops == windows
    for _ in range(50):  # boxes stay inside the image and within the area range
        left, top, right, bottom = random_resized_box(rng, 40, 30, (0.08, 1.0))
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 30
        assert 0.07 * 1200 <= (right - left) * (bottom - top) <= 1200
    # a centre crop of 50% picks the middle of a PIL image
    pil = Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 2))  # white 4x4 in 8x8 black
    np.testing.assert_allclose(crop_resize(pil, (2, 2, 6, 6), 4), np.ones((1, 4, 4)))
    t = ImageTransform(4, (0.0,), (1.0,), train=False, augment="imagenet", eval_crop=0.5)
    np.testing.assert_allclose(t(pil, rng).numpy(), np.ones((1, 4, 4)))
    erase = ImageTransform(6, (0.0,) * 2, (1.0,) * 2, train=True, random_erasing=1.0)
    assert not np.array_equal(erase(img, rng).numpy(), img)


@pytest.mark.parametrize("padding", [5, 6, 11, 12, 30])
def test_a_padding_of_the_image_size_or_more_reflects_as_np_pad_does(padding) -> None:
    # at 6 px it wrapped around (6..11) or indexed outside the image (12 and more): a traceback
    rng = np.random.default_rng(0)
    img = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    padded = np.pad(img, ((0, 0), (padding, padding), (padding, padding)), mode="reflect")
    side = 2 * padding + 1
    windows = {padded[:, y : y + 6, x : x + 6].tobytes() for y in range(side) for x in range(side)}
    assert {pad_crop(img, padding, rng).tobytes() for _ in range(400)} <= windows
    one = np.ones((1, 1, 1), np.float32)  # a 1-pixel image mirrors onto itself
    np.testing.assert_array_equal(pad_crop(one, 3, rng), one)


def test_an_evaluation_crop_smaller_than_a_pixel_keeps_one() -> None:
    # eval_crop 0.1 of an 8-px array image rounded to an empty box: a RuntimeError at evaluation
    img = np.arange(64, dtype=np.float32).reshape(1, 8, 8) / 64
    t = ImageTransform(8, (0.0,), (1.0,), train=False, augment="imagenet", eval_crop=0.1)
    centre = t(img, np.random.default_rng(0)).numpy()  # pixel (4, 4), resized to 8x8
    np.testing.assert_allclose(centre, np.full((1, 8, 8), 36 / 64))


def test_the_evaluation_crop_of_an_array_image_keeps_its_size() -> None:
    """eval_crop 0.875 of an 8-px array: the box 0.5..7.5 is 7 pixels, at 0 as torchvision's
    CenterCrop(7) puts it (round(0.5) = 0); rounding both ends gave the whole image."""
    img = np.random.default_rng(0).random((1, 8, 8), dtype=np.float32)
    t = ImageTransform(8, (0.0,), (1.0,), train=False, augment="imagenet", eval_crop=0.875)
    want = crop_resize(img[:, 0:7, 0:7].copy(), (0, 0, 7, 7), 8)
    np.testing.assert_array_equal(t(img, np.random.default_rng(0)).numpy(), want)
    assert not np.allclose(want, img)  # a crop, not the image
    wide = np.zeros((1, 10, 100), dtype=np.float32)  # the fallback box 43.5..56.5: 13 pixels
    wide[:, :, 44:57] = 1.0
    out = crop_resize(wide, (43.5, 0, 56.5, 10), 10)  # 44..57 (round(43.5) = 44): all ones
    np.testing.assert_allclose(out, np.ones((1, 10, 10)), atol=1e-6)


def test_crop_boxes_reach_every_position_and_fall_back_to_the_centre() -> None:
    rng = np.random.default_rng(0)
    assert random_resized_box(rng, 10, 10, (1.0, 1.0), (1.0, 1.0)) == (0, 0, 10, 10)
    corners = {random_resized_box(rng, 10, 10, (0.25, 0.25), (1.0, 1.0))[:2] for _ in range(400)}
    assert corners == {(x, y) for x in range(6) for y in range(6)}  # a 5x5 box, anywhere
    tiny = [random_resized_box(rng, 3, 3, (0.05, 0.15)) for _ in range(20)]
    assert all((r - le) * (b - t) == 1 for le, t, r, b in tiny)  # 1 pixel boxes are boxes
    # ten misses (no box of 90% of the area at a legal ratio fits): the centred box of the
    # nearest legal ratio, 4/3 for a wide image, 3/4 for a tall one
    assert random_resized_box(rng, 100, 10, (0.9, 1.0)) == (43.5, 0, 56.5, 10)
    assert random_resized_box(rng, 10, 100, (0.9, 1.0)) == (0, 43.5, 10, 56.5)


def test_erased_holes_vary_in_shape_and_reach_every_edge() -> None:
    rng = np.random.default_rng(0)
    holes = [erase_box(rng, 4, 4) for _ in range(300)]
    found = [h for h in holes if h is not None]
    assert all(0 < h < 4 and 0 < w < 4 and t + h <= 4 and le + w <= 4 for t, le, h, w in found)
    assert max(t + h for t, _, h, _ in found) == 4 and max(le + w for _, le, _, w in found) == 4
    assert {1, 2, 3} <= {w for *_, w in found} and {1, 2, 3} <= {h for _, _, h, _ in found}
    shapes = [(h, w) for _, _, h, w in filter(None, (erase_box(rng, 32, 32) for _ in range(200)))]
    assert any(h > 1.5 * w for h, w in shapes) and any(w > 1.5 * h for h, w in shapes)


def test_array_images_are_cropped_and_resized_to_squares() -> None:
    image = np.full((3, 16, 32), 0.5, dtype=np.float32)  # [C, H, W]: wider than high
    for size in (32, 8):
        out = crop_resize(image, (0, 0, 32, 16), size)
        assert out.shape == (3, size, size) and np.allclose(out, 0.5)
    exact = crop_resize(image, (4, 2, 12, 10), 8)  # already 8x8: copied, not resampled
    assert exact.shape == (3, 8, 8) and not np.shares_memory(exact, image)


def test_a_file_where_a_data_folder_belongs_is_named_as_a_file(tmp_path: Path) -> None:
    # each reader checked its folder with is_dir() and its own words: a file there was "not found"
    from autoshrink.data.idx import load_fashion_mnist
    from autoshrink.data.imagefolder import load_image_folder
    from autoshrink.errors import BenchmarkError, DataError
    from autoshrink.tabular.archive import read_archive
    from autoshrink.tabular.tables import load_flat_tables

    file = tmp_path / "data.bin"
    file.write_bytes(b"")
    readers = [
        (DataError, lambda: load_fashion_mnist(file), "a Fashion-MNIST folder"),
        (DataError, lambda: load_image_folder(file), "an image folder"),
        (DataError, lambda: folder_data(file, get_recipe("cifar")), "an image folder"),
        (BenchmarkError, lambda: load_flat_tables(file), "a NAS-Bench-201 table folder"),
        (BenchmarkError, lambda: read_archive(file), "a NATS-Bench archive folder"),
    ]
    for error, read, expected in readers:
        with pytest.raises(error, match=f"data.bin: a file, not a folder; expected {expected}"):
            read()
