"""Reading pickles without running their code: the project's one restricted unpickler.

Unpickling a file can call any global function the file names, so autoshrink unpickles only
where the user chose a format that is a pickle (CIFAR-10 python batches, the NATS-Bench
archive, HW-NAS-Bench), and then only through :class:`RestrictedUnpickler`. It builds builtin
containers, numbers and strings, and resolves a global only if the format's allow-list holds
it; any other global fails the load with :class:`pickle.UnpicklingError`.

Two allow-lists cover the formats read here:

- :data:`NUMPY_ARRAYS`: numpy's array reconstruction (CIFAR-10 python batches).
- :data:`NUMPY_SCALARS`: ``collections.OrderedDict`` and numpy's ``dtype``/``scalar`` pair,
  replaced by a plain decoder of the scalar's bytes, so no numpy code runs and the values come
  out as Python numbers (the NATS-Bench archive, HW-NAS-Bench).

Both also rebuild ``bytes`` the way protocols 0-2 do under Python 3 (``_codecs.encode`` of a
latin-1 string, replaced by a function that does only that).
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

AllowList = Mapping[tuple[str, str], Any]


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed`` (``(module, name) -> object``)."""

    def __init__(self, file: BinaryIO, allowed: AllowList, *, encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        """The object ``allowed`` maps ``(module, name)`` to; :class:`pickle.UnpicklingError` for
        any other global."""
        found = self.allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: not allowed in this format"
            )
        return found


def restricted_loads(data: bytes, allowed: AllowList, *, encoding: str = "ASCII") -> Any:
    """The object pickled in ``data``, read by :class:`RestrictedUnpickler` with ``allowed``.

    A corrupt or hostile pickle can raise almost any exception; callers wrap them into their
    own one-line error naming the file.
    """
    return RestrictedUnpickler(io.BytesIO(data), allowed, encoding=encoding).load()


# numpy's array reconstruction function, taken from numpy's own reduce so that the module's
# name (numpy.core before numpy 2, numpy._core since) does not matter.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """Stands in for ``_codecs.encode``, which pickles of protocols 0-2 written by Python 3
    call to rebuild ``bytes`` (numpy's raw data among them): encodes ``str`` to latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("malformed bytes in a protocol 0-2 pickle")
    return text.encode("latin1")


_BYTES: AllowList = {("_codecs", "encode"): _latin1}

NUMPY_ARRAYS: AllowList = {
    **_BYTES,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

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


class _DType:
    """Stands in for ``numpy.dtype`` while unpickling: remembers the code and byte order."""

    def __init__(self, code: str, align: Any = False, copy: Any = True) -> None:
        if code not in _STRUCT:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not allowed")
        self.code, self.order = code, "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
            self.order = state[1]


def _scalar(dtype: Any, data: Any = b"") -> int | float | bool:
    """Stands in for ``numpy.core.multiarray.scalar``: decodes the bytes to a Python number."""
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed numpy scalar")
    fmt = dtype.order + _STRUCT[dtype.code]
    if struct.calcsize(fmt) != len(data):
        raise pickle.UnpicklingError("numpy scalar of the wrong length")
    return struct.unpack(fmt, data)[0]


NUMPY_SCALARS: AllowList = {
    **_BYTES,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}
