"""The Triton depthwise 3x3 kernels, run by Triton's CPU interpreter against ``F.conv2d``.

The interpreter is switched on by ``TRITON_INTERPRET=1`` before Triton is first imported, so
the check runs in a child process; it needs the ``triton`` package (``pip install triton``,
the ``triton`` extra), and is skipped, saying so, where it is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from autoshrink.errors import ConfigError
from autoshrink.nn import stacked_ops
from autoshrink.nn.stacked_ops import check_depthwise, resolve_depthwise, triton_usable
from conftest import REPO

CHECK = r"""
import torch
from torch.nn import functional as F
from autoshrink.nn.triton_depthwise import depthwise3x3_nhwc, readable

torch.manual_seed(0)
worst = 0.0
# shapes that fill no tile exactly: images of 1 row or column, channels across tiles, more
# pixels than one weight-gradient program sums (partial sums of several programs)
for b, h, w, c in ((2, 5, 7, 40), (1, 1, 6, 3), (3, 4, 1, 33), (1, 9, 9, 70), (2, 23, 25, 5)):
    x = torch.randn(b, h, w, c, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(c, 9, dtype=torch.float64, requires_grad=True)
    g = torch.randn(b, h, w, c, dtype=torch.float64)
    ref = F.conv2d(x.permute(0, 3, 1, 2), wt.view(c, 1, 3, 3), padding=1, groups=c)
    ref = ref.permute(0, 2, 3, 1)
    ref_grads = torch.autograd.grad(ref, (x, wt), g)
    mine = depthwise3x3_nhwc(x, wt)
    assert mine.shape == ref.shape and mine.dtype == torch.float64
    grads = torch.autograd.grad(mine, (x, wt), g)
    for a, e in ((mine, ref), *zip(grads, ref_grads)):
        worst = max(worst, (a - e).abs().max().item())
# [B, H, W, G, C] slices of a wider buffer's channels (the engine's node inputs), read in place
slices = ((2, 5, 7, 3, 4, 2, 11), (1, 6, 1, 2, 5, 0, 5), (2, 9, 9, 4, 3, 6, 9))
for b, h, w, g, c, start, width in slices:
    buf = torch.randn(b, h, w, g, width + 1, dtype=torch.float64)
    x = buf[..., start:start + c].detach().requires_grad_()
    assert readable(x) is x and (not x.is_contiguous() or width == c)  # no copy
    wt = torch.randn(g * c, 9, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(b, h, w, g, c, dtype=torch.float64)
    flat = x.reshape(b, h, w, g * c).permute(0, 3, 1, 2)
    ref = F.conv2d(flat, wt.view(g * c, 1, 3, 3), padding=1, groups=g * c)
    ref = ref.permute(0, 2, 3, 1).reshape(b, h, w, g, c)
    ref_grads = torch.autograd.grad(ref, (x, wt), grad)
    mine = depthwise3x3_nhwc(x, wt)
    assert mine.shape == ref.shape and mine.is_contiguous()
    grads = torch.autograd.grad(mine, (x, wt), grad)
    for a, e in ((mine, ref), *zip(grads, ref_grads)):
        worst = max(worst, (a - e).abs().max().item())
print(worst)
"""


@pytest.mark.skipif(not triton_usable(), reason="no Triton 3 or newer is installed")
def test_triton_depthwise_equals_conv2d_forward_and_backward() -> None:
    """Contiguous ``[B, H, W, C]`` inputs, and ``[B, H, W, G, C]`` channel slices of a wider
    tensor (read in place)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-12


def test_unknown_depthwise_backend_is_refused_by_name() -> None:
    check_depthwise("triton")
    with pytest.raises(ConfigError, match="unknown depthwise backend 'cuda'"):
        check_depthwise("cuda")


def test_auto_means_triton_where_triton_3_is_installed_else_torch(monkeypatch) -> None:
    # Triton 2 (PyTorch 2.2 and 2.3 bring it) failed on the kernels: 'auto' chose it
    for version, expected in (("3.1.0", "triton"), ("2.2.0", "torch"), (None, "torch")):
        monkeypatch.setattr(stacked_ops, "triton_version", lambda version=version: version)
        assert resolve_depthwise("auto") == expected
        assert resolve_depthwise("cudnn") == "cudnn"  # a named backend stays itself
    with pytest.raises(ConfigError, match="unknown depthwise backend 'fast'"):
        resolve_depthwise("fast")


def test_the_cpu_runs_the_same_depthwise_whatever_the_cuda_backend() -> None:
    from autoshrink.nn.stacked_ops import DEPTHWISE_BACKENDS, depthwise3x3

    x = torch.randn(2, 5, 5, 3, 4, dtype=torch.float64)
    w = torch.randn(12, 1, 3, 3, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(
        x.reshape(2, 5, 5, 12).permute(0, 3, 1, 2), w, padding=1, groups=12
    ).permute(0, 2, 3, 1)
    for backend in DEPTHWISE_BACKENDS:  # no Triton, no CUDA needed on the CPU
        torch.testing.assert_close(depthwise3x3(x, w, backend).reshape(2, 5, 5, 12), expected)
