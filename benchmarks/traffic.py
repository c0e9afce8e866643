"""Bytes each aten op reads and writes, counted as the ops run: what a step moves through
memory, which bounds its time on a GPU bound by bandwidth.

:class:`Traffic` is a ``TorchDispatchMode``: it sees every op below autograd, as the kernels
are called, and adds up the bytes of its tensor arguments (read) and results (written); views
and allocations (:data:`NO_KERNEL`) move nothing. Used by ``bench_engine_ops.py``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: Ops that only make views, read metadata or allocate: no kernel of their own on a GPU.
NO_KERNEL = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "expand", "expand_as",
    "as_strided", "t", "transpose", "unsqueeze", "squeeze", "select", "slice", "narrow",
    "detach", "alias", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "lift_fresh", "resolve_conj", "resolve_neg", "unbind", "split", "split_with_sizes",
    "unsafe_split", "unsafe_split_with_sizes", "chunk", "view_as", "result_type", "set_",
}  # fmt: skip

#: In-place ops that only write their first argument: it is not read.
WRITE_ONLY = {"copy_", "zero_", "fill_", "normal_", "uniform_", "random_"}


def tensor_bytes(t: torch.Tensor) -> int:
    """The bytes of memory ``t`` covers: its elements, counting each stored element once (a
    broadcast dimension, stride 0, is read once)."""
    return math.prod(n for n, s in zip(t.shape, t.stride(), strict=True) if s != 0) * (
        t.element_size()
    )


class Traffic(TorchDispatchMode):
    """Bytes each kernel-like aten op reads and writes while the mode is on, by op name; with
    ``timed``, also each op's time (on CUDA its kernels' time, between CUDA events); with
    ``cache`` (bytes), also the bytes in tensors larger than that (:attr:`uncached`: a cache
    of that size cannot keep them between two kernels).

    An op reads its tensor arguments and writes its results (an ``out=`` tensor, and the first
    argument of :data:`WRITE_ONLY` ops, only written); views and allocations
    (:data:`NO_KERNEL`) move nothing. Ops run below autograd, as the kernels are called, and
    an op's own inner calls are not seen again; kernels launched outside aten (Triton's) are
    not seen at all."""

    def __init__(self, timed: bool = False, cache: float = math.inf) -> None:
        super().__init__()
        self.bytes: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.uncached: Counter[str] = Counter()
        self.timed, self.cache = timed, cache
        self.paused = False
        self._events: list[tuple[str, Any, Any]] = []

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Inside, ops run uncounted."""
        before, self.paused = self.paused, True
        try:
            yield
        finally:
            self.paused = before

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name in NO_KERNEL or not self.timed:
            out = func(*args, **kwargs)
        else:
            cuda = any(t.is_cuda for t in tree_leaves((args, kwargs)) if torch.is_tensor(t))
            begin = torch.cuda.Event(enable_timing=True) if cuda else time.perf_counter()
            if cuda:
                begin.record()
            out = func(*args, **kwargs)
            if cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self._events.append((name, begin, end))
            else:
                self.seconds[name] += time.perf_counter() - begin
        if name not in NO_KERNEL:
            read = [*(args[1:] if name in WRITE_ONLY else args), *kwargs.values()]
            read = [a for a in tree_leaves(read) if a is not kwargs.get("out")]
            moved = [t for t in (*tree_leaves(read), *tree_leaves(out)) if torch.is_tensor(t)]
            sizes = [tensor_bytes(t) for t in moved]
            self.bytes[name] += sum(sizes)
            self.uncached[name] += sum(n for n in sizes if n > self.cache)
        return out

    def __exit__(self, *exc: Any) -> Any:
        if self._events:
            torch.cuda.synchronize()
            for name, begin, end in self._events:
                self.seconds[name] += begin.elapsed_time(end) / 1e3
            self._events.clear()
        return super().__exit__(*exc)


def traffic(fn: Callable[[], Any]) -> Counter[str]:
    """:class:`Traffic` of running ``fn``: bytes by op."""
    mode = Traffic()
    with mode:
        fn()
    return mode.bytes


def cached_traffic(cache: float) -> Callable[[Callable[[], Any]], np.ndarray]:
    """A count of ``[bytes, bytes in tensors larger than cache]`` (:class:`Traffic`), summed
    over the ops."""

    def count(fn: Callable[[], Any]) -> np.ndarray:
        mode = Traffic(cache=cache)
        with mode:
            fn()
        return np.array([mode.bytes.total(), mode.uncached.total()], dtype=float)

    return count


def timed_traffic(fn: Callable[[], Any]) -> np.ndarray:
    """``[bytes, seconds]`` of running ``fn``, each a Counter by op (:class:`Traffic`, timed),
    as an object array, so that two counts subtract op by op."""
    mode = Traffic(timed=True)
    with mode:
        fn()
    return np.array([mode.bytes, mode.seconds], dtype=object)
