"""Image data loaders: IDX (Fashion-MNIST), CIFAR-10 (binary, python batches, download),
ImageFolder trees, the load_images dispatcher and the proxy split.

Every fixture is written here byte by byte from the published file formats, so the loaders
are checked against the formats, not against themselves.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.server
import io
import logging
import os
import pickle
import re
import struct
import tarfile
import threading
from functools import partial
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pytest
from PIL import Image

import autoshrink
from autoshrink.data import download as dl
from autoshrink.data.cifar import load_cifar10, restricted_load
from autoshrink.data.download import download_cifar10, safe_extract
from autoshrink.data.idx import DEFAULT_FASHION_MNIST_ROOT, load_fashion_mnist, read_idx
from autoshrink.data.imagefolder import load_image_folder
from autoshrink.data.images import ImageData, fetch_images, load_images, proxy_split
from autoshrink.errors import ConfigError, DataError
from autoshrink.safe_pickle import NUMPY_ARRAYS, RestrictedUnpickler

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_NAMES += ["dog", "frog", "horse", "ship", "truck"]


# ---------------------------------------------------------------- IDX / Fashion-MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    """Magic 0x0000 08 ndim, big-endian uint32 dims, then the bytes (gzip when named .gz)."""
    blob = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


def write_fashion(folder: Path, *, gz: bool, n_train: int = 7, n_test: int = 3) -> dict:
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in parts.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arr)
    return parts


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    parts = write_fashion(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path)
    assert data.train_x.shape == (7, 1, 28, 28) and data.test_x.shape == (3, 1, 28, 28)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    np.testing.assert_array_equal(
        data.train_x[:, 0] * 255.0, parts["train-images-idx3-ubyte"].astype(np.float32)
    )
    np.testing.assert_array_equal(data.test_y, parts["t10k-labels-idx1-ubyte"])
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.num_classes == 10


def test_idx_bad_files(tmp_path: Path) -> None:
    images = tmp_path / "x-idx3-ubyte"
    write_idx(images, np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="magic"):
        read_idx(images, ndim=1)  # says 3 dimensions
    blob = images.read_bytes()
    images.write_bytes(blob[:-5])
    with pytest.raises(DataError, match=str(images)):
        read_idx(images, ndim=3)
    images.write_bytes(b"\x00\x00\x0d\x03" + blob[4:])  # float32 type code
    with pytest.raises(DataError, match="magic"):
        read_idx(images, ndim=3)
    corrupt = tmp_path / "y-idx1-ubyte.gz"
    corrupt.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match=str(corrupt)):
        read_idx(corrupt, ndim=1)
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        read_idx(tmp_path / "missing", ndim=1)


def test_fashion_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        load_fashion_mnist(tmp_path / "nowhere")
    write_fashion(tmp_path, gz=True)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(4))  # 4 labels for 3 images
    with pytest.raises(DataError, match=str(labels)):
        load_fashion_mnist(tmp_path)
    write_idx(labels, np.zeros(1))  # said "1 labels"
    with pytest.raises(DataError, match=f"{labels}: 1 label for the 3 images of "):
        load_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path)


def test_idx_damage_the_header_or_its_contents_names(tmp_path: Path) -> None:
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # the magic, then 2 of the 12 size bytes
    with pytest.raises(DataError, match=r"short-idx3-ubyte: truncated IDX file, 6 bytes is sh"):
        read_idx(short, ndim=3)
    images = tmp_path / "x-idx3-ubyte"
    write_idx(images, np.zeros((2, 28, 28)))
    images.write_bytes(images.read_bytes()[:-5])  # 1,568 bytes announced, 1,563 there
    with pytest.raises(DataError, match=r"announces 2x28x28 = 1568 bytes .*, the file holds 1563$"):
        read_idx(images, ndim=3)


@pytest.mark.parametrize(
    ("part", "array", "needle"),
    [
        ("train-images-idx3-ubyte", np.zeros((7, 28, 27)), "images are 28x27, expected 28x28"),
        ("t10k-labels-idx1-ubyte", np.array([0, 10, 3]), "label 10 out of range, expected 0..9"),
    ],
)
def test_fashion_images_of_another_size_or_labels_out_of_range_are_named(
    tmp_path: Path, part: str, array: np.ndarray, needle: str
) -> None:
    write_fashion(tmp_path, gz=False)
    write_idx(tmp_path / part, array)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / part}: {needle}")):
        load_fashion_mnist(tmp_path)


def test_a_fashion_part_without_images_is_named(tmp_path: Path) -> None:
    """A folder of 0 test images trained a whole epoch, then failed in ZeroDivisionError."""
    write_fashion(tmp_path, gz=False, n_test=0)
    needle = f"{tmp_path / 't10k-images-idx3-ubyte'}: no images; the test part needs some"
    with pytest.raises(DataError, match="^" + re.escape(needle) + "$"):
        load_fashion_mnist(tmp_path)


def test_real_fashion_mnist() -> None:
    if not (DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {DEFAULT_FASHION_MNIST_ROOT}")
    data = load_images("fashion-mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    # Published facts: 6,000 / 1,000 images a class; the first training image is an ankle boot.
    np.testing.assert_array_equal(np.bincount(data.train_y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test_y), [1000] * 10)
    assert list(data.train_y[:5]) == [9, 0, 0, 3, 0]
    assert data.train_x.min() >= 0.0 and data.train_x.max() == 1.0
    assert abs(float(data.train_x.mean()) - 0.2860) < 1e-3  # the usual normalisation mean


# ---------------------------------------------------------------- CIFAR-10


class Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` opcodes, as the official python batches were."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def dump_py2(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy < 2 wrote numpy.core.multiarray, as the official files do.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def write_cifar_bin(folder: Path, batches: list, test: tuple) -> None:
    folder.mkdir(parents=True)
    named = [(f"data_batch_{i + 1}.bin", b) for i, b in enumerate(batches)]
    for name, (pixels, labels) in [*named, ("test_batch.bin", test)]:
        records = np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1)
        (folder / name).write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR_NAMES) + "\n\n")


def write_cifar_py(folder: Path, batches: list, test: tuple, *, py2: bool = True) -> None:
    def dump(obj: object) -> bytes:
        return dump_py2(obj) if py2 else pickle.dumps(obj, protocol=4)

    folder.mkdir(parents=True)
    named = [(f"data_batch_{i + 1}", b) for i, b in enumerate(batches)]
    for name, (pixels, labels) in [*named, ("test_batch", test)]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": pixels,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
        }
        (folder / name).write_bytes(dump(batch))
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 10}
    (folder / "batches.meta").write_bytes(dump(meta))


def check_cifar(data: ImageData, batches: list, test: tuple) -> None:
    pixels = np.concatenate([p for p, _ in batches]).astype(np.float32)  # numpy 1 and 2 alike
    assert data.train_x.shape == (len(pixels), 3, 32, 32) and data.train_x.dtype == np.float32
    assert data.classes == tuple(CIFAR_NAMES)
    np.testing.assert_array_equal(data.train_y, np.concatenate([y for _, y in batches]))
    np.testing.assert_array_equal(data.test_y, test[1])
    # Byte 0 is the top-left red pixel, byte 1024 the top-left green, byte 1023 red bottom-right.
    assert data.train_x[0, 0, 0, 0] == pixels[0, 0] / np.float32(255)
    assert data.train_x[0, 1, 0, 0] == pixels[0, 1024] / np.float32(255)
    assert data.train_x[0, 0, 31, 31] == pixels[0, 1023] / np.float32(255)
    assert data.train_x[1, 2, 0, 5] == pixels[1, 2048 + 5] / np.float32(255)


@pytest.mark.parametrize("layout", ["bin", "py2", "py3"])
def test_cifar_layouts(tmp_path: Path, layout: str, caplog) -> None:
    batches, test = [cifar_batch(1, 4), cifar_batch(2, 3)], cifar_batch(3, 5)
    if layout == "bin":
        folder = tmp_path / "cifar-10-batches-bin"
        write_cifar_bin(folder, batches, test)
    else:
        folder = tmp_path / "cifar-10-batches-py"
        write_cifar_py(folder, batches, test, py2=layout == "py2")
    with caplog.at_level(logging.WARNING):
        check_cifar(load_cifar10(folder), batches, test)  # the folder itself
    # a partial copy (a batch missing, a test batch cut at a record) was taken in silence
    assert f"{folder}: training batches of [4, 3] images and 5 test images; CIFAR-10 has" in (
        caplog.text
    )
    if layout == "bin":
        check_cifar(load_images("cifar10", tmp_path), batches, test)  # or its parent
    else:  # pickles are read only from the folder named: a parent is no request to unpickle
        with pytest.raises(
            DataError,
            match=f"^{tmp_path}: holds only cifar-10-batches-py/, .*"
            f"give {folder} itself as the data folder, or fetch the binary layout beside it "
            "with autoshrink search --download",
        ):
            load_images("cifar10", tmp_path)


@pytest.mark.parametrize("command", ["singlepath", "train", "search"])
def test_a_missing_cifar_names_the_command_that_downloads(cli, tmp_path: Path, command) -> None:
    """The message said "or use --download" to singlepath and train, which have no such flag
    (argparse then refused it): it names the command that has it, and fetch_images."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cell = Path(autoshrink.__file__).parent / "cells" / "shrinkcnn.json"
    target = {"singlepath": [], "train": [cell], "search": ["--preset", "demo"]}[command]
    code, _, err = cli(
        command, *target, "--dataset", "cifar10", "--data-dir", empty, "--out", tmp_path / "o"
    )
    assert code == 2 and err.count("\n") == 1, err
    assert f"{empty}: no CIFAR-10 found" in err and "or use --download" not in err
    assert "autoshrink search --download" in err and "fetch_images" in err


