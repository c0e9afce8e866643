"""A cell's node outputs during one forward pass, in one preallocated tensor: node inputs are
views of it instead of concatenated copies.

In the stacked engine a node's input is its predecessors' outputs side by side along the
channels. ``torch.cat`` copies each predecessor's output once for every successor: in the
complete N-node cell that is N(N-1)/2 copies of a node's output per forward pass, and each
copy stays alive until the backward pass, since the node's op saves its input.
:class:`NodeStates` instead writes every node's output once into its slot of one
``[B, H, W, K, S + 1]`` tensor (slots in node order, then one zero channel). A read whose
nodes fill adjacent slots (every read in the complete cell: node ``i`` reads slots ``0..i-1``)
is a view of that range: no copy, and what the op saves for its backward pass is the view. Any
other read is ``torch.cat``, as before, so the result never depends on which way it was read.

Autograd: the buffer itself is outside the graph. A view read is ``_Read``, whose backward
pass hands each node its slice of the gradient, as ``torch.cat``'s does. Slots are written
through ``Tensor.data``, an alias with a version counter of its own, so that writing slot ``j``
does not invalidate the views of earlier slots that ops saved for their backward passes. That
is sound because each forward pass allocates a new buffer and writes each slot once, before
any read of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from autoshrink.errors import ConfigError

#: How a stacked cell gives a node its predecessors' outputs: ``buffer``, views of one
#: preallocated tensor where they are adjacent (:class:`NodeStates`); ``concat``, always
#: ``torch.cat`` (the baseline it is measured against); ``auto``, ``buffer`` on CUDA, where the
#: depthwise kernels read the views in place, and ``concat`` on the CPU, where oneDNN's
#: depthwise copies a view first and the buffer measured 0.97-1.08x (benchmarks/README.md).
NODE_INPUTS = ("auto", "buffer", "concat")


def check_node_inputs(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`NODE_INPUTS`."""
    if mode not in NODE_INPUTS:
        raise ConfigError(f"unknown node-input mode {mode!r}; expected one of {NODE_INPUTS}")


def resolve_node_inputs(mode: str, device: torch.device) -> str:
    """The way ``mode`` (one of :data:`NODE_INPUTS`) reads node inputs on ``device``."""
    check_node_inputs(mode)
    if mode != "auto":
        return mode
    return "buffer" if device.type == "cuda" else "concat"


def view_reads(reads: Sequence[Sequence[int]], n_slots: int) -> frozenset[int]:
    """The slots a cell must write into its buffer so that every read of ``reads`` (each a
    sorted sequence of slots; a read of slot ``n_slots`` is the zero channel) that can be a
    view is one: reads of two or more adjacent slots."""
    slots: set[int] = set()
    for read in reads:
        if len(read) > 1 and _adjacent(read):
            slots.update(s for s in read if s < n_slots)
    return frozenset(slots)


def _adjacent(read: Sequence[int]) -> bool:
    return list(read) == list(range(read[0], read[0] + len(read)))


class NodeStates:
    """The node outputs of one forward pass of a stacked cell, ``[B, H, W, K, width]`` each.

    Args:
        first: node 0's output (the cell input, or its pooled version).
        widths: every node's output width (slot widths, in node order).
        buffered: the slots written into the buffer (:func:`view_reads`); empty: no buffer,
            every read is ``torch.cat``.
    """

    def __init__(self, first: torch.Tensor, widths: Sequence[int], buffered: Iterable[int]) -> None:
        self.widths = list(widths)
        self.starts = [sum(self.widths[:i]) for i in range(len(self.widths) + 1)]
        self.states: list[torch.Tensor] = []
        self.buffered = set(buffered)
        self.buffer: torch.Tensor | None = None
        if buffered:
            total = self.starts[-1]
            self.buffer = first.new_empty(*first.shape[:-1], total + 1)
            self.buffer.data[..., total].zero_()
        self.append(first)

    def append(self, state: torch.Tensor) -> None:
        """Node ``len(self.states)``'s output: kept, and written into its slot if buffered."""
        slot = len(self.states)
        self.states.append(state)
        if slot not in self.buffered or self.buffer is None:
            return
        if state.dtype != self.buffer.dtype:  # e.g. under autocast: cat would promote
            self.buffered.discard(slot)
            return
        start, stop = self.starts[slot], self.starts[slot + 1]
        self.buffer.data[..., start:stop].copy_(state.detach())

    def _zero(self, like: torch.Tensor) -> torch.Tensor:
        """One zero channel, ``[B, H, W, K, 1]``, in ``like``'s dtype."""
        return like.new_zeros(*like.shape[:-1], 1)

    def read(self, slots: Sequence[int], zero: bool = False) -> torch.Tensor:
        """The outputs of the nodes ``slots`` (ascending) side by side, then one zero channel
        if ``zero``: a view of the buffer where they fill adjacent slots that were written,
        else a concatenation; a single node's output is itself."""
        parts = [self.states[s] for s in slots]
        if not zero and len(parts) == 1:
            return parts[0]
        with_zero = [*slots, len(self.widths)] if zero else list(slots)
        if self.buffer is not None and _adjacent(with_zero) and set(slots) <= self.buffered:
            start, stop = self.starts[slots[0]], self.starts[slots[-1] + 1] + int(zero)
            if not torch.is_grad_enabled():  # nothing to route: a plain view (one graph when
                return self.buffer[..., start:stop]  # compiled; the Function broke it there)
            return _Read.apply(self.buffer, start, stop, zero, *parts)
        return torch.cat([*parts, self._zero(parts[-1])] if zero else parts, -1)


class _Read(torch.autograd.Function):
    """A view of adjacent slots of the buffer (and its zero channel), with the nodes' outputs
    as inputs: its gradient is split among them, as ``torch.cat``'s."""

    @staticmethod
    def forward(
        ctx, buffer: torch.Tensor, start: int, stop: int, zero: bool, *states: torch.Tensor
    ):
        ctx.widths = [s.shape[-1] for s in states]
        ctx.zero = zero
        return buffer[..., start:stop]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        widths = ctx.widths + [1] if ctx.zero else ctx.widths
        parts = grad.split(widths, -1)
        return (None, None, None, None, *parts[: len(ctx.widths)])
