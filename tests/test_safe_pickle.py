"""The restricted unpickler's numpy decoders: scalars (:data:`NUMPY_SCALARS`) come out as
Python numbers and arrays (:data:`NUMPY_ARRAYS`) as numpy arrays, in either byte order, from a
pickle of any protocol (and Python 2's, as CIFAR-10's are); what they cannot decode exactly, or
what would make numpy run on the file's say (an object array), is refused.

The formats that use it (the NATS-Bench archive, HW-NAS-Bench) have their own tests of whole
files; here the decoder's own checks, on pickles made by numpy itself or by hand.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from autoshrink.safe_pickle import NUMPY_ARRAYS, NUMPY_SCALARS, restricted_loads

SCALAR = np.float64(0).__reduce__()[0]  # numpy's own scalar constructor, as pickles name it


class Scalar:
    """Pickles as numpy's scalar constructor called on ``args`` (a dtype and bytes, or not)."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return SCALAR, self.args


def load(obj: Any) -> Any:
    return restricted_loads(pickle.dumps(obj), NUMPY_SCALARS)


def test_numpy_scalars_come_out_as_python_numbers_of_the_same_value() -> None:
    values = OrderedDict(
        f8=np.float64(0.1), f4=np.float32(1.5), f2=np.float16(-2.0), i8=np.int64(-(2**40)),
        i4=np.int32(-7), i2=np.int16(300), i1=np.int8(-3), u8=np.uint64(2**63), u4=np.uint32(9),
        u2=np.uint16(65535), u1=np.uint8(255), b1=np.bool_(True),
    )  # fmt: skip
    loaded = load(values)
    assert isinstance(loaded, OrderedDict) and list(loaded) == list(values)
    for code, value in values.items():
        assert type(loaded[code]) in (int, float, bool), code
        assert loaded[code] == value.item(), code  # float32 0.1 would not be 0.1: exact bits


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_is_read(protocol: int) -> None:
    # protocols 0-2 rebuild bytes with _codecs.encode, which was refused before
    values = {"latency": np.float64(0.1), "count": np.int32(-7), "flag": np.bool_(True)}
    data = pickle.dumps(values, protocol=protocol)
    assert restricted_loads(data, NUMPY_SCALARS) == {"latency": 0.1, "count": -7, "flag": True}
    if protocol < 5:  # numpy writes protocol 5 arrays as out-of-band buffers: not CIFAR's format
        array = np.arange(6, dtype=np.float32).reshape(2, 3)
        loaded = restricted_loads(pickle.dumps(array, protocol=protocol), NUMPY_ARRAYS)
        assert loaded.dtype == array.dtype and np.array_equal(loaded, array)


class Encoded:
    """Pickles as ``_codecs.encode(*args)``."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        import _codecs

        return _codecs.encode, self.args


@pytest.mark.parametrize("args", [("text", "utf-8"), (b"bytes", "latin1"), ("text", "rot13")])
def test_bytes_are_rebuilt_from_latin1_text_only(args: tuple[Any, ...]) -> None:
    assert load(Encoded("\xff\x00", "latin1")) == b"\xff\x00"
    with pytest.raises(pickle.UnpicklingError, match="^malformed bytes in a protocol 0-2 pickle$"):
        load(Encoded(*args))


def test_a_big_endian_scalar_is_read_in_its_own_byte_order() -> None:
    data = struct.pack(">d", 1.5)
    assert load(Scalar(np.dtype(">f8"), data)) == 1.5
    assert load(Scalar(np.dtype("<f8"), data)) != 1.5  # the same bytes read little-endian
    assert load(Scalar(np.dtype(">i4"), struct.pack(">i", -5))) == -5


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (np.complex128(1j), "numpy dtype 'c16' is not allowed"),
        (Scalar(np.dtype("f8"), b"\x00" * 4), "numpy scalar of the wrong length"),
        (Scalar(np.dtype("f8"), "not bytes"), "malformed numpy scalar"),
        (Scalar("f8", b"\x00" * 8), "malformed numpy scalar"),  # a string, not a dtype
    ],
)
def test_a_scalar_that_cannot_be_decoded_exactly_is_refused(obj: Any, says: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match=f"^{says}$"):
        load(obj)


def test_an_object_array_or_any_other_global_is_refused() -> None:
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global"):
        load(np.array([1.0]))  # arrays are not in this format's allow-list


RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array reconstruction, as pickles name it


class Reduced:
    """Pickles as ``func(*args)``, then ``__setstate__(state)`` when ``state`` is given."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def py2_array(array: np.ndarray, code: bytes, order: bytes) -> Reduced:
    """``array`` pickled as Python 2 numpy did, its strings read back as bytes (CIFAR-10's
    batches, read with ``encoding="bytes"``)."""
    dtype = Reduced(np.dtype, (code, 0, 1), (3, order, None, None, None, -1, -1, 0))
    state = (1, array.shape, dtype, False, array.tobytes())
    return Reduced(RECONSTRUCT, (np.ndarray, (0,), b"b"), state)


def load_arrays(obj: Any, protocol: int = 2) -> Any:
    return restricted_loads(pickle.dumps(obj, protocol=protocol), NUMPY_ARRAYS, encoding="bytes")


def test_arrays_come_out_as_writable_numpy_arrays_in_their_dtype_order_and_shape() -> None:
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    batch = load_arrays({b"data": py2_array(a, b"i4", b">"), b"labels": [1, 2]})
    assert batch[b"labels"] == [1, 2] and batch[b"data"].dtype == np.dtype(">i4")
    assert np.array_equal(batch[b"data"], a) and batch[b"data"].flags.writeable
    u8 = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(load_arrays([py2_array(u8, b"u1", b"|")])[0], u8)
    f = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    for protocol in range(5):
        assert np.array_equal(load_arrays((f, f.T), protocol)[0], f)


def test_an_object_array_made_from_the_files_bytes_is_refused() -> None:
    """numpy's ``ndarray((1,), dtype("O"), <8 bytes>)`` is an object array whose element is a
    pointer the file chose; unpickling one and handing it to numpy crashed the process
    (SIGSEGV) with only the allowed globals."""
    import struct as st

    fake = Reduced(np.ndarray, ((1,), np.dtype("O"), st.pack("<Q", 0x10)))
    evil = Reduced(RECONSTRUCT, (np.ndarray, fake, b"b"))
    with pytest.raises(pickle.UnpicklingError, match="numpy dtype 'O8' is not allowed"):
        load_arrays({b"data": evil})
    with pytest.raises(TypeError, match="not callable"):  # ndarray itself is no constructor
        load_arrays(Reduced(np.ndarray, ((1,), np.dtype("u1"), b"\x00")))
    obj = np.array([None, 1], dtype=object)  # an object array numpy itself pickled
    with pytest.raises(pickle.UnpicklingError, match="numpy dtype 'O8' is not allowed"):
        load_arrays(obj)


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (Reduced(RECONSTRUCT, (np.ndarray, (0,), b"b")), r"malformed numpy array \(no data\)"),
        (Reduced(RECONSTRUCT, (np.dtype, (0,), b"b")), r"not a plain ndarray"),
        (
            Reduced(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (3,), np.dtype("u1"), 0, b"ab")),
            "numpy array of the wrong length",
        ),
        (
            Reduced(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (-1,), np.dtype("u1"), 0, b"a")),
            "only arrays of plain numbers",
        ),
    ],
)
def test_a_malformed_array_is_refused(obj: Any, says: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match=says):
        load_arrays(obj)