def test_cifar_binary_preferred(tmp_path: Path) -> None:
    bin_batches, py_batches, test = [cifar_batch(1, 4)], [cifar_batch(2, 4)], cifar_batch(3, 2)
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", bin_batches, test)
    write_cifar_py(tmp_path / "cifar-10-batches-py", py_batches, test)
    check_cifar(load_cifar10(tmp_path), bin_batches, test)


def test_cifar_files_missing_or_malformed_are_named_with_what_is_wrong(tmp_path: Path) -> None:
    def refused(folder: Path, says: str) -> None:
        with pytest.raises(DataError, match=f"^{re.escape(says)}"):
            load_cifar10(folder)

    binf = tmp_path / "b" / "cifar-10-batches-bin"
    write_cifar_bin(binf, [cifar_batch(1, 2)], cifar_batch(2, 2))
    batch = binf / "data_batch_1.bin"
    batch.write_bytes(bytes([10]) + bytes(3072))  # label 10 of 10 classes
    refused(binf, f"{batch}: labels span 10..10, expected 0..9")
    with pytest.MonkeyPatch.context() as mp:  # a disk that fails the read
        mp.setattr(np, "fromfile", Mock(side_effect=OSError(errno.EIO, "Input/output error")))
        refused(binf, f"{batch}: cannot read CIFAR-10 binary batch ([Errno 5] Input/output error)")
    write_cifar_bin(tmp_path / "b2", [cifar_batch(1, 2)], cifar_batch(2, 2))
    (tmp_path / "b2" / "batches.meta.txt").unlink()
    refused(tmp_path / "b2", f"{tmp_path / 'b2' / 'batches.meta.txt'}: cannot read the class names")
    pyf = tmp_path / "p" / "cifar-10-batches-py"
    write_cifar_py(pyf, [cifar_batch(1, 2)], cifar_batch(2, 2), py2=False)
    test_batch = pyf / "test_batch"
    test_batch.write_bytes(pickle.dumps({b"data": cifar_batch(2, 2)[0]}, protocol=4))  # no labels
    refused(pyf, f"{test_batch}: expected a dict with b'data' and b'labels'")
    with pytest.raises(
        DataError, match=f"^{re.escape(str(tmp_path))}/none: CIFAR-10 python batch not found$"
    ):
        restricted_load(tmp_path / "none")
    with pytest.raises(
        DataError,
        match=f"^{re.escape(str(pyf))}: cannot read the CIFAR-10 python batch \\(Is a dir",
    ):
        restricted_load(pyf)


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder, [cifar_batch(1, 2)], cifar_batch(2, 2))
    evil = folder / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}, protocol=4))
    with pytest.raises(DataError, match=rf"{evil}.*refusing.*system"):
        load_cifar10(folder)
    assert not marker.exists()
    sneaky = tmp_path / "eval.pkl"
    sneaky.write_bytes(b"cbuiltins\neval\n(Vprint(1)\ntR.")
    with pytest.raises(DataError, match="builtins.eval"):
        restricted_load(sneaky)
    allowed = RestrictedUnpickler(io.BytesIO(b""), NUMPY_ARRAYS)
    assert not callable(allowed.find_class("numpy", "ndarray"))  # a token, not numpy's class
    with pytest.raises(pickle.UnpicklingError, match="numpy.load"):
        allowed.find_class("numpy", "load")


