"""The stacked node ops of the batched engine: K candidates' copies of one op, run at once.

Activations use the layout ``[B, H, W, K, C]`` (contiguous).
- :func:`pointwise` is a 1x1 convolution per candidate: one batched matmul over ``K`` that
  reads and writes that layout in place, forward and backward (a hand-written backward; on
  CUDA each weight gradient's long reduction over ``B*H*W`` rows runs as parallel chunks).
- :class:`StackedBN` is K batch norms as one per-channel call on the ``[B*H*W, K*C]`` view.
- :func:`depthwise3x3` (in :class:`Sep3x3`) is one grouped convolution (``groups = K*C``) on
  the ``[B, K*C, H, W]`` view (:func:`to_nchw`, :func:`to_nhwkc`).

Each op's ``forward`` takes the candidates' input-column ``mask [K, C_in]`` (removed edges
contribute nothing and get no gradient) and ``leaf`` (leaves drop their final activation);
``load(k, op, cols)`` copies a separately built :mod:`autoshrink.nn.ops` module into slice ``k``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeAlias

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.errors import ConfigError

#: Node ops the stacked network implements (the AutoShrink CNN search ops).
BATCHED_OPS = ("sep3x3", "conv1x1")

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # nn.BatchNorm2d's defaults


#: The functional form of each activation :func:`autoshrink.nn.ops.activation` builds.
ACTIVATIONS = {"relu": F.relu, "swish": F.silu, "relu6": F.relu6}


def activate(name: str, x: torch.Tensor) -> torch.Tensor:
    """The activation ``name`` (``relu``, ``swish``: SiLU, ``relu6``) of ``x``."""
    try:
        return ACTIVATIONS[name](x)
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}"
        ) from None


def finish(act: str, y: torch.Tensor, leaf: torch.Tensor | bool) -> torch.Tensor:
    """The node's final activation, dropped where the node is a leaf (``leaf`` per candidate
    ``[K]``, or one bool for all: no ``where`` needed)."""
    if isinstance(leaf, bool):
        return y if leaf else activate(act, y)
    return torch.where(leaf[:, None], y, activate(act, y))


def bn_finish(bn: nn.Module, act: str, y: torch.Tensor, leaf: torch.Tensor | bool) -> torch.Tensor:
    """Batch norm then the node's final activation (fused where no candidate has the node as
    a leaf), dropped where the node is a leaf: leaves stay linear."""
    if leaf is False:
        return bn(y, act)
    return finish(act, bn(y), leaf)


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, K, C]`` -> the channels-last view ``[B, K*C, H, W]`` (no copy)."""
    b, h, w, k, c = x.shape
    return x.reshape(b, h, w, k * c).permute(0, 3, 1, 2)


def to_nhwkc(y: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, K*C, H, W]`` -> ``[B, H, W, K, C]`` (a view when ``y`` is channels-last)."""
    b, kc, h, w = y.shape
    return y.permute(0, 2, 3, 1).contiguous().view(b, h, w, k, kc // k)


def pointwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-candidate 1x1 convolution: ``x [..., K, C]``, ``w [K, O, C]`` -> ``[..., K, O]``."""
    *lead, k, c = x.shape
    return _Pointwise.apply(x.reshape(-1, k, c), w).view(*lead, k, w.shape[1])


#: On CUDA, a weight gradient's reduction over the rows is split into chunks of at least this
#: many rows, run as extra matmul batches and summed: one long reduction into a small
#: ``[O, C]`` output per candidate keeps only a few thread blocks busy for milliseconds.
SPLIT_ROWS = 4096


