"""Batch norm fused with its activation (ReLU or SiLU) in Triton, for the stacked CNN engine.

The engine uses it with ``bn="triton"`` only: it saves memory, but on an H200 it was slower
than ``F.batch_norm`` then the activation, the default (benchmarks/README.md).

In training mode, ``y = act((x - mean) * invstd * w + b)`` with the statistics of ``x [N, C]``
over its rows. Unfused, PyTorch runs the batch norm's normalisation and the activation as two
passes over the tensor (and two more in the backward pass, plus the activation's saved
output). Here:

- forward: the statistics in two Triton passes of per-program column sums (of ``x``, then of
  its squared deviations from the mean, both shifted by the first row: the two-pass variance,
  summed by torch over the programs), then one Triton pass that normalises, scales, shifts and
  applies the activation; only ``x`` and the per-channel statistics are kept for the backward
  pass (the pre-activation is recomputed). ``torch.var_mean`` over the rows of ``[N, C]`` (a
  reduction along the non-contiguous axis) took 166 µs per call on an H200, against 56 µs for
  the normalising pass;
- backward: one Triton pass computing per-program partial sums over the rows of ``g'`` and
  ``g' * x̂`` (``g'`` the gradient through the activation; summed by torch, deterministic, no
  atomics), then one Triton pass writing ``dx``.

The running statistics are updated as ``F.batch_norm`` does (momentum, unbiased variance).
Accumulation is in float32 (float64 for float64 tensors). The module imports Triton at import
time: import it only where Triton is installed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N, BLOCK_C = 64, 32
ACTS = {"relu": 0, "swish": 1, "silu": 1}


@triton.jit
def _pre(x_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, n, c, pn, pc,
         BN: tl.constexpr, BC: tl.constexpr):  # fmt: skip
    """The tile's offsets and mask, normalised input x̂ and pre-activation z."""
    rows = pn * BN + tl.arange(0, BN)
    cols = pc * BC + tl.arange(0, BC)
    cm = cols < c
    m = (rows[:, None] < n) & cm[None, :]
    offs = rows[:, None] * c + cols[None, :]
    mean = tl.load(mean_ptr + cols, mask=cm, other=0.0)
    invstd = tl.load(invstd_ptr + cols, mask=cm, other=0.0)
    w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(mean.dtype)
    b = tl.load(b_ptr + cols, mask=cm, other=0.0).to(mean.dtype)
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(mean.dtype)
    xhat = (x - mean[None, :]) * invstd[None, :]
    z = xhat * w[None, :] + b[None, :]
    return offs, m, cols, cm, xhat, z, w, invstd


@triton.jit
def _column_sums(x_ptr, center_ptr, out_ptr, n, c,
                 DEVIATIONS: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr):  # fmt: skip
    """Per program, the column sums of its rows of ``x - x[0]`` (shifted by the first row, so
    that sums of values far from zero keep their precision), or with ``DEVIATIONS`` of
    ``(x - x[0] - center)^2``, into row ``program_id(0)`` of ``out``."""
    pn = tl.program_id(0)
    rows = pn * BN + tl.arange(0, BN)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = cols < c
    m = (rows[:, None] < n) & cm[None, :]
    first = tl.load(x_ptr + cols, mask=cm, other=0.0)
    x = tl.load(x_ptr + rows[:, None] * c + cols[None, :], mask=m, other=0.0)
    d = tl.where(m, x - first[None, :], 0.0)
    if DEVIATIONS:
        center = tl.load(center_ptr + cols, mask=cm, other=0.0)
        d = tl.where(m, d - center[None, :], 0.0)
        d = d * d
    tl.store(out_ptr + pn * c + cols, tl.sum(d, axis=0), mask=cm)


