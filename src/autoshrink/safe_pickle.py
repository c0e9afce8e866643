"""Reading pickles without running their code: the project's one restricted unpickler.

Unpickling a file can call any global function the file names, so autoshrink unpickles only
where the user chose a format that is a pickle (CIFAR-10 python batches, the NATS-Bench
archive, HW-NAS-Bench), and then only through :class:`RestrictedUnpickler`. It builds builtin
containers, numbers and strings, and resolves a global only if the format's allow-list holds
it; any other global fails the load with :class:`pickle.UnpicklingError`.

Two allow-lists cover the formats read here; in both, numpy's globals are replaced by plain
decoders of a number's or an array's bytes, so no numpy code runs on what the file says (numpy's
own array reconstruction let a file build an object array from bytes of its choosing -- a
pointer numpy then followed: a crash, or worse):

- :data:`NUMPY_ARRAYS`: numpy arrays of plain numbers (CIFAR-10 python batches), decoded by
  ``_Array`` from their shape, dtype and bytes; :func:`restricted_loads` hands them back
  as numpy arrays.
- :data:`NUMPY_SCALARS`: ``collections.OrderedDict`` and numpy's ``dtype``/``scalar`` pair; the
  values come out as Python numbers (the NATS-Bench archive, HW-NAS-Bench).

Both also rebuild ``bytes`` the way protocols 0-2 do under Python 3 (``_codecs.encode`` of a
latin-1 string, replaced by a function that does only that).

:func:`load_pickle_file` is what each format's reader calls: the opt-in, the file read, and
every failure as one error naming the file.
"""

from __future__ import annotations

import bz2
import io
import math
import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from autoshrink.errors import AutoshrinkError

AllowList = Mapping[tuple[str, str], Any]

#: The largest pickle file read (a CIFAR-10 batch is 31 MB, HW-NAS-Bench's file under 100 MB, a
#: NATS-Bench record under 1 MB): a device named by mistake (``/dev/zero``) or a huge file is
#: refused instead of filling the memory.
PICKLE_LIMIT = 2**30


