"""The proxy training loop for K stacked candidates at once (method §4, as in ``train_proxy``).

:func:`train_batched` trains a :class:`~autoshrink.nn.batched.BatchedCNN` so that candidate
``k`` follows exactly the trajectory ``train_proxy`` gives it alone: Adam on its own weight
slice (Adam is element-wise, so one optimizer over stacked weights keeps K independent
states), its own mini-batch order drawn from its own generator, batch-norm statistics over its
own batch, its own early stops and divergence. The summed loss has, for each slice, the
gradient of that candidate's own loss, and no operation mixes slices. At the end of an epoch
the candidates that stopped are reported at once; their slices are dropped from the stacks
(:meth:`BatchedCNN.select`, optimizer state included) once no more than ``compact_below`` of
the stacked candidates still train -- until then they ride along, computed and ignored, so that
the shapes (and on a GPU the kernels' set-up and the CUDA graph) change a few times per group
instead of at every stop. Inside an epoch nothing waits for the host. ``bf16=True`` runs
forward passes under bfloat16 autocast (not bit-equivalent).
On CUDA, float32 matmuls run on TF32 tensor cores (``tf32``, default on), as cuDNN's
convolutions of the one-by-one loop do by default in PyTorch; float64 is never affected.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import torch
from torch.nn import functional as F

from autoshrink.errors import ConfigError
from autoshrink.nn.batched import BatchedCNN
from autoshrink.training.classification import TrainOutcome, per_class
from autoshrink.training.cuda_graph import GraphedStep
from autoshrink.training.proxy_settings import ProxyTraining

log = logging.getLogger(__name__)


class EarlyStop:
    """One candidate's stop rules, applied epoch by epoch exactly as ``train_proxy`` does."""

    def __init__(self, settings: ProxyTraining) -> None:
        self.settings = settings
        self.best = 0.0
        self.since_best = 0
        self.history: list[dict[str, float]] = []

    def after_train(self, epoch: int, train_loss: float) -> TrainOutcome | None:
        """The outcome if the training loss of ``epoch`` ends the training (divergence)."""
        if not math.isfinite(train_loss):
            return TrainOutcome(self.best, epoch, True, "diverged", self.history)
        return None

    def after_validation(
        self, epoch: int, train_loss: float, val_loss: float, val_acc: float
    ) -> TrainOutcome | None:
        """Record ``epoch``; the outcome if the training stops after it."""
        s = self.settings
        self.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if not math.isfinite(val_loss):
            return TrainOutcome(self.best, epoch, True, "diverged", self.history)
        if val_acc > self.best:
            self.best, self.since_best = val_acc, 0
        else:
            self.since_best += 1
        reason = None
        if self.since_best >= s.patience:
            reason = "patience"
        elif epoch >= s.min_accuracy_epoch and val_acc < s.min_accuracy:
            reason = "low_accuracy"
        elif val_loss > s.overfit_ratio * train_loss:
            reason = "overfit"
        elif epoch == s.epochs:
            reason = "epochs"
        return (
            None if reason is None else TrainOutcome(self.best, epoch, False, reason, self.history)
        )


def bf16_autocast(device: torch.device, bf16: bool, cache: bool = True) -> AbstractContextManager:
    """Autocast to bfloat16 on ``device`` when ``bf16``, else a no-op context; ``cache=False``
    for a step replayed from a CUDA graph."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=cache
    )


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Inside: CUDA float32 matmuls may use TF32 tensor cores (the setting is put back after)."""
    if not enabled:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _full(logits: torch.Tensor) -> torch.Tensor:
    """bfloat16 logits (autocast) in float32 for the loss; others as they are."""
    return logits.float() if logits.dtype == torch.bfloat16 else logits


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """Images ``[N, C, H, W]`` -> ``[N, H, W, C]`` (no copy for channels-last input)."""
    return x.permute(0, 2, 3, 1).contiguous()


def validate(
    engine: BatchedCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    bf16: bool = False,
    tf32: bool = False,
) -> tuple[list[float], list[float], list[list[float]]]:
    """Mean loss, accuracy and accuracy per class (``nan``: a class without images) of every
    candidate on ``x [N, H, W, C]``, ``y [N]`` (eval mode)."""
    engine.eval()
    k = engine.k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=y.device)
    hits: torch.Tensor | None = None  # [classes, K]
    with torch.no_grad(), bf16_autocast(y.device, bf16), tf32_matmuls(tf32):
        for s in range(0, len(y), batch_size):
            xb = x[s : s + batch_size]
            xb = xb[:, :, :, None].expand(-1, -1, -1, k, -1).contiguous()  # [b, H, W, K, C]
            yb = y[s : s + batch_size, None].expand(-1, k)  # [b, K]
            logits = _full(engine(xb))  # [b, K, classes]
            loss = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none")  # [b, K]
            loss_sum += loss.sum(0).double()
            if hits is None:
                hits = torch.zeros(logits.shape[2], k, dtype=torch.long, device=y.device)
            hits.index_add_(0, yb[:, 0], (logits.argmax(2) == yb).long())
    assert hits is not None, "validation needs images"
    n, totals = len(y), torch.bincount(y, minlength=hits.shape[0])
    per_candidate = [per_class(hits[:, i], totals) for i in range(k)]
    return (loss_sum / n).tolist(), [c / n for c in hits.sum(0).tolist()], per_candidate