class _Pointwise(torch.autograd.Function):
    """``x [N, K, C]``, ``w [K, O, C]`` -> ``[N, K, O]`` as batched matmuls over ``K`` that
    read and write the ``[N, K, *]`` layout in place (no transposed copies, forward or
    backward). Under autocast, computes in the autocast dtype as ``torch.bmm`` would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x, w = autocast_inputs(ctx, x, w)
        out = x.new_empty(x.shape[0], x.shape[1], w.shape[1])
        _bmm_into(out.transpose(0, 1), x.transpose(0, 1), w.transpose(1, 2))
        ctx.save_for_backward(x, w)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        g = grad.to(x.dtype).contiguous()
        n, k, c = x.shape
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = g.new_empty(n, k, c)
            _bmm_into(gx.transpose(0, 1), g.transpose(0, 1), w)
            gx = gx.to(x_dtype)
        if ctx.needs_input_grad[1]:
            s = _split(n, x.device)  # rows r = m * s + j: chunk j is matmul batch j * K + k
            m, o = n // s, w.shape[1]
            rows = x.reshape(m, s * k, c)  # a view, also of a slice of a wider buffer
            part = torch.bmm(g.view(m, s * k, o).permute(1, 2, 0), rows.transpose(0, 1))
            gw = (part if s == 1 else part.view(s, k, o, c).sum(0)).to(w_dtype)
        return gx, gw


def _compile_probe() -> Callable[[], bool]:
    """What says whether ``torch.compile`` is tracing the caller: ``torch.compiler.is_compiling``
    (PyTorch 2.3+), else ``torch._utils.is_compiling``, which 2.2's compiler reads as true
    (traced, the eager path's ``out=`` of a tensor that needs a gradient was an error)."""
    return getattr(torch.compiler, "is_compiling", None) or torch._utils.is_compiling


_compiling = _compile_probe()


def _bmm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``out = a @ b`` (batched) in place, ``out`` strided; under ``torch.compile`` as a copy of
    the product, since a strided ``out=`` ends the compiler's graph there."""
    if _compiling():
        out.copy_(torch.bmm(a, b))
    else:
        torch.bmm(a, b, out=out)


def _split(n: int, device: torch.device) -> int:
    """Chunks of a weight gradient's ``n`` rows: a power of two dividing ``n``, each chunk at
    least :data:`SPLIT_ROWS` rows; 1 (no split) off CUDA."""
    s = 1
    if device.type == "cuda":
        while n % (2 * s) == 0 and n // (2 * s) >= SPLIT_ROWS:
            s *= 2
    return s


def autocast_inputs(ctx: object, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For an autograd Function's ``forward``: record the ``tensors``' dtypes as
    ``ctx.dtypes`` (their gradients go back in them), and return them in autocast's lower
    precision where autocast is on here, as its matmuls and convolutions would take them."""
    ctx.dtypes = tuple(t.dtype for t in tensors)  # type: ignore[attr-defined]
    low = _autocast_dtype(tensors[0].device.type)
    return tensors if low is None else tuple(_cast(t, low) for t in tensors)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in autocast's lower precision, if autocast would cast it (float64 it leaves)."""
    return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast gives matmuls on ``device_type`` here, or None outside autocast."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        on = torch.is_autocast_enabled(device_type)
        return torch.get_autocast_dtype(device_type) if on else None
    if device_type == "cuda":  # torch 2.2 - 2.3
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


#: How the stacked depthwise 3x3 runs on CUDA (on the CPU it is always oneDNN's, channels-last):
#: ``triton``, this package's Triton kernels on the channels-last layout
#: (:mod:`autoshrink.nn.triton_depthwise`); ``torch``, PyTorch's own kernels on an NCHW copy;
#: ``cudnn``, cuDNN on the channels-last view; ``auto``, ``triton`` where Triton 3 or newer is
#: installed (CUDA builds of PyTorch 2.4+ bring it), else ``torch``.
DEPTHWISE_BACKENDS = ("auto", "triton", "torch", "cudnn")


def check_depthwise(backend: str) -> None:
    """Raise :class:`ConfigError` unless ``backend`` is one of :data:`DEPTHWISE_BACKENDS`."""
    if backend not in DEPTHWISE_BACKENDS:
        raise ConfigError(
            f"unknown depthwise backend {backend!r}; expected one of {DEPTHWISE_BACKENDS}"
        )


#: The oldest Triton the engine's kernels are written for (pyproject.toml's ``triton`` extra):
#: PyTorch 2.2 and 2.3 bring Triton 2, whose compiler and interpreter refuse them.
MIN_TRITON = (3, 0)


@functools.cache
def triton_version() -> str | None:
    """The installed Triton's version (``None``: none is installed)."""
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # a build of another name (pytorch-triton)
        if importlib.util.find_spec("triton") is None:
            return None
        import triton

        return str(triton.__version__)


def triton_usable() -> bool:
    """Whether the installed Triton runs the engine's kernels (:data:`MIN_TRITON` or newer)."""
    version = triton_version()
    return version is not None and tuple(map(int, re.findall(r"\d+", version)[:2])) >= MIN_TRITON


def require_triton(what: str) -> None:
    """Raise :class:`ConfigError` naming ``what`` unless :func:`triton_usable`."""
    if not triton_usable():
        version = triton_version()
        raise ConfigError(
            f"{what} needs Triton {'.'.join(map(str, MIN_TRITON))} or newer (pip install "
            f"'autoshrink[triton]'); {f'Triton {version} is' if version else 'none is'} installed"
        )


def resolve_depthwise(backend: str) -> str:
    """The kernels ``backend`` stands for: itself, or for ``auto`` ``triton`` where a Triton
    that runs them is installed (:func:`triton_usable`) and ``torch`` where none is."""
    check_depthwise(backend)
    if backend != "auto":
        return backend
    return "triton" if triton_usable() else "torch"


def depthwise3x3(x: torch.Tensor, w: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Depthwise 3x3 convolution (padding 1) of ``x [B, H, W, K, C]`` with ``w [K*C, 1, 3, 3]``.

    ``backend`` (one of :data:`DEPTHWISE_BACKENDS`) chooses the CUDA kernels. Measured on an
    H200 (benchmarks/README.md), over the depthwise convolutions of one training step of the
    complete cell: Triton's 19.7 ms, PyTorch's 39.5 ms (most of the gap is the NCHW copies);
    cuDNN's about as fast as Triton's in a whole training step once set up, but 0.4-1.1 s of
    set-up for each new shape, which a search meets at every shrink step. Triton's compile
    once (about 2 s) for every shape.
    """
    backend = resolve_depthwise(backend)
    k = x.shape[3]
    if x.is_cuda and backend == "triton":
        from autoshrink.nn.triton_depthwise import depthwise3x3_nhwc  # needs Triton

        return depthwise3x3_nhwc(x, w.reshape(w.shape[0], 9))  # reads a strided x in place
    nchw = to_nchw(x)
    if x.is_cuda and backend == "torch":
        nchw = nchw.contiguous()  # NCHW: PyTorch's kernels; channels-last would go to cuDNN
    return to_nhwkc(F.conv2d(nchw, w, padding=1, groups=w.shape[0]), k)


#: Batch norm + activation kernels of the engine: ``torch`` (the default), ``F.batch_norm``
#: then the activation; ``triton``, batch norm and activation fused in Triton passes in
#: training (:mod:`autoshrink.nn.triton_bn`; on CPU tensors only under Triton's interpreter),
#: 0.9 GB less peak memory for the complete cell but slower on an H200 (1-13% for the complete
#: cell, 21-23% for the ShrinkCNN cell; benchmarks/README.md).
BN_BACKENDS = ("torch", "triton")


def check_bn(backend: str) -> None:
    """Raise :class:`ConfigError` unless ``backend`` is one of :data:`BN_BACKENDS` whose
    kernels can run here (``triton``: :func:`require_triton`)."""
    if backend not in BN_BACKENDS:
        raise ConfigError(f"unknown batch-norm backend {backend!r}; expected one of {BN_BACKENDS}")
    if backend == "triton":
        require_triton("batch-norm backend 'triton'")


class StackedBN(nn.Module):
    """K batch norms over ``[..., K, C]``: statistics per candidate and channel.

    ``forward(x, act)`` also applies the activation ``act``, fused with the batch norm in
    training where :attr:`backend` (one of :data:`BN_BACKENDS`) says so.
    """

    running_mean: torch.Tensor  # buffers
    running_var: torch.Tensor

    def __init__(self, k: int, c: int, backend: str = "torch") -> None:
        super().__init__()
        check_bn(backend)
        self.backend = backend
        self.weight = nn.Parameter(torch.zeros(k, c))
        self.bias = nn.Parameter(torch.zeros(k, c))
        self.register_buffer("running_mean", torch.zeros(k, c))
        self.register_buffer("running_var", torch.ones(k, c))

    def _fused(self) -> bool:
        return self.backend == "triton" and self.training

    def forward(self, x: torch.Tensor, act: str | None = None) -> torch.Tensor:
        """``x [..., K, C]`` normalised per candidate and channel (batch statistics in training,
        running ones in eval), then ``act`` unless ``None`` (fused in Triton in training where
        :attr:`backend` is ``triton``); the shape is kept."""
        k, c = self.weight.shape
        if act is not None and self._fused():
            from autoshrink.nn.triton_bn import batch_norm_act  # needs Triton

            args = (self.weight.view(-1), self.bias.view(-1), self.running_mean.view(-1))
            y = batch_norm_act(
                x.reshape(-1, k * c), *args, self.running_var.view(-1), BN_MOMENTUM, BN_EPS, act
            )
            return y.view(x.shape)
        y = F.batch_norm(
            x.reshape(-1, k * c),  # [B*H*W, K*C]
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.view(-1),
            self.bias.view(-1),
            self.training,
            BN_MOMENTUM,
            BN_EPS,
        )
        return y.view(x.shape) if act is None else activate(act, y.view(x.shape))

    def load(
        self, k: int, bn: nn.BatchNorm2d, channels: Sequence[int] | slice, back: bool = False
    ) -> None:
        """Copy ``bn`` into candidate ``k``'s ``channels`` (``back``: those into ``bn``)."""
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("the batch norm has no running statistics to copy")
        for mine, theirs in (
            (self.weight, bn.weight),
            (self.bias, bn.bias),
            (self.running_mean, bn.running_mean),
            (self.running_var, bn.running_var),
        ):
            move(mine.data[k], channels, theirs.data, back)


class Sep3x3(nn.Module):
    """Stacked ``sep3x3``: depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN -> act."""

    def __init__(self, k: int, c_in: int, f: int, act: str, depthwise: str = "auto") -> None:
        super().__init__()
        # the backend of depthwise3x3, resolved once (not in every forward pass, which
        # torch.compile traces)
        self.act, self.depthwise = act, resolve_depthwise(depthwise)
        self.dw = nn.Parameter(torch.zeros(k, c_in, 3, 3))
        self.bn1 = StackedBN(k, c_in)
        self.pw = nn.Parameter(torch.zeros(k, f, c_in))
        self.bn2 = StackedBN(k, f)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, leaf: torch.Tensor | bool
    ) -> torch.Tensor:
        """``x [B, H, W, K, C_in]`` -> ``[B, H, W, K, f]``, each candidate's weights masked to its
        input columns ``mask [K, C_in]``; the final activation dropped where ``leaf`` (a bool, or
        ``[K]``: per candidate)."""
        k, c = mask.shape  # mask [K, C_in]: the candidate's input columns
        dw = (self.dw * mask[:, :, None, None]).reshape(k * c, 1, 3, 3)
        h = depthwise3x3(x, dw, self.depthwise)
        h = self.bn1(h, self.act)
        return bn_finish(self.bn2, self.act, pointwise(h, self.pw * mask[:, None, :]), leaf)

    def load(self, k: int, op: nn.Module, cols: list[int], back: bool = False) -> None:
        """Copy the plain op ``op`` into candidate ``k``'s input columns ``cols`` (``back``:
        the other way)."""
        dw, pw = (m for m in op.children() if isinstance(m, nn.Conv2d))
        bn1, bn2 = (m for m in op.children() if isinstance(m, nn.BatchNorm2d))
        move(self.dw.data[k], cols, dw.weight.data[:, 0], back)
        move(self.pw.data[k], (slice(None), cols), pw.weight.data[:, :, 0, 0], back)
        self.bn1.load(k, bn1, cols, back)
        self.bn2.load(k, bn2, slice(None), back)


class Conv1x1(nn.Module):
    """Stacked ``conv1x1``: pointwise 1x1 -> BN -> act."""

    def __init__(self, k: int, c_in: int, f: int, act: str) -> None:
        super().__init__()
        self.act = act
        self.pw = nn.Parameter(torch.zeros(k, f, c_in))
        self.bn = StackedBN(k, f)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, leaf: torch.Tensor | bool
    ) -> torch.Tensor:
        """``x [B, H, W, K, C_in]`` -> ``[B, H, W, K, f]``, each candidate's weights masked to its
        input columns ``mask [K, C_in]``; the activation dropped where ``leaf`` (a bool, or ``[K]``:
        per candidate)."""
        return bn_finish(self.bn, self.act, pointwise(x, self.pw * mask[:, None, :]), leaf)

    def load(self, k: int, op: nn.Module, cols: list[int], back: bool = False) -> None:
        """As :meth:`Sep3x3.load`."""
        conv, bn = conv_and_bn(op)
        move(self.pw.data[k], (slice(None), cols), conv.weight.data[:, :, 0, 0], back)
        self.bn.load(k, bn, slice(None), back)


def conv_and_bn(op: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The one convolution and the one batch norm among the children of ``op``."""
    (conv,) = (m for m in op.children() if isinstance(m, nn.Conv2d))
    (bn,) = (m for m in op.children() if isinstance(m, nn.BatchNorm2d))
    return conv, bn


def move(stacked: torch.Tensor, index: Any, own: torch.Tensor, back: bool) -> None:
    """Copy a candidate's own tensor ``own`` into ``stacked[index]`` (``stacked``: the
    candidate's slice of a stacked tensor), or with ``back`` from there into ``own``; both are
    views of the tensors' data, so that either direction writes in place."""
    if back:
        own.copy_(stacked[index].to(own.dtype))
    else:
        stacked[index] = own.to(stacked.dtype)


StackedOp: TypeAlias = Sep3x3 | Conv1x1
OP_MODULES: Mapping[str, type[StackedOp]] = MappingProxyType({"sep3x3": Sep3x3, "conv1x1": Conv1x1})