class RefusedGlobal(pickle.UnpicklingError):
    """A global the allow-list does not hold, named by the file: ``module`` and ``name``."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refusing to unpickle global {module}.{name}: not allowed in this format")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed`` (``(module, name) -> object``)."""

    def __init__(self, file: BinaryIO, allowed: AllowList, *, encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        """The object ``allowed`` maps ``(module, name)`` to; :class:`RefusedGlobal` (a
        :class:`pickle.UnpicklingError`) for any other global."""
        found = self.allowed.get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        return found


def restricted_loads(data: bytes, allowed: AllowList, *, encoding: str = "ASCII") -> Any:
    """The object pickled in ``data``, read by :class:`RestrictedUnpickler` with ``allowed``.

    A corrupt or hostile pickle can raise almost any exception; callers wrap them into their
    own one-line error naming the file.
    """
    loaded = RestrictedUnpickler(io.BytesIO(data), allowed, encoding=encoding).load()
    # only an allow-list holding the array decoder makes arrays: others' (large) results are
    # not walked
    return _with_arrays(loaded) if _reconstruct in allowed.values() else loaded


def load_pickle_file(
    path: str | Path,
    allowed: AllowList,
    *,
    allow_pickle: bool,
    error: type[AutoshrinkError],
    what: str,
    decompress: Callable[[bytes], bytes] | None = None,
    encoding: str = "ASCII",
    hints: Mapping[str, str] | None = None,
) -> Any:
    """The object pickled in the file ``path`` (a ``what``), read with ``allowed`` (see
    :func:`restricted_loads`), after ``decompress`` when given.

    Refused unless ``allow_pickle``: the user's explicit request for a pickle format. A refusal,
    a missing or unreadable file, one over :data:`PICKLE_LIMIT` bytes, and one that does not
    unpickle (corrupt, or naming a global outside ``allowed``) are each one ``error`` naming the
    file; ``hints`` maps a package (``"torch"``) to what the line adds when the file names a
    global of it (what to read instead).
    """
    path = Path(path)
    if not allow_pickle:
        raise error(
            f"{path}: a {what} is a pickle, and unpickling can run code from the file; pass "
            "allow_pickle=True (--allow-pickle) to read it with the restricted reader"
        )
    try:
        with path.open("rb") as f:
            raw = f.read(PICKLE_LIMIT + 1)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if len(raw) > PICKLE_LIMIT:
        raise error(f"{path}: larger than {PICKLE_LIMIT // 2**20} MiB; expected a {what}")
    try:
        return restricted_loads(decompress(raw) if decompress else raw, allowed, encoding=encoding)
    except Exception as err:  # a corrupt or hostile pickle can raise almost anything
        package = err.module.split(".")[0] if isinstance(err, RefusedGlobal) else ""
        hint = (hints or {}).get(package)
        raise error(
            f"{path}: not a readable {what} ({err})" + (f"; {hint}" if hint else "")
        ) from None


def bunzip2(data: bytes) -> bytes:
    """``data`` bz2-decompressed as by :func:`bz2.decompress` (streams in a row, trailing bytes
    that are no stream ignored), refused past :data:`PICKLE_LIMIT` bytes: a few kilobytes of
    bz2 can unpack to gigabytes."""
    parts: list[bytes] = []
    room = PICKLE_LIMIT + 1
    while data:
        stream = bz2.BZ2Decompressor()
        try:
            parts.append(stream.decompress(data, max_length=room))
        except OSError:
            if parts:
                break
            raise
        room -= len(parts[-1])
        if room == 0:
            raise ValueError(f"unpacks to more than {PICKLE_LIMIT // 2**20} MiB")
        if not stream.eof:
            raise ValueError("Compressed data ended before the end-of-stream marker was reached")
        data = stream.unused_data
    return b"".join(parts)


def _with_arrays(obj: Any) -> Any:
    """``obj`` with each :class:`_Array` in it (in dicts, lists and tuples) as its numpy array."""
    if isinstance(obj, _Array):
        return obj.numpy()
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _with_arrays(v)
    elif isinstance(obj, list):
        obj[:] = [_with_arrays(v) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_with_arrays(v) for v in obj)
    return obj


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """Stands in for ``_codecs.encode``, which pickles of protocols 0-2 written by Python 3
    call to rebuild ``bytes`` (numpy's raw data among them): encodes ``str`` to latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("malformed bytes in a protocol 0-2 pickle")
    return text.encode("latin1")


_BYTES: AllowList = {("_codecs", "encode"): _latin1}

_STRUCT = {
    "f8": "d",
    "f4": "f",
    "f2": "e",
    "i8": "q",
    "i4": "i",
    "i2": "h",
    "i1": "b",
    "u8": "Q",
    "u4": "I",
    "u2": "H",
    "u1": "B",
    "b1": "?",
}


def _text(value: Any) -> Any:
    """``value`` as ``str`` when it is ``bytes`` (a Python 2 ``str`` read with
    ``encoding="bytes"``, as CIFAR-10's batches are), else as it is."""
    return value.decode("latin1") if isinstance(value, bytes) else value


class _DType:
    """Stands in for ``numpy.dtype`` while unpickling: remembers the code (a plain number's
    only) and byte order."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        code = _text(code)
        if code not in _STRUCT:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not allowed")
        self.code, self.order = code, "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and _text(state[1]) in ("<", ">"):
            self.order = _text(state[1])

    def numpy(self) -> np.dtype:
        """The numpy dtype it stands for."""
        return np.dtype(self.order + self.code)


class _NDArrayName:
    """What the global ``numpy.ndarray`` resolves to: nothing to call, only a token that
    :func:`_reconstruct` accepts."""


_NDARRAY = _NDArrayName()


class _Array:
    """Stands in for a numpy array while unpickling: numpy's ``__setstate__`` state (version,
    shape, dtype, Fortran order, bytes) is checked and decoded by :meth:`numpy`."""

    def __init__(self) -> None:
        self.state: tuple[tuple[int, ...], _DType, bool, bytes] | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("malformed numpy array")
        _, shape, dtype, fortran, data = state
        if not (
            isinstance(shape, tuple)
            and all(type(n) is int and n >= 0 for n in shape)
            and isinstance(dtype, _DType)
            and isinstance(fortran, (bool, int))
            and isinstance(data, bytes)
        ):
            raise pickle.UnpicklingError("malformed numpy array (only arrays of plain numbers)")
        if math.prod(shape) * struct.calcsize(_STRUCT[dtype.code]) != len(data):
            raise pickle.UnpicklingError("numpy array of the wrong length")
        self.state = (shape, dtype, bool(fortran), data)

    def numpy(self) -> np.ndarray:
        """The array: a writable copy of its bytes, in its dtype, shape and order."""
        if self.state is None:
            raise pickle.UnpicklingError("malformed numpy array (no data)")
        shape, dtype, fortran, data = self.state
        flat = np.frombuffer(data, dtype=dtype.numpy()).copy()
        return flat.reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _Array:
    """Stands in for numpy's ``_reconstruct``: an empty :class:`_Array` for ``ndarray`` only."""
    if cls is not _NDARRAY or _text(typecode) != "b":
        raise pickle.UnpicklingError("malformed numpy array (not a plain ndarray)")
    return _Array()


def _scalar(dtype: Any, data: Any = b"") -> int | float | bool:
    """Stands in for ``numpy.core.multiarray.scalar``: decodes the bytes to a Python number."""
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed numpy scalar")
    fmt = dtype.order + _STRUCT[dtype.code]
    if struct.calcsize(fmt) != len(data):
        raise pickle.UnpicklingError("numpy scalar of the wrong length")
    return struct.unpack(fmt, data)[0]


NUMPY_ARRAYS: AllowList = {
    **_BYTES,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
}

NUMPY_SCALARS: AllowList = {
    **_BYTES,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}
