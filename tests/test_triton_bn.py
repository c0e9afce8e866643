"""Batch norm fused with its activation (Triton), run by Triton's CPU interpreter.

Against ``F.batch_norm`` + ReLU/SiLU: outputs, running statistics and the gradients of input,
weight and bias, in float64; the statistics alone in float32 against float64 (relative error
below 1e-6, scaled by 1e-6 into the same bound); and the stacked CNN engine with
``bn="triton"`` against ``bn="torch"`` (a training step's loss and every gradient). The
interpreter is switched on by
``TRITON_INTERPRET=1`` before Triton is first imported, so the checks run in a child process;
skipped, saying so, where Triton is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from autoshrink.errors import ConfigError
from autoshrink.nn.stacked_ops import StackedBN, check_bn, triton_usable
from conftest import REPO

OP_CHECK = r"""
import torch
from torch.nn import functional as F
from autoshrink.nn.triton_bn import batch_norm_act

torch.manual_seed(0)
worst = 0.0
# shapes that fill no tile exactly; one row-block and several (partial sums of programs)
for act in ("relu", "swish"):
    for n, c in ((37, 45), (130, 7), (2, 33)):
        x = torch.randn(n, c, dtype=torch.float64) * 3 + 1
        w, b = torch.randn(c, dtype=torch.float64), torch.randn(c, dtype=torch.float64)
        g = torch.randn(n, c, dtype=torch.float64)
        rm, rv = torch.randn(c, dtype=torch.float64), torch.rand(c, dtype=torch.float64) + 0.5
        rm2, rv2 = rm.clone(), rv.clone()
        ref_in = [t.clone().requires_grad_() for t in (x, w, b)]
        ref = F.batch_norm(ref_in[0], rm, rv, ref_in[1], ref_in[2], True, 0.1, 1e-5)
        ref = F.relu(ref) if act == "relu" else F.silu(ref)
        ref.backward(g)
        mine_in = [t.clone().requires_grad_() for t in (x, w, b)]
        mine = batch_norm_act(*mine_in, rm2, rv2, 0.1, 1e-5, act)
        mine.backward(g)
        pairs = [(mine, ref), (rm2, rm), (rv2, rv)]
        pairs += [(p.grad, q.grad) for p, q in zip(mine_in, ref_in)]
        for a, e in pairs:
            worst = max(worst, (a - e).abs().max().item() / (1 + e.abs().max().item()))
# the statistics alone in float32, far from zero (where one-pass sums of squares cancel)
from autoshrink.nn.triton_bn import var_mean
x = torch.randn(1000, 45) * 0.01 + 100.0
var, mean = var_mean(x)
ref_var, ref_mean = torch.var_mean(x.double(), dim=0, correction=0)
worst = max(worst, ((var - ref_var) / ref_var).abs().max().item() * 1e-6,
            ((mean - ref_mean) / ref_mean).abs().max().item() * 1e-6)
print(worst)
"""

ENGINE_CHECK = r"""
import random
import torch
from torch.nn import functional as F
from autoshrink.nn.batched import build_batched, union_cell
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import cifar_proxy

spec = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25)
parent = start_cell("cnn", 4, random.Random(1))
cells = [parent.remove_edge(e) for e in parent.edges[:2]]
g = torch.Generator().manual_seed(0)
x = torch.randn(6, 8, 8, 2, 1, generator=g, dtype=torch.float64)
y = torch.randint(0, 10, (6, 2), generator=g)
results = []
for bn in ("torch", "triton"):
    engine = build_batched(union_cell(cells), spec, cells, [1, 2], bn=bn).double().train()
    loss = F.cross_entropy(engine(x).transpose(1, 2), y)
    loss.backward()
    results.append([loss.detach()] + [p.grad.clone() for p in engine.parameters()])
    results[-1] += [b.clone() for b in engine.buffers() if b.is_floating_point()]
worst = max((a - b).abs().max().item() for a, b in zip(*results))
print(worst)
"""


def run_interpreted(code: str) -> float:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.strip().splitlines()[-1])


needs_triton = pytest.mark.skipif(not triton_usable(), reason="no Triton 3 or newer is installed")


@needs_triton
def test_fused_batch_norm_activation_equals_batch_norm_then_activation() -> None:
    assert run_interpreted(OP_CHECK) < 1e-12


@needs_triton
@pytest.mark.slow
def test_the_engine_with_fused_batch_norms_equals_the_unfused_engine() -> None:
    assert run_interpreted(ENGINE_CHECK) < 1e-12


@needs_triton
def test_only_the_triton_backend_in_training_takes_the_fused_path() -> None:
    assert not StackedBN(2, 3)._fused()  # the default: torch
    forced = StackedBN(2, 3, "triton")
    assert forced._fused() and not forced.eval()._fused()


def test_unknown_bn_backend_is_refused_by_name() -> None:
    check_bn("torch")
    with pytest.raises(ConfigError, match="unknown batch-norm backend 'auto'"):
        check_bn("auto")  # gone: the fused kernels were the slower on an H200


def test_the_triton_backend_is_refused_without_a_triton_that_runs_it(monkeypatch) -> None:
    """PyTorch 2.2 and 2.3 bring Triton 2: the kernels failed in training, 'arange's arguments
    must be of type tl.constexpr'; now the engine is refused as it is built."""
    from autoshrink.nn import stacked_ops

    for version, said in (("2.2.0", "Triton 2.2.0 is installed"), (None, "none is installed")):
        monkeypatch.setattr(stacked_ops, "triton_version", lambda version=version: version)
        line = re.escape(
            "batch-norm backend 'triton' needs Triton 3.0 or newer (pip install "
            f"'autoshrink[triton]'); {said}"
        )
        with pytest.raises(ConfigError, match=f"^{line}$"):
            StackedBN(2, 3, "triton")
    for version in ("3.0.0", "3.5.1+git8f3a", "10.1"):
        monkeypatch.setattr(stacked_ops, "triton_version", lambda version=version: version)
        check_bn("triton")


@needs_triton
def test_a_failing_fused_kernel_is_reported_not_hidden(monkeypatch) -> None:
    import autoshrink.nn.triton_bn as triton_bn

    def broken(*args, **kwargs):
        raise RuntimeError("compilation failed (simulated)")

    monkeypatch.setattr(triton_bn, "batch_norm_act", broken)
    x = torch.randn(5, 2, 3)
    with pytest.raises(RuntimeError, match="simulated"):
        StackedBN(2, 3, "triton")(x, "relu")
    assert StackedBN(2, 3)(x, "relu").shape == x.shape  # the default never calls it
