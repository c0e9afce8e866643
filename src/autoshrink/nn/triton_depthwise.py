"""Depthwise 3x3 convolution (stride 1, padding 1) in Triton, on the channels-last layout.

The batched engine keeps activations as ``[B, H, W, K*C]`` (channels last). cuDNN's depthwise
kernels for that layout are fast but spend about half a second setting up every new shape,
and a search meets new shapes at every step; PyTorch's own kernels need NCHW copies and are
slow on large images. These kernels read and write the channels-last layout directly and are
compiled once per dtype, for every shape (the engine's default on CUDA; measured on an H200 in
benchmarks/README.md):

- :func:`depthwise3x3_forward` computes ``y[p, c] = sum_t w[c, t] * x[p + offset(t), c]``
  (cross-correlation, as ``F.conv2d``); with the taps reversed it is also the gradient with
  respect to the input. The input may be a channel slice of a wider tensor (``[B, H, W, K, C]``
  of a ``[B, H, W, K, S]`` buffer: :mod:`autoshrink.nn.node_states`), read in place;
- :func:`depthwise3x3_weight_grad` reduces ``g[p, c] * x[p + offset(t), c]`` over the pixels,
  as per-program partial sums that torch adds up (deterministic, no atomics); each program
  keeps one accumulator tile per tap and reduces it over the pixels once, at the end.

Accumulation is in float32 (float64 for float64 tensors). The module imports Triton at import
time: import it only where Triton is installed (it is on CUDA machines with PyTorch).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import triton
import triton.language as tl

from autoshrink.nn.stacked_ops import autocast_inputs

BLOCK_P = 64  # pixels per forward tile
BLOCK_C = 32  # channels per tile
WGRAD_BLOCK_P = 32  # pixels per weight-gradient tile (nine accumulators of this tile each)
TILES = 32  # pixel tiles each weight-gradient program sums (one partial sum per program)


@triton.jit
def _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, DY: tl.constexpr, DX: tl.constexpr):
    """The tile of ``x`` at pixels ``p`` moved by (DY, DX), zero outside each image. Channel
    ``c`` is channel ``c % CG`` of group ``c // CG``; pixels are ``SP`` elements apart and
    groups ``SG`` (``SP = SG = CG = C`` for a contiguous ``[B, H, W, C]``)."""
    ok = pm & (h + DY >= 0) & (h + DY < H) & (w + DX >= 0) & (w + DX < W)
    q = (p + DY * W + DX).to(tl.int64)  # the neighbour, in the same image wherever ok
    col = (c // CG) * SG + c % CG
    ok = ok[:, None] & cm[None, :]
    return tl.load(x_ptr + q[:, None] * SP + col[None, :], mask=ok, other=0.0)


@triton.jit(do_not_specialize=["n_pix", "H", "W"])  # one compilation for all image sizes
def _forward_kernel(
    x_ptr, w_ptr, y_ptr, n_pix, H, W, C, SP, CG, SG,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # flat pixel b*H*W + h*W + w
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pm, cm = p < n_pix, c < C
    h = (p % (H * W)) // W  # 32-bit index arithmetic (pixel counts stay far below 2**31)
    w = p % W
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for t in tl.static_range(9):
        xv = _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, t // 3 - 1, t % 3 - 1)
        wv = tl.load(w_ptr + c * 9 + t, mask=cm, other=0.0)
        acc += xv.to(ACC) * wv.to(ACC)[None, :]
    out = y_ptr + p.to(tl.int64)[:, None] * C + c[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=pm[:, None] & cm[None, :])


@triton.jit(do_not_specialize=["n_pix", "H", "W"])
def _weight_grad_kernel(
    x_ptr, g_ptr, part_ptr, n_pix, H, W, C, SP, CG, SG,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, TILES: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    # one accumulator tile per tap, summed over the pixels only at the end: no reduction
    # across threads inside the loop
    pid = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    a0 = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    a1, a2, a3, a4, a5, a6, a7, a8 = a0, a0, a0, a0, a0, a0, a0, a0
    for tile in range(TILES):
        p = (pid * TILES + tile) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < n_pix
        h = (p % (H * W)) // W
        w = p % W
        row = p.to(tl.int64)[:, None] * C  # 64-bit element offsets: pixels x channels
        g = tl.load(g_ptr + row + c[None, :], mask=pm[:, None] & cm[None, :], other=0.0)
        g = g.to(ACC)
        a0 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, -1, -1).to(ACC) * g
        a1 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, -1, 0).to(ACC) * g
        a2 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, -1, 1).to(ACC) * g
        a3 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, 0, -1).to(ACC) * g
        a4 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, 0, 0).to(ACC) * g
        a5 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, 0, 1).to(ACC) * g
        a6 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, 1, -1).to(ACC) * g
        a7 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, 1, 0).to(ACC) * g
        a8 += _shifted(x_ptr, p, h, w, pm, c, cm, H, W, SP, CG, SG, 1, 1).to(ACC) * g
    out = part_ptr + pid * 9 * C + c  # part [programs, 9, C]
    tl.store(out, tl.sum(a0, axis=0), mask=cm)
    tl.store(out + C, tl.sum(a1, axis=0), mask=cm)
    tl.store(out + 2 * C, tl.sum(a2, axis=0), mask=cm)
    tl.store(out + 3 * C, tl.sum(a3, axis=0), mask=cm)
    tl.store(out + 4 * C, tl.sum(a4, axis=0), mask=cm)
    tl.store(out + 5 * C, tl.sum(a5, axis=0), mask=cm)
    tl.store(out + 6 * C, tl.sum(a6, axis=0), mask=cm)
    tl.store(out + 7 * C, tl.sum(a7, axis=0), mask=cm)
    tl.store(out + 8 * C, tl.sum(a8, axis=0), mask=cm)


def _accumulator(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    """The accumulation dtype for inputs of ``dtype``, in torch and in Triton: float64 for
    float64, float32 for anything else."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def readable(x: torch.Tensor) -> torch.Tensor:
    """``x [B, H, W, G, C]`` itself where the kernels can read it in place -- channels
    adjacent, pixels evenly spaced in row-major order, groups at any distance (e.g. a slice of
    the channels of a wider tensor) -- else a contiguous copy."""
    b, h, wd, _, _ = x.shape
    ok = x.stride(4) == 1 and x.stride(1) == wd * x.stride(2) and x.stride(0) == h * x.stride(1)
    return x if ok else x.clone(memory_format=torch.contiguous_format)


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    """The kernels' ``SP, CG, SG`` of a :func:`readable` ``x [B, H, W, G, C]``."""
    g, c = x.shape[3:]
    return x.stride(2), c, x.stride(3) if g > 1 else c


