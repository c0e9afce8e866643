"""The strided 1x1 convolution is routed around oneDNN issue #6035 on AVX2 CPUs.

oneDNN's AVX2 kernels for the weight gradient of a strided 1x1 convolution on a channels-last
input with fewer than 8 input channels write past a workspace: heap corruption (an abort) or
silently wrong gradients. The residual projection of a down-sampling cell is that layer. The
test pins oneDNN to AVX2 (``ONEDNN_MAX_CPU_ISA``, read once per process, hence the subprocess)
so it reproduces on any x86 machine, and checks the gradients against an NCHW float64 reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import random, torch
    from autoshrink.nn.ops import conv_bn
    from autoshrink.nn.cnn import CNNCell
    from autoshrink.cost.cells import plan
    from autoshrink.spaces.macros import cifar_proxy
    from autoshrink.spaces.cells import start_cell

    torch.set_num_threads(1)

    def grads(module, x, probe, layout):
        module = module.to(memory_format=layout)
        module.zero_grad()
        (module(x.contiguous(memory_format=layout)) * probe).sum().backward()
        return [p.grad.double().clone() for p in module.parameters()]

    def check(module, x):
        probe = torch.randn(module.double()(x.double()).shape, dtype=torch.float64)
        fast = grads(module.float(), x.float(), probe.float(), torch.channels_last)
        ref = grads(module.double(), x.double(), probe, torch.contiguous_format)
        for f, r in zip(fast, ref, strict=True):
            err = (f - r).abs().max()
            assert err <= 1e-4 * max(1.0, r.abs().max()), (f.shape, err, r.abs().max())

    for ic in (1, 2, 3, 4, 7):
        for size in (7, 8):
            torch.manual_seed(ic)
            layer = torch.nn.Sequential(*conv_bn(ic, 8, 1, stride=2))
            check(layer, torch.randn(64, ic, size, size))
    spec = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25)
    cell = start_cell("cnn", 5, random.Random(3))
    where = next(p for p in plan(cell, spec) if p.downsample)
    assert where.needs_projection and where.in_channels < 8
    check(CNNCell(cell, where), torch.randn(64, where.in_channels, 8, 8))
    print("ok")
    """
)


@pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="torch was built without oneDNN"
)
def test_strided_pointwise_gradients_are_exact_under_onednn_avx2() -> None:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
    for _ in range(3):  # the overflow corrupts the heap in about two runs of three
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