class TrainStep:
    """One optimisation step of the stacked engine, reading and writing only fixed buffers, so
    that it can be replayed from a CUDA graph: the mini-batch is ``idx [K, b]`` (rows into the
    training tensors, one row per candidate), the summed loss goes into ``loss_sum [K]``."""

    def __init__(
        self,
        engine: BatchedCNN,
        opt: torch.optim.Optimizer,
        data: tuple[torch.Tensor, torch.Tensor],
        idx: torch.Tensor,
        loss_sum: torch.Tensor,
        *,
        bf16: bool = False,
        tf32: bool = False,
        graphed: bool = False,
    ) -> None:
        self.engine, self.opt, self.data = engine, opt, data
        self.idx, self.loss_sum = idx, loss_sum
        self.bf16, self.tf32, self.graphed = bf16, tf32, graphed

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        """What the step writes besides the engine and optimizer: the loss sum."""
        return (self.loss_sum,)

    def __call__(self) -> None:
        """One step on the rows ``idx`` (``idx[k]``: candidate ``k``'s mini-batch): forward, each
        candidate's mean cross-entropy, backward, optimizer step; each loss times the batch size
        is added to ``loss_sum``."""
        x, y = self.data
        idx, dev = self.idx, self.loss_sum.device
        xb = x[idx.T].permute(0, 2, 3, 1, 4).contiguous()  # [b, H, W, K, C]
        yb = y[idx.T]  # [b, K]
        with tf32_matmuls(self.tf32):
            with bf16_autocast(dev, self.bf16, cache=not self.graphed):
                logits = _full(self.engine(xb))  # [b, K, classes]
            losses = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(0)
            self.opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # slice k's gradient is that of candidate k's own loss
        self.opt.step()
        self.loss_sum += losses.detach() * idx.shape[1]


def train_batched(
    engine: BatchedCNN,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: ProxyTraining,
    generators: Sequence[torch.Generator],
    *,
    bf16: bool = False,
    tf32: bool = True,
    cuda_graph: bool = False,
    compact_below: float = 0.5,
    on_stop: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, TrainOutcome]]:
    """Train the ``engine.k`` candidates; yield ``(k, outcome)`` as each one stops.

    ``on_stop(k, position)`` is called when candidate ``k`` stops, while its weights are still
    those it stopped with, at ``position`` in the engine's stack (e.g. to save them).

    ``train``/``val`` are ``x [N, C, H, W]``, ``y [N]`` on the engine's device, shared by all
    candidates; ``generators[k]`` draws candidate ``k``'s mini-batch order. ``engine`` is
    consumed: stopped candidates are removed from it when at most ``compact_below`` (a
    fraction in (0, 1]; 1: at every stop) of its stacked candidates still train. ``cuda_graph``
    (CUDA only) replays the full-size training steps from a CUDA graph, captured again after
    each compaction (see :mod:`autoshrink.training.cuda_graph`); the last, smaller batch of an
    epoch runs eagerly. ``tf32`` lets CUDA float32 matmuls use TF32 tensor cores (no effect
    elsewhere).
    """
    if len(generators) != engine.k:
        raise ValueError(f"{engine.k} candidates need {engine.k} generators, got {len(generators)}")
    check_compact_below(compact_below)
    x, y = _nhwc(train[0]), train[1]
    vx, vy = _nhwc(val[0]), val[1]
    n, dev, b = len(y), y.device, settings.batch_size
    tf32 = tf32 and dev.type == "cuda"
    precision = {"bf16": bf16, "tf32": tf32}
    if cuda_graph:
        require_cuda(dev)
    opt: torch.optim.Optimizer = torch.optim.Adam(  # on CUDA one fused kernel: same update rule
        engine.parameters(),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=dev.type == "cuda",
        capturable=cuda_graph,
    )
    stacked = list(range(engine.k))  # original index of each stacked slice
    training = set(stacked)  # the candidates that have not stopped
    stops = [EarlyStop(settings) for _ in stacked]
    steps: tuple[TrainStep, Callable[[], None]] | None = None
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        engine.train()
        k = len(stacked)
        orders = torch.stack([torch.randperm(n, generator=generators[i]) for i in stacked]).to(dev)
        if steps is None:  # first epoch, or the stacks were compacted: new buffers for this K
            steps = _training_steps(engine, opt, (x, y), orders, b, precision, cuda_graph)
        train_loss = _train_epoch(*steps, orders, b, precision)
        t1 = time.perf_counter()
        validation = validate(engine, vx, vy, settings.batch_size, **precision)
        log.debug(
            "epoch %d, %d stacked candidates (%d training): training %.3f s (%.0f img/s), "
            "validation %.3f s",
            epoch, k, len(training), t1 - t0, k * n / (t1 - t0), time.perf_counter() - t1,
        )  # fmt: skip
        for pos, i, out in _stopped(stops, stacked, training, epoch, train_loss, validation):
            if on_stop is not None and not out.diverged:
                on_stop(i, pos)
            training.discard(i)
            yield i, out
        if not training:
            return
        if len(training) < k and len(training) <= compact_below * k:
            keep = [pos for pos, i in enumerate(stacked) if i in training]
            opt = _select(engine, opt, torch.tensor(keep))
            stacked = [stacked[pos] for pos in keep]
            steps = None  # new tensors: new buffers (and a new capture)


