"""The engine's bytes-per-step count (benchmarks/traffic.py, bench_engine_ops.py) against
bytes counted by hand: what each kind of op reads and writes, and the extrapolation to the
search's batch."""

from __future__ import annotations

import random
import sys

import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from autoshrink.nn import stacked_ops  # noqa: E402
from autoshrink.spaces.cells import start_cell  # noqa: E402
from autoshrink.spaces.macros import cifar_proxy  # noqa: E402
from autoshrink.training.proxy_settings import ProxyTraining
from bench_engine_ops import (  # noqa: E402
    bytes_per_step,
    depthwise_as_on_cuda,
    engine_run,
    parse_args,
    per_step,
)
from traffic import Traffic, tensor_bytes, traffic  # noqa: E402

F32 = 4


def test_a_tensor_covers_its_stored_elements_once() -> None:
    x = torch.zeros(4, 5)
    assert tensor_bytes(x) == 20 * F32
    assert tensor_bytes(x[:, :2]) == 8 * F32  # a view: its own elements
    assert tensor_bytes(torch.zeros(5).expand(4, 5)) == 5 * F32  # broadcast: read once
    assert tensor_bytes(torch.zeros(3, dtype=torch.float64)) == 24


def test_each_op_moves_what_it_reads_and_writes() -> None:
    x, y = torch.randn(1000), torch.randn(1000)
    a, b = torch.randn(2, 8, 16), torch.randn(2, 16, 4)
    out = torch.empty(2, 8, 4)
    assert traffic(lambda: torch.relu(x)) == {"relu": 2000 * F32}  # read x, write the result
    assert traffic(lambda: x.view(10, 100).t()) == {}  # views move nothing
    assert traffic(lambda: x.add_(y)) == {"add_": 3000 * F32}  # x read and written, y read
    assert traffic(lambda: x.copy_(y)) == {"copy_": 2000 * F32}  # x only written
    assert traffic(lambda: torch.bmm(a, b, out=out)) == {"bmm": (256 + 128 + 64) * F32}
    assert traffic(lambda: torch.mm(a[0], b[0])) == {"mm": (128 + 64 + 32) * F32}
    mode = Traffic(timed=True, cache=3999)  # x and relu(x) are 4,000 bytes each
    with mode:
        torch.relu(x).view(-1)
        torch.mm(a[0], b[0])  # 512, 256 and 128 bytes
    assert set(mode.seconds) == {"relu", "mm"} and min(mode.seconds.values()) >= 0
    assert mode.uncached == {"relu": 2000 * F32, "mm": 0}


def test_a_steps_bytes_at_any_batch_follow_from_two_small_batches() -> None:
    cell = start_cell("cnn", 4, random.Random(0))
    spec = cifar_proxy(image_size=8, width=0.25)

    def make(settings: ProxyTraining):
        return engine_run(cell, spec, settings, 2)

    measured = per_step(traffic, make(ProxyTraining(batch_size=24)))
    assert bytes_per_step(make, 24) == measured
    assert sum(measured.values()) > 0


def test_the_cpu_depthwise_input_copy_is_left_out_as_on_cuda() -> None:
    buffer = torch.randn(2, 4, 4, 3, 10)
    x = buffer[..., 2:6]  # a node input: a strided view of the node-input buffer, [B, H, W, K, C]
    w = torch.randn(12, 1, 3, 3)
    on_cpu = traffic(lambda: stacked_ops.depthwise3x3(x, w, "torch"))
    with depthwise_as_on_cuda():
        as_on_cuda = traffic(lambda: stacked_ops.depthwise3x3(x, w, "torch"))
    assert on_cpu["clone"] == 2 * x.numel() * F32  # the view read, its copy written
    assert "clone" not in as_on_cuda
    assert as_on_cuda["convolution"] == on_cpu["convolution"] > 0


def test_a_k_given_wins_over_quicks() -> None:
    """``bench_engine_ops.py --quick --k 2`` counted K = 3 without a word."""
    assert parse_args([]).k == 10 and parse_args(["--quick"]).k == 3  # the docstring's K
    assert parse_args(["--quick", "--k", "2"]).k == 2 and parse_args(["--k", "5"]).k == 5