def depthwise3x3_forward(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x [B, H, W, G, C]`` (:func:`readable`), ``w [G*C, 9]`` (taps row by row) -> a
    contiguous ``[B, H, W, G, C]``."""
    b, h, wd, g, c = x.shape
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = b * h * wd
    grid = (triton.cdiv(n, BLOCK_P), triton.cdiv(g * c, BLOCK_C))
    with _on(x.device):
        _forward_kernel[grid](
            x, w.contiguous(), y, n, h, wd, g * c, *_strides(x),
            BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C, ACC=_accumulator(x.dtype)[1],
        )  # fmt: skip
    return y


def depthwise3x3_weight_grad(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The gradient ``[G*C, 9]`` of :func:`depthwise3x3_forward`'s weights, from its input
    ``x`` (:func:`readable`) and output gradient ``g`` (contiguous), both ``[B, H, W, G, C]``."""
    b, h, wd, groups, c = x.shape
    n = b * h * wd
    programs = triton.cdiv(n, TILES * WGRAD_BLOCK_P)
    acc, acc_tl = _accumulator(x.dtype)
    part = torch.empty(programs, 9, groups * c, dtype=acc, device=x.device)
    grid = (programs, triton.cdiv(groups * c, BLOCK_C))
    with _on(x.device):
        _weight_grad_kernel[grid](
            x, g, part, n, h, wd, groups * c, *_strides(x),
            BLOCK_P=WGRAD_BLOCK_P, BLOCK_C=BLOCK_C, TILES=TILES, ACC=acc_tl,
        )  # fmt: skip
    return part.sum(0).t()


def _on(device: torch.device) -> AbstractContextManager:
    """Triton launches on the current CUDA device: make it ``device`` (cuda:N) meanwhile."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


class _Depthwise3x3(torch.autograd.Function):
    """:func:`depthwise3x3_forward` with its gradients; under autocast it computes in the
    autocast dtype, as ``F.conv2d`` would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x, w = autocast_inputs(ctx, x, w)
        x, w = readable(x), w.contiguous()
        ctx.save_for_backward(x, w)
        return depthwise3x3_forward(x, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        g = grad.to(x.dtype).contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:  # the transposed convolution: the taps reversed
            gx = depthwise3x3_forward(g, w.flip(-1)).to(x_dtype)
        if ctx.needs_input_grad[1]:
            gw = depthwise3x3_weight_grad(x, g).to(w_dtype)
        return gx, gw


def depthwise3x3_nhwc(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Depthwise 3x3 (stride 1, padding 1) of ``x [B, H, W, C]`` with ``w [C, 9]``, with
    gradients: ``F.conv2d(x.permute(0, 3, 1, 2), w.view(C, 1, 3, 3), padding=1, groups=C)``
    in the channels-last layout. ``x`` may also be ``[B, H, W, G, C]`` (the channels ``G*C``),
    read in place where it is a slice of a wider tensor's channels (:func:`readable`)."""
    if x.dim() == 4:
        return _Depthwise3x3.apply(x.unsqueeze(3), w).squeeze(3)
    return _Depthwise3x3.apply(x, w)