def _training_steps(
    engine: BatchedCNN,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    orders: torch.Tensor,
    b: int,
    precision: dict[str, bool],
    cuda_graph: bool,
) -> tuple[TrainStep, Callable[[], None]]:
    """The step of the stacked engine's batches of ``b`` rows, and what runs it: itself, or
    with ``cuda_graph`` (and an epoch of at least one full batch) its replay from a CUDA graph,
    whose warm-up steps read the first batch of the epoch's row ``orders [K, N]``."""
    (k, n), dev = orders.shape, orders.device
    idx = torch.empty(k, min(b, n), dtype=torch.long, device=dev)
    step = TrainStep(engine, opt, data, idx, torch.zeros(k, device=dev), **precision,
                     graphed=cuda_graph)  # fmt: skip
    if cuda_graph and n >= b:
        idx.copy_(orders[:, :b])  # the warm-up steps of the capture read real rows
        return step, GraphedStep(step, engine, opt)
    return step, step


def _train_epoch(
    step: TrainStep,
    run: Callable[[], None],
    orders: torch.Tensor,
    b: int,
    precision: dict[str, bool],
) -> list[float]:
    """One epoch of the stacked candidates, in mini-batches of ``b`` of their row ``orders
    [K, N]`` (the full ones by ``run``, the last, smaller one eagerly); each candidate's mean
    training loss."""
    n = orders.shape[1]
    step.loss_sum.zero_()
    for s in range(0, n, b):
        batch = orders[:, s : s + b]  # [K, b]
        if batch.shape[1] == step.idx.shape[1]:
            step.idx.copy_(batch)
            run()
        else:  # the last, smaller batch of the epoch, eagerly
            TrainStep(step.engine, step.opt, step.data, batch, step.loss_sum, **precision)()
    return [v / n for v in step.loss_sum.double().tolist()]  # waits for the device


def _stopped(
    stops: Sequence[EarlyStop],
    stacked: Sequence[int],
    training: set[int],
    epoch: int,
    train_loss: Sequence[float],
    validation: tuple[list[float], list[float], list[list[float]]],
) -> Iterator[tuple[int, int, TrainOutcome]]:
    """``(position in the stack, candidate, outcome)`` of each candidate still ``training``
    that stops after ``epoch`` (a finished one with its validation accuracy per class)."""
    val_loss, val_acc, val_classes = validation
    for pos, i in enumerate(stacked):
        if i not in training:
            continue  # stopped earlier, still stacked
        out = stops[i].after_train(epoch, train_loss[pos]) or stops[i].after_validation(
            epoch, train_loss[pos], val_loss[pos], val_acc[pos]
        )
        if out is not None:
            if not out.diverged:
                out.class_accuracy = val_classes[pos]
            yield pos, i, out


def check_compact_below(compact_below: float) -> None:
    """Raise :class:`ConfigError` unless ``compact_below`` is a fraction in (0, 1]."""
    if not 0.0 < compact_below <= 1.0:
        raise ConfigError(f"compact_below must be in (0, 1], got {compact_below}")


def require_cuda(dev: torch.device) -> None:
    """Raise ``ValueError`` unless ``dev`` is a CUDA device (``cuda_graph`` needs one)."""
    if dev.type != "cuda":
        raise ValueError(f"cuda_graph needs the data on a CUDA device, not {dev}")


def _select(
    engine: BatchedCNN, opt: torch.optim.Optimizer, keep: torch.Tensor
) -> torch.optim.Optimizer:
    """Drop the stopped candidates from the engine; a new optimizer carries the kept state."""
    states = [opt.state.get(p, {}) for p in engine.parameters()]
    engine.select(keep)
    new = type(opt)(engine.parameters(), **opt.defaults)
    for p, state in zip(engine.parameters(), states, strict=True):
        if state:
            new.state[p] = {
                name: value[keep.to(value.device)]
                if torch.is_tensor(value) and value.dim() > 0
                else value
                for name, value in state.items()
            }
    return new