def var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The biased variance and the mean of the rows of ``x [N, C]`` (contiguous), as
    ``torch.var_mean(x, dim=0, correction=0)``: the two-pass algorithm on ``x - x[0]``."""
    n, c = x.shape
    grid = _grid(n, c)
    parts = torch.empty(grid[0], c, dtype=x.dtype, device=x.device)
    _column_sums[grid](x, x, parts, n, c, False, BLOCK_N, BLOCK_C)
    shifted_mean = parts.sum(0) / n
    _column_sums[grid](x, shifted_mean, parts, n, c, True, BLOCK_N, BLOCK_C)
    return parts.sum(0) / n, x[0] + shifted_mean


@triton.jit
def _fwd(x_ptr, y_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, n, c,
         ACT: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr):  # fmt: skip
    offs, m, cols, cm, xhat, z, w, invstd = _pre(
        x_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, n, c, tl.program_id(0), tl.program_id(1),
        BN, BC,
    )  # fmt: skip
    if ACT == 0:  # noqa: SIM108 (a compile-time branch)
        y = tl.where(z > 0, z, 0.0)
    else:
        y = z / (1.0 + tl.exp(-z))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _grad_through_act(g, z, ACT: tl.constexpr):
    if ACT == 0:  # noqa: SIM108 (a compile-time branch)
        out = tl.where(z > 0, g, 0.0)
    else:
        s = 1.0 / (1.0 + tl.exp(-z))
        out = g * s * (1.0 + z * (1.0 - s))
    return out


@triton.jit
def _bwd_sums(g_ptr, x_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, sums_ptr, n, c,
              ACT: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr):  # fmt: skip
    pn = tl.program_id(0)
    offs, m, cols, cm, xhat, z, w, invstd = _pre(
        x_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, n, c, pn, tl.program_id(1), BN, BC
    )
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(z.dtype)
    gz = tl.where(m, _grad_through_act(g, z, ACT), 0.0)
    tl.store(sums_ptr + pn * 2 * c + cols, tl.sum(gz, axis=0), mask=cm)
    tl.store(sums_ptr + pn * 2 * c + c + cols, tl.sum(gz * xhat, axis=0), mask=cm)


@triton.jit
def _bwd_dx(g_ptr, x_ptr, dx_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, db_ptr, dw_ptr, n, c,
            ACT: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr):  # fmt: skip
    offs, m, cols, cm, xhat, z, w, invstd = _pre(
        x_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, n, c, tl.program_id(0), tl.program_id(1),
        BN, BC,
    )  # fmt: skip
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(z.dtype)
    gz = _grad_through_act(g, z, ACT)
    db = tl.load(db_ptr + cols, mask=cm, other=0.0)
    dw = tl.load(dw_ptr + cols, mask=cm, other=0.0)
    dx = (w * invstd)[None, :] * (gz - db[None, :] / n - xhat * dw[None, :] / n)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)


def _grid(n: int, c: int) -> tuple[int, int]:
    return triton.cdiv(n, BLOCK_N), triton.cdiv(c, BLOCK_C)


class _BNAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, act):
        n, c = x.shape
        y = torch.empty_like(x)
        _fwd[_grid(n, c)](x, y, mean, invstd, weight, bias, n, c, ACTS[act], BLOCK_N, BLOCK_C)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.act = act
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous()
        n, c = x.shape
        grid = _grid(n, c)
        act = ACTS[ctx.act]
        sums = torch.empty(grid[0], 2, c, dtype=mean.dtype, device=x.device)
        _bwd_sums[grid](grad, x, mean, invstd, weight, bias, sums, n, c, act, BLOCK_N, BLOCK_C)
        db, dw = sums.sum(0)
        dx = torch.empty_like(x)
        _bwd_dx[grid](grad, x, dx, mean, invstd, weight, bias, db, dw, n, c, act,
                      BLOCK_N, BLOCK_C)  # fmt: skip
        return dx, dw.to(weight.dtype), db.to(bias.dtype), None, None, None


def batch_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    momentum: float,
    eps: float,
    act: str,
) -> torch.Tensor:
    """Training-mode ``act(F.batch_norm(x, ...))`` of ``x [N, C]`` (float32 or float64,
    contiguous), updating the running statistics in place; ``act`` is ``relu`` or ``swish``."""
    n = x.shape[0]
    x = x.contiguous()
    with torch.no_grad():
        var, mean = var_mean(x)
        invstd = torch.rsqrt(var + eps)
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)
    return _BNAct.apply(x, weight, bias, mean, invstd, act)