def test_cifar_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path)):
        load_cifar10(tmp_path)  # nothing there
    binf = tmp_path / "b" / "cifar-10-batches-bin"
    write_cifar_bin(binf, [cifar_batch(1, 2)], cifar_batch(2, 2))
    batch = binf / "data_batch_1.bin"
    batch.write_bytes(batch.read_bytes()[:-7])
    with pytest.raises(DataError, match=str(batch)):
        load_cifar10(binf)
    batch.write_bytes(bytes([10]) + bytes(3072))  # label 10 of 10 classes
    with pytest.raises(DataError, match=str(batch)):
        load_cifar10(binf)
    pyf = tmp_path / "p" / "cifar-10-batches-py"
    write_cifar_py(pyf, [cifar_batch(1, 2)], cifar_batch(2, 2))
    test_batch = pyf / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:100])
    with pytest.raises(DataError, match=str(test_batch)):
        load_cifar10(pyf)
    (pyf / "data_batch_3").write_bytes(b"")  # a gap: 1, 3
    with pytest.raises(DataError, match="gaps"):
        load_cifar10(pyf)
    # class names are one a line: "air plane" read as two names, 11 classes, labels shifted
    names = tmp_path / "n" / "cifar-10-batches-bin"
    write_cifar_bin(names, [cifar_batch(1, 2)], cifar_batch(2, 2))
    (names / "batches.meta.txt").write_text("air plane\n" + "\n".join(CIFAR_NAMES[1:]) + "\n")
    assert load_cifar10(names).classes[0] == "air plane"
    (names / "batches.meta.txt").write_text("\n".join([*CIFAR_NAMES, "extra"]) + "\n")
    with pytest.raises(DataError, match="batches.meta.txt: 11 class names; CIFAR-10 has 10"):
        load_cifar10(names)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("data_batch_1", [1, 2], "expected a dict with b'data' and b'labels'"),
        (
            "data_batch_1",
            {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
            "b'data' must be a uint8 array [n, 3072], got float32 (2, 3072)",
        ),
        (
            "data_batch_1",
            {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]},
            "b'data' must be a uint8 array [n, 3072], got uint8 (2, 1024)",
        ),
        (
            "data_batch_1",
            {b"data": [[0] * 3072], b"labels": [0]},
            "b'data' must be a uint8 array [n, 3072], got list",
        ),
        (
            "data_batch_1",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]},
            "b'labels' must be a list of integers",
        ),
        (  # a label beyond int64 was an OverflowError's traceback
            "data_batch_1",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 2**70]},
            "b'labels' must be a list of integers",
        ),
        (  # floats were truncated to classes without a word
            "data_batch_1",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.7, 0.0]},
            "b'labels' must be a list of integers",
        ),
        (
            "data_batch_1",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]},
            "3 labels for 2 images",
        ),
        (  # said "1 labels"
            "data_batch_1",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
            "1 label for 2 images",
        ),
        (  # a UnicodeDecodeError's traceback
            "batches.meta",
            {b"label_names": [b"\xff\xfe"] * 10},
            "a class name that is not UTF-8",
        ),
        ("batches.meta", {b"names": []}, "expected a dict with b'label_names', a list of names"),
        ("batches.meta", {b"label_names": [1, 2]}, "expected a dict with b'label_names'"),
        ("test_batch", None, "CIFAR-10 test batch not found"),
    ],
)
def test_cifar_python_batches_of_another_layout_are_named(tmp_path, name, content, says) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder, [cifar_batch(1, 2)], cifar_batch(2, 2), py2=False)
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(DataError) as caught:
        load_cifar10(folder)
    assert str(caught.value).startswith(f"{folder / name}: {says}")


