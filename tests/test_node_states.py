"""Node inputs as views of one buffer: the same values and gradients as ``torch.cat``."""

from __future__ import annotations

import pytest
import torch

from autoshrink.errors import ConfigError
from autoshrink.nn.node_states import (
    NodeStates,
    check_node_inputs,
    resolve_node_inputs,
    view_reads,
)

WIDTHS = [3, 2, 2, 2]  # node 0 (the cell input) is wider, as in a cell


def leaves(dtypes=(torch.float64,) * 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, 3, 3, 4, w, generator=g, dtype=torch.float64).to(d).requires_grad_()
        for w, d in zip(WIDTHS, dtypes, strict=True)
    ]


def fill(outputs: list[torch.Tensor], buffered=frozenset(range(4))) -> NodeStates:
    states = NodeStates(outputs[0], WIDTHS, buffered)
    for y in outputs[1:]:
        states.append(y)
    return states


@pytest.mark.parametrize(
    ("slots", "zero", "view"),
    [([0, 1], False, True), ([1, 2, 3], True, True), ([0, 2], False, False), ([2], True, False)],
)
def test_a_read_equals_the_concatenation_and_splits_its_gradient_alike(slots, zero, view):
    outputs = leaves()
    states = fill(outputs)
    got = states.read(slots, zero=zero)
    parts = [outputs[s] for s in slots]
    expected = torch.cat([*parts, torch.zeros_like(parts[0][..., :1])] if zero else parts, -1)
    assert torch.equal(got, expected)
    assert (got._base is states.buffer) == view  # adjacent slots: a view, no copy
    weights = torch.randn(expected.shape, dtype=torch.float64)
    mine = torch.autograd.grad((got * weights).sum(), parts)
    theirs = torch.autograd.grad((expected * weights).sum(), parts)
    for a, b in zip(mine, theirs, strict=True):
        assert torch.equal(a, b)


def test_a_single_node_is_read_as_itself_and_unbuffered_slots_are_concatenated():
    outputs = leaves()
    assert fill(outputs).read([2]) is outputs[2]
    states = fill(outputs, buffered=frozenset({0}))
    got = states.read([0, 1])
    assert got._base is None and torch.equal(got, torch.cat(outputs[:2], -1))
    assert fill(outputs, buffered=frozenset()).buffer is None


def test_views_saved_for_backward_survive_the_later_writes():
    """An op saves its input view; writing the next slots must not invalidate it (autograd's
    version check would refuse the backward pass)."""
    outputs = leaves()
    states = NodeStates(outputs[0], WIDTHS, frozenset(range(4)))
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    states.append(torch.relu(states.read([0]) @ w))  # node 1 from node 0
    mixed = states.read([0, 1]).sin()  # sin saves its input: a view of slots 0-1
    states.append(outputs[2])
    states.append(outputs[3])  # two more writes into the buffer
    mixed.sum().backward()
    assert w.grad is not None and outputs[0].grad is not None


def test_a_node_of_another_dtype_is_concatenated_with_type_promotion():
    outputs = leaves((torch.float64, torch.float64, torch.float32, torch.float64))
    states = fill(outputs)  # the buffer takes node 0's dtype; node 2 stays out of it
    got = states.read([1, 2, 3])
    assert got.dtype == torch.float64 and got._base is None
    assert torch.equal(got, torch.cat(outputs[1:], -1))
    assert states.read([0, 1])._base is states.buffer  # the others stay views


def test_only_slots_of_adjacent_reads_are_buffered():
    # node inputs [0], [0, 1], [0, 2]; the cell output reads 1, 2 and the zero channel (3)
    assert view_reads([[0], [0, 1], [0, 2], [1, 2, 3]], 3) == {0, 1, 2}
    assert view_reads([[0], [0, 2], [2, 3]], 3) == {2}
    assert view_reads([[0], [1]], 3) == frozenset()


def test_modes_are_checked_and_auto_depends_on_the_device():
    assert resolve_node_inputs("auto", torch.device("cpu")) == "concat"
    assert resolve_node_inputs("auto", torch.device("cuda")) == "buffer"
    assert resolve_node_inputs("buffer", torch.device("cpu")) == "buffer"
    with pytest.raises(ConfigError, match="unknown node-input mode 'views'"):
        check_node_inputs("views")
