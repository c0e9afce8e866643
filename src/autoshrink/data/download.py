"""Downloading the CIFAR-10 binary archive: streamed, checksummed, safely extracted.

:func:`download_cifar10` is the only place autoshrink touches the network, and only when the
user asks (``--download``). It streams the archive to a temporary file beside its destination
with :func:`fetch`, checks the MD5 (a mismatch removes the file and raises :class:`DataError`),
and unpacks it with :func:`safe_extract`, which accepts regular files and folders under the one
expected top-level folder and refuses absolute paths, ``..`` and links. Nothing is fetched when
the extracted folder already exists. The binary version is fetched, not the python one: it needs
no pickle to read.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from autoshrink.data.cifar import BIN_DIR
from autoshrink.errors import DataError

logger = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
OFFICIAL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # as published on the CIFAR page
CHUNK = 1 << 20


def fetch(url: str, folder: str | Path, *, md5: str, timeout: float = 60.0) -> Path:
    """Stream ``url`` into a new temporary file in ``folder`` and check its MD5.

    Returns the file's path; the caller removes it when done. On any failure -- an HTTP error,
    a broken connection, a checksum mismatch -- the partial file is removed and a
    :class:`DataError` naming the URL is raised.
    """
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    except OSError as err:
        raise DataError(f"{folder}: cannot write the download there ({err})") from None
    path = Path(name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                desc=Path(url).name,
                disable=None,
            ) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5.lower():
            raise DataError(
                f"{url}: MD5 {digest.hexdigest()} does not match the expected {md5}; "
                "the download was removed"
            )
    except BaseException as err:
        path.unlink(missing_ok=True)
        if isinstance(err, urllib.error.HTTPError):
            raise DataError(f"{url}: download failed, HTTP {err.code} {err.reason}") from None
        if isinstance(err, urllib.error.URLError):
            raise DataError(f"{url}: download failed ({err.reason})") from None
        if isinstance(err, (OSError, ValueError, http.client.HTTPException)):
            raise DataError(f"{url}: download failed ({err})") from None
        raise
    logger.info("downloaded %s (md5 %s)", url, md5)
    return path


def _check_member(archive: Path | str, member: tarfile.TarInfo, top: str) -> None:
    parts = PurePosixPath(member.name).parts
    if (
        member.name.startswith(("/", "\\"))
        or PurePosixPath(member.name).is_absolute()
        or ".." in parts
        or (parts and ":" in parts[0])
    ):
        raise DataError(f"{archive}: refusing unsafe member path {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {member.name!r}, not a file or folder")
    if not parts or parts[0] != top:
        raise DataError(f"{archive}: unexpected member {member.name!r}, expected {top}/...")


def safe_extract(
    archive: str | Path, dest: str | Path, *, top: str, source: str | None = None
) -> Path:
    """Unpack the tar ``archive`` whose members all lie under ``top/`` into ``dest``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links, devices and members outside ``top/`` raise :class:`DataError`, which names
    ``source`` (where the archive came from, e.g. its URL) or else ``archive``. The tree is
    unpacked into a temporary folder and moved to ``dest/top`` in one step (``dest`` is made
    when missing; one that cannot be is a :class:`DataError` too). Returns ``dest/top``.
    """
    archive, dest = Path(archive), Path(dest)
    named = source or str(archive)  # a download's temporary file is gone when the error is read
    target = dest / top
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    except OSError as err:
        raise DataError(f"{named}: cannot extract into {dest} ({err.strerror})") from None
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(named, member, top)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
                tar.extractall(staging, members=members, filter="data")
            else:
                tar.extractall(staging, members=members)
        if not (staging / top).is_dir():
            raise DataError(f"{named}: no {top}/ folder in the archive")
        os.replace(staging / top, target)
    except (tarfile.TarError, EOFError) as err:
        raise DataError(f"{named}: not a readable tar archive ({err})") from None
    except OSError as err:
        raise DataError(f"{named}: cannot extract into {dest} ({err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def download_cifar10(
    root: str | Path, *, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5, timeout: float = 60.0
) -> Path:
    """Download and unpack the CIFAR-10 binary archive into ``root``; returns the batches folder.

    Skips the download when ``root/cifar-10-batches-bin`` already holds the first training batch;
    an empty one is filled, one holding other files is refused (a :class:`DataError`: remove
    it). The archive is removed after extraction. Raises :class:`DataError` on a network
    error, a checksum mismatch or an unsafe archive; the folders it created for the download
    are removed again then.
    """
    root = Path(root)
    target = root / BIN_DIR
    if (target / "data_batch_1.bin").is_file():
        logger.info("cifar10: %s already exists, not downloading", target)
        return target
    if target.is_dir() and any(target.iterdir()):
        raise DataError(
            f"{target}: holds no CIFAR-10 batches (data_batch_1.bin ...) but other files; "
            "remove it to download CIFAR-10 there"
        )
    created = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{root}: cannot create the download folder ({err})") from None
    logger.info("cifar10: downloading %s into %s", url, root)
    try:
        archive = fetch(url, root, md5=md5, timeout=timeout)
        try:
            return safe_extract(archive, root, top=BIN_DIR, source=url)
        finally:
            archive.unlink(missing_ok=True)
    except BaseException:
        remove_empty_folders(created)
        raise


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: a failed download leaves no
    empty folder it created behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (something else was put there), or already gone
            return