# ---------------------------------------------------------------- download


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local HTTP server on an ephemeral port: (served folder, base URL, request paths)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    served = tmp_path / "www"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def make_archive(path: Path, build: Path) -> tuple[list, tuple, str]:
    """A cifar-10-binary.tar.gz lookalike: 2 batches of 10 images, a test batch of 5."""
    batches, test = [cifar_batch(1, 10), cifar_batch(2, 10)], cifar_batch(3, 5)
    write_cifar_bin(build / "cifar-10-batches-bin", batches, test)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(build / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return batches, test, hashlib.md5(path.read_bytes()).hexdigest()


def test_download_and_load(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, base, requests = server
    batches, test, md5 = make_archive(served / "cifar-10-binary.tar.gz", tmp_path / "build")
    url = f"{base}/cifar-10-binary.tar.gz"
    monkeypatch.setattr(dl, "download_cifar10", partial(download_cifar10, url=url, md5=md5))
    root = tmp_path / "data"
    data = load_images("cifar10", root, download=True)
    check_cifar(data, batches, test)
    assert len(data.train_y) == 20
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-bin"]  # no leftovers
    assert len(requests) == 1
    load_images("cifar10", root, download=True)  # already there: no second request
    assert download_cifar10(root, url=url, md5=md5) == root / "cifar-10-batches-bin"
    assert len(requests) == 1
    # a parent of a python (pickle) folder is no request to unpickle: --download fetches beside it
    pickles = tmp_path / "torchvision"
    write_cifar_py(pickles / "cifar-10-batches-py", [cifar_batch(4, 2)], cifar_batch(5, 2))
    check_cifar(load_images("cifar10", pickles, download=True), batches, test)
    assert len(requests) == 2


def test_an_empty_batches_folder_is_downloaded_into_and_one_of_other_files_refused(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty ``cifar-10-batches-bin/`` (a failed copy, a mkdir) stopped --download, and the
    load then said to "use --download"."""
    served, base, requests = server
    batches, test, md5 = make_archive(served / "cifar-10-binary.tar.gz", tmp_path / "build")
    url = f"{base}/cifar-10-binary.tar.gz"
    monkeypatch.setattr(dl, "download_cifar10", partial(download_cifar10, url=url, md5=md5))
    root = tmp_path / "data"
    (root / "cifar-10-batches-bin").mkdir(parents=True)
    check_cifar(load_images("cifar10", root, download=True), batches, test)
    assert len(requests) == 1
    other = tmp_path / "other" / "cifar-10-batches-bin"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("not CIFAR-10")
    with pytest.raises(DataError, match=f"^{other}: holds no CIFAR-10 batches .* remove it"):
        load_images("cifar10", other.parent, download=True)
    assert len(requests) == 1 and (other / "notes.txt").is_file()


def test_download_fetches_without_loading(server, tmp_path: Path, monkeypatch) -> None:
    # search --download loaded all of CIFAR-10 to fetch it, and the search loaded it again
    from autoshrink.cli.search import download_data
    from autoshrink.data import cifar
    from autoshrink.presets import preset

    served, base, requests = server
    _, _, md5 = make_archive(served / "cifar-10-binary.tar.gz", tmp_path / "build")
    url = f"{base}/cifar-10-binary.tar.gz"
    monkeypatch.setattr(dl, "download_cifar10", partial(download_cifar10, url=url, md5=md5))
    monkeypatch.setattr(cifar, "load_cifar10", lambda root: pytest.fail(f"{root} was loaded"))
    root = tmp_path / "data"
    download_data(preset("demo", dataset="cifar10", data_dir=str(root)))
    assert (root / "cifar-10-batches-bin").is_dir() and len(requests) == 1
    fetch_images("cifar10", root)  # already there: no second request
    assert len(requests) == 1
    with pytest.raises(DataError, match="'cifar10' needs a root folder to read it from: --data-di"):
        fetch_images("cifar10", None)
    with pytest.raises(DataError, match=r"^data set 'cifar10' needs a root folder .* data_dir in "):
        load_images("cifar10")


def test_download_checksum_mismatch_and_404(server, tmp_path: Path) -> None:
    served, base, _ = server
    make_archive(served / "c.tar.gz", tmp_path / "build")
    root = tmp_path / "data" / "cifar"
    with pytest.raises(DataError, match="MD5"):
        download_cifar10(root, url=f"{base}/c.tar.gz", md5="0" * 32)
    assert not (tmp_path / "data").exists()  # the partial download and its folders are gone
    root.mkdir(parents=True)
    (root / "mine.txt").write_text("kept")
    with pytest.raises(DataError, match=r"missing\.tar\.gz.*404"):
        download_cifar10(root, url=f"{base}/missing.tar.gz")
    assert [p.name for p in root.iterdir()] == ["mine.txt"]  # a folder it did not create stays
    # an unsafe archive was named by its temporary file, removed by the time one reads it
    with tarfile.open(served / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    evil_md5 = hashlib.md5((served / "evil.tar").read_bytes()).hexdigest()
    with pytest.raises(DataError, match=rf"^{base}/evil\.tar: refusing unsafe member"):
        download_cifar10(root, url=f"{base}/evil.tar", md5=evil_md5)


def test_a_download_that_cannot_start_or_connect_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(DataError, match=f"^{a_file}: cannot write the download there \\("):
        dl.fetch("http://127.0.0.1:9/x.tar.gz", a_file, md5="0" * 32)
    with pytest.raises(DataError, match=f"^{a_file / 'sub'}: cannot create the download folder"):
        download_cifar10(a_file / "sub", url="http://127.0.0.1:9/x.tar.gz")
    refused = "http://127.0.0.1:9/x.tar.gz"  # the discard port: nothing listens there
    says = r": download failed \(\[Errno \d+\] Connection refused\)$"  # the reason alone
    with pytest.raises(DataError, match=f"^{refused}{says}"):
        dl.fetch(refused, tmp_path, md5="0" * 32)
    with pytest.raises(DataError, match="^nonsense: download failed \\(unknown url type"):
        dl.fetch("nonsense", tmp_path, md5="0" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no partial file left


def test_safe_extract_unpacks_one_top_folder_and_names_anything_else(tmp_path: Path) -> None:
    top = "cifar-10-batches-bin"

    def archive_of(*names: str) -> Path:
        path = tmp_path / "a.tar"
        with tarfile.open(path, "w") as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = 2
                tar.addfile(info, io.BytesIO(b"ok"))
        return path

    dest = tmp_path / "dest"
    dest.mkdir()
    assert safe_extract(archive_of(f"{top}/data_batch_1"), dest, top=top) == dest / top
    assert (dest / top / "data_batch_1").read_bytes() == b"ok"
    (tmp_path / "dest2").mkdir()
    for names, says in (
        ((f"{top}/x", "other/y"), "unexpected member 'other/y', expected cifar-10-batches-bin/"),
        ((), "no cifar-10-batches-bin/ folder in the archive"),
    ):
        with pytest.raises(DataError, match=f"^{tmp_path / 'a.tar'}: {re.escape(says)}"):
            safe_extract(archive_of(*names), tmp_path / "dest2", top=top)
    (tmp_path / "a.tar").write_bytes(b"not a tar archive" * 100)
    with pytest.raises(DataError, match="from.url: not a readable tar archive"):
        safe_extract(tmp_path / "a.tar", tmp_path / "dest2", top=top, source="from.url")
    assert list((tmp_path / "dest2").iterdir()) == []  # nothing half-unpacked, no staging left
    nested = tmp_path / "new" / "dest"  # a destination not made yet is made
    assert safe_extract(archive_of(f"{top}/x"), nested, top=top) == nested / top
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=f"a.tar: cannot extract into {tmp_path / 'a_file'} \\("):
        safe_extract(archive_of(f"{top}/x"), tmp_path / "a_file", top=top)


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "cifar-10-batches-bin/../../evil"])
def test_safe_extract_refuses_escapes(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="unsafe"):
        safe_extract(archive, dest, top="cifar-10-batches-bin")
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_safe_extract_refuses_links(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="not a file or folder"):
        safe_extract(archive, tmp_path, top="cifar-10-batches-bin")


# ---------------------------------------------------------------- ImageFolder

COLOURS = {"b_cat": (255, 0, 0), "a_dog": (0, 255, 0), "c_owl": (0, 0, 255)}


def write_tree(root: Path, per_class: int = 5, mode: str = "RGB") -> None:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        fill = colour if mode == "RGB" else sum(colour) // 3
        for i in range(per_class):
            Image.new(mode, (12, 10), fill).save(root / name / f"{i}.png")


def test_imagefolder_tree(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "a_dog" / "notes.txt").write_text("ignored")
    data = load_images("imagefolder", tmp_path / "tree", image_size=8)
    assert data.classes == ("a_dog", "b_cat", "c_owl")
    assert data.train_x.shape == (12, 3, 8, 8) and data.test_x.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(np.bincount(data.test_y), [1, 1, 1])  # 20% of 5 per class
    for x, y in zip(data.train_x, data.train_y, strict=True):  # solid colours survive resizing
        colour = COLOURS[data.classes[y]]
        np.testing.assert_array_equal(
            x, np.broadcast_to(np.array(colour)[:, None, None] / 255, x.shape)
        )
    again = load_image_folder(tmp_path / "tree", image_size=8)
    np.testing.assert_array_equal(again.train_y, data.train_y)
    np.testing.assert_array_equal(again.test_x, data.test_x)


def test_imagefolder_grayscale_and_splits(tmp_path: Path) -> None:
    write_tree(tmp_path / "gray", mode="L")
    gray = load_image_folder(tmp_path / "gray", image_size=4)
    assert gray.in_channels == 1 and gray.image_size == 4
    write_tree(tmp_path / "split" / "train", per_class=3)
    write_tree(tmp_path / "split" / "val", per_class=2, mode="L")  # mixed modes -> RGB
    data = load_image_folder(tmp_path / "split", image_size=6)
    assert data.train_x.shape == (9, 3, 6, 6) and data.test_x.shape == (6, 3, 6, 6)
    np.testing.assert_array_equal(data.test_y, [0, 0, 1, 1, 2, 2])


def test_imagefolder_bad_inputs(tmp_path: Path, caplog) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        load_image_folder(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match=f"{empty}: no class folders"):
        load_image_folder(empty)
    (empty / "cats").mkdir()
    with pytest.raises(DataError, match=str(empty / "cats")):
        load_image_folder(empty)
    tree = tmp_path / "tree"
    write_tree(tree)
    bad = tree / "a_dog" / "9.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=str(bad)):
        load_image_folder(tree)
    good = (tree / "a_dog" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # valid header, truncated pixel data
    with pytest.raises(DataError, match=str(bad)):
        load_image_folder(tree)
    # a train/ without val/ or test/ was one class named "train", and every cell scored 1.0
    write_tree(tmp_path / "only" / "train")
    with pytest.raises(DataError, match="has train/ but no val/ or test/ folder beside it"):
        load_image_folder(tmp_path / "only")
    # the mirror case: test/ of class folders beside the training classes was a class, "test"
    write_tree(tmp_path / "no_train")
    write_tree(tmp_path / "no_train" / "test", per_class=1)
    with pytest.raises(DataError, match="has test/ of class folders but no train/ folder"):
        load_image_folder(tmp_path / "no_train")
    (tmp_path / "no_train" / "test").rename(tmp_path / "no_train" / "val")
    with pytest.raises(DataError, match="has val/ of class folders but no train/ folder"):
        load_image_folder(tmp_path / "no_train")
    # 16-bit grayscale PNGs were clipped to white by Pillow's conversion: scaled to 8 bits now
    deep = tmp_path / "deep"
    for name, level in (("dark", 1000), ("bright", 60000)):
        (deep / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((6, 6), level, dtype=np.uint16)).save(deep / name / f"{i}.png")
    sixteen = load_image_folder(deep, image_size=6)
    assert sixteen.in_channels == 1 and sixteen.classes == ("bright", "dark")
    pairs = zip(sixteen.train_x, sixteen.train_y, strict=True)
    levels = {sixteen.classes[y]: float(x.mean()) for x, y in pairs}
    assert levels == pytest.approx({"dark": (1000 >> 8) / 255, "bright": (60000 >> 8) / 255})
    from autoshrink.data.imagefolder import upright_eight_bit
    from autoshrink.data.loaders import FolderImages

    decoded = FolderImages([deep / "dark" / "0.png"], np.zeros(1), None, 0).image(0)  # train's
    assert decoded.mode == "RGB" and np.asarray(decoded).max() == 1000 >> 8

    as_pillow_9 = Image.new("I", (2, 2), 60000)  # Pillow < 10.3 opens a 16-bit PNG so
    as_pillow_9.format = "PNG"  # and the tree was refused as "32-bit integer pixels"
    assert np.asarray(upright_eight_bit(as_pillow_9, "x.png")).tolist() == [[60000 >> 8] * 2] * 2
    for mode, said in (("I", "32-bit integer pixels"), ("F", "floating-point pixels")):
        with pytest.raises(DataError, match=f"x.png: {said} \\(mode {mode}\\), of no stated"):
            upright_eight_bit(Image.new(mode, (2, 2)), "x.png")  # of a decoder that gives them
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(one / "0.png")
    with pytest.raises(DataError, match=r"1 class folder \(cats\); a data set to classify needs"):
        load_image_folder(tmp_path / "one")
    # 20% of 2 images per class rounds to none: the final training divided by 0 test images
    write_tree(tmp_path / "two", per_class=2)
    with pytest.raises(
        DataError, match="two: no image left to test on: 20% of each class's images"
    ):
        load_image_folder(tmp_path / "two")
    (tmp_path / "two" / "a_dog" / "2.png").write_bytes((tmp_path / "two/a_dog/0.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        assert load_image_folder(tmp_path / "two").test_y.tolist() == [0]  # 3 images: one to test
    # the other class has none, which was said nowhere (the docs said it was refused)
    assert "two: 2 class(es) without a test image (b_cat, c_owl): too small for 20%" in caplog.text


def test_imagefolder_names_an_image_whose_pixels_cannot_be_read(tmp_path, monkeypatch) -> None:
    import autoshrink.data.imagefolder as imagefolder

    tree = tmp_path / "tree"
    write_tree(tree)
    bad = tree / "a_dog" / "9.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad)
    bad.write_bytes(bad.read_bytes()[:-300])  # its header whole, its pixel data cut short
    with Image.open(bad) as img:
        assert img.size == (64, 64)  # opens: the loss shows when the pixels are decoded
    with pytest.raises(DataError, match=f"^{re.escape(str(bad))}: unreadable image \\("):
        load_image_folder(tree)
    bad.unlink()

    def refuse(img: Image.Image, path: Path) -> Image.Image:
        raise DataError(f"{path}: refused as it is")

    monkeypatch.setattr(imagefolder, "upright_eight_bit", refuse)  # its own error, not "unreadable"
    with pytest.raises(DataError, match="0.png: refused as it is$"):
        load_image_folder(tree)


def test_imagefolder_settings_and_the_per_class_test_split(tmp_path, caplog) -> None:
    from autoshrink.data.imagefolder import carve_test_split

    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    train, test = carve_test_split(labels, 0.9, seed=0)  # each class keeps one to train on
    assert np.bincount(labels[test]).tolist() == [1, 2, 4]
    assert np.bincount(labels[train]).tolist() == [1, 1, 1]
    assert sorted([*train, *test]) == list(range(10))
    write_tree(tmp_path / "tree")
    for bad, says in (
        ({"image_size": 0}, "image_size must be a positive number of pixels, got 0"),
        ({"test_fraction": 1.0}, "test_fraction must lie strictly between 0 and 1, got 1.0"),
        ({"test_fraction": 0.0}, "test_fraction must lie strictly between 0 and 1, got 0.0"),
    ):
        with pytest.raises(ConfigError, match=f"^{re.escape(says)}$"):
            load_image_folder(tmp_path / "tree", **bad)
    with caplog.at_level("INFO", logger="autoshrink.data.imagefolder"):
        data = load_image_folder(tmp_path / "tree", image_size=1)  # one pixel: the smallest
    assert data.train_x.shape == (12, 3, 1, 1)
    assert "imagefolder: 3 classes, 12 train, 3 test images of 3x1x1 from" in caplog.text


# ---------------------------------------------------------------- dispatcher and proxy split


def test_load_images_dispatch(tmp_path: Path) -> None:
    assert load_images("digits").train_x.shape[1:] == (1, 8, 8)
    with pytest.raises(ConfigError, match="unknown data set 'mnist'"):
        load_images("mnist")
    for name in ("cifar10", "imagefolder"):
        with pytest.raises(DataError, match="root"):
            load_images(name)
    with pytest.raises(DataError, match="download"):
        load_images("fashion-mnist", tmp_path, download=True)
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_images("fashion-mnist", tmp_path / "nope")


def indexed_data(per_class: int = 30, classes: int = 4) -> ImageData:
    """Image i is filled with the value i / N, so a normalised image still reveals its index."""
    n = per_class * classes
    x = np.broadcast_to((np.arange(n) / n).astype(np.float32)[:, None, None, None], (n, 2, 3, 3))
    y = np.arange(n) % classes
    return ImageData("indexed", x.copy(), y, x[:4].copy(), y[:4], tuple("abcd"[:classes]))


def test_image_data_refuses_images_that_are_not_nchw_or_miscounted() -> None:
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)
    for bad_x, bad_y, got in (
        (x[:, 0], y, "(4, 8, 8) and (4,)"),  # [N, H, W]: no channel dimension
        (x, y[:3], "(4, 1, 8, 8) and (3,)"),  # 4 images, 3 labels
        (x, y[:, None], "(4, 1, 8, 8) and (4, 1)"),
    ):
        with pytest.raises(DataError, match=re.escape(f"with N labels, got {got}")):
            ImageData("toy", bad_x, bad_y, x, y, ("a",))
        with pytest.raises(DataError, match=re.escape("toy: test images must be [N, C, H, W]")):
            ImageData("toy", x, y, bad_x, bad_y, ("a",))


def split_indices(split, which: str) -> np.ndarray:
    x = getattr(split, f"{which}_x")[:, 0, 0, 0] * split.std[0] + split.mean[0]
    return np.rint(x * 120).astype(int)


def test_proxy_split_properties() -> None:
    data = indexed_data()
    split = proxy_split(data, per_class=5, val_size=40, seed=3)
    np.testing.assert_array_equal(np.bincount(split.train_y, minlength=4), [5, 5, 5, 5])
    train, val = split_indices(split, "train"), split_indices(split, "val")
    assert len(set(train)) == 20 and len(set(val)) == 40 and not set(train) & set(val)
    np.testing.assert_array_equal(split.train_y, data.train_y[train])  # labels follow images
    np.testing.assert_array_equal(split.val_y, data.train_y[val])
    np.testing.assert_allclose(split.train_x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(split.train_x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    same = proxy_split(data, per_class=5, val_size=40, seed=3)
    np.testing.assert_array_equal(same.train_x, split.train_x)
    np.testing.assert_array_equal(same.val_y, split.val_y)
    other = proxy_split(data, per_class=5, val_size=40, seed=4)
    assert set(split_indices(other, "train")) != set(train)
    # the arguments named, the flags in brackets (said "lower --per-class" to a library call)
    few = "has 30 training images, fewer than the 31 per class the proxy task asks for; lower "
    with pytest.raises(DataError, match=re.escape(few + "per_class (--per-class)") + "$"):
        proxy_split(data, per_class=31, val_size=1, seed=0)
    lower = "lower per_class (--per-class, now 25) or val_size (--val-size)"
    held = f"only 20 held-out training images for a validation set of 21; {lower}"
    with pytest.raises(DataError, match=re.escape(held) + "$"):
        proxy_split(data, per_class=25, val_size=21, seed=0)
    with pytest.raises(DataError, match="has 1 training image, fewer than the 2 per class"):
        proxy_split(indexed_data(per_class=1), per_class=2, val_size=1, seed=0)  # "1 images"


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"per_class": 0}, "proxy_split: per_class must be a whole number >= 1, got 0"),
        ({"per_class": 1.5}, "proxy_split: per_class must be a whole number >= 1, got 1.5"),
        ({"per_class": -1}, "proxy_split: per_class must be a whole number >= 1, got -1"),
        ({"val_size": 0}, "proxy_split: val_size must be a whole number >= 1, got 0"),
        ({"val_size": -1}, "proxy_split: val_size must be a whole number >= 1, got -1"),
        ({"seed": -1}, "proxy_split: seed must be a whole number >= 0, got -1"),
        ({"seed": 1.5}, "proxy_split: seed must be a whole number >= 0, got 1.5"),
    ],
)
def test_a_proxy_split_of_no_images_or_a_bad_seed_is_refused(settings, says) -> None:
    """per_class 0 gave an empty training set and NaN validation images, val_size 0 no
    validation set; -1 and 1.5 met NumPy's or Python's errors (a misleading DataError for a
    per_class of -1)."""
    given = {"per_class": 5, "val_size": 40, "seed": 3, **settings}
    with pytest.raises(ConfigError, match=f"^{re.escape(says)}$"):
        proxy_split(indexed_data(), **given)


def test_the_digits_are_scikit_learns_read_without_importing_it(monkeypatch) -> None:
    """The digits come from the CSV scikit-learn ships (its import, with SciPy's, took a second
    of every digits run's start-up): the same images and labels as its own loader, and its
    loader where the file is not found."""
    import importlib.util
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sk_digits

    from autoshrink.data.images import bundled_digits

    images, target = bundled_digits()
    bunch = sk_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    assert images.shape == (1797, 8, 8) and np.bincount(target).tolist()[:3] == [178, 182, 177]
    code = "import sys; from autoshrink.data.images import load_digits; load_digits(); " \
        "assert 'sklearn' not in sys.modules"  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no file to read
    images, target = bundled_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
