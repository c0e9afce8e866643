"""Files replaced in one step: written beside their place, then renamed over it.

A reader -- a report made while a search runs, a resume after a kill -- sees the old file or
the new one, never half of one. :func:`write_json` is how the package writes its JSON files:
whole, and strict (a non-finite number is ``null``); :func:`write_csv` its tables,
:func:`save_tensors` its safetensors files (the same tensors and metadata, the same bytes). The
temporary file is hidden (``.NAME.PID.tmp``) and named by process, so two processes replacing
the same file (a shared latency table) do not write into each other's; :func:`locked`
serialises a read-merge-replace of such a file, so that one process's replacement does not drop
what another wrote meanwhile; :func:`remove_dead_temporaries` clears the temporary files of a
writer that was killed. A path that is a symlink is written, and locked, where it leads
(:func:`through_link`).
"""

from __future__ import annotations

import csv
import errno
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.json_values import finite_or_none
from autoshrink.processes import process_running

if TYPE_CHECKING:
    import torch


def through_link(path: str | Path) -> Path:
    """``path``, or where it leads when it is a symlink (a latency table shared by several run
    folders): a file is replaced there, and locked there, not the link."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Replace ``path`` by what ``write(tmp)`` writes into a temporary file beside it. An
    :class:`OSError` (a full disk, say) names ``path``, not the temporary file or nothing."""
    path = through_link(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename in (None, str(tmp), tmp):  # a flush or close error names no file
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    finally:
        # on a read-only mount even a temporary never made fails to go (EROFS, not ENOENT):
        # the write's own error is the one to raise; a temporary left behind is cleared later
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def remove_dead_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (``.NAME.PID.tmp``) in ``folder`` and its subfolders that a
    process killed while it replaced a file there left behind (its PID runs no more on this
    machine); returns them. Call it where this process alone writes ``folder`` (a run folder
    it holds the lock of): a writer on another machine has a PID this one cannot see."""
    dead = []
    for tmp in folder.rglob(".*.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not process_running(int(pid)):
            with suppress(FileNotFoundError):
                tmp.unlink()
                dead.append(tmp)
    return dead


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Run the body holding an exclusive ``flock`` (waiting for it) on ``.NAME.lock`` beside
    ``path``, created if needed and left there: processes that read, merge and replace
    ``path`` take turns. The file is opened for writing, which an ``flock`` needs on NFS (a
    table shared by several machines); the kernel drops the lock of a process that dies. An
    :class:`OSError` names the lock file."""
    import fcntl

    path = through_link(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        why = f"cannot create the lock file ({err.strerror})"
        raise OSError(err.errno, why, str(lock)) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            raise OSError(err.errno, f"cannot lock it ({err.strerror})", str(lock)) from err
        yield
    finally:
        os.close(fd)  # closing drops the flock


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one step."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Replace ``path`` by a CSV file of ``header`` and ``rows`` in one step."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    write_atomic(path, write)


def write_json(path: str | Path, value: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Replace ``path`` by ``value`` as strict JSON in one step: NumPy and torch scalars as the
    numbers they hold, a non-finite number as ``null`` (:func:`finite_or_none`)."""
    text = json.dumps(finite_or_none(value), indent=indent, sort_keys=sort_keys, allow_nan=False)
    write_text_atomic(path, text + "\n")


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Replace ``path`` by a safetensors file of ``tensors`` (detached, moved to the CPU and
    made contiguous here) in one step; a failed write is an :class:`OSError` naming ``path``
    (safetensors raises its own error type, which names no file). The file gets the mode of
    any file written here (the umask's), not the owner-only one of safetensors' ``save_file``."""
    from safetensors import SafetensorError
    from safetensors.torch import save

    stored = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}

    def write(tmp: Path) -> None:
        try:
            data = save(stored, metadata=metadata)
        except SafetensorError as err:
            raise OSError(errno.EIO, f"cannot write the tensors ({err})", str(path)) from None
        tmp.write_bytes(sorted_metadata(data))

    write_atomic(path, write)


def sorted_metadata(data: bytes) -> bytes:
    """``data``, a safetensors file, with its metadata in the order of their keys: safetensors
    writes them in the order of a Rust hash map, drawn anew for each file, so the same tensors
    and metadata (two runs of one seed) made files that differed in their header. The header
    keeps its length where it fits (padded with spaces, as safetensors pads it), else grows to
    the next multiple of 8 bytes; the tensors' bytes follow it unchanged."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" not in header:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text = text.ljust(max(size, -(-len(text) // 8) * 8))
    return len(text).to_bytes(8, "little") + text + data[8 + size :]
