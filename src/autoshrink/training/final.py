"""Final training of a network on a whole data set, on one process or many under torchrun.

:func:`train_final` runs a :class:`~autoshrink.training.recipes.Recipe` on
:class:`~autoshrink.data.loaders.TrainingData`: every process reads its share of each global
batch through a DataLoader, DistributedDataParallel averages the gradients, the schedule
steps once per global batch, the weight EMA follows every step; after every epoch the
validation side is scored with the EMA weights (the model's own when the EMA is off), the
train loss and the scores are summed over all processes, and rank 0 appends the epoch to
``log.jsonl`` and writes a checkpoint (model, EMA, optimiser, schedule, sampler, loss scaler).

Every checkpoint records what the run is -- the recipe, the seed and the caller's ``run_info``
(network, data set, task) -- and ``resume=True`` refuses a checkpoint of another run, naming
what changed, before anything is loaded or written. A training whose loss turns NaN/inf stops
after that epoch without a checkpoint of it (:attr:`FinalResult.diverged_epoch`): the log and
the checkpoints keep the epochs before it.

``resume=True`` continues from the newest checkpoint in ``out`` and reproduces the run that was
not interrupted: the data order and augmentation are functions of (seed, epoch, image), the
dropout generator is reseeded from (seed, epoch, rank) every epoch, and the batch-norm
statistics of the EMA are made equal on all processes at each epoch's end. A checkpoint may be
resumed with another number of processes as long as the global batch is the same.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from autoshrink.data.loaders import (
    GlobalBatchSampler,
    TrainingData,
    batches,
    close_workers,
    make_loader,
)
from autoshrink.errors import ConfigError, JournalError
from autoshrink.nn.layout import to_device
from autoshrink.ranges import SEED, check_value, is_integer
from autoshrink.training.checkpoint import (
    CHECKPOINTS,
    Checkpoint,
    DamagedState,
    check_optimizer_state,
    check_weights_fit,
    checkpoint_to_resume,
    clear_earlier_run,
    flatten_optimizer,
    restored_history,
    restoring,
    run_identity,
    save_checkpoint,
    unflatten_optimizer,
    write_log,
)
from autoshrink.training.distributed import DistContext
from autoshrink.training.optim import ModelEMA, WarmupCosine, build_optimizer
from autoshrink.training.recipes import Recipe
from autoshrink.training.train_folder import LOG

logger = logging.getLogger(__name__)


@dataclass
class FinalResult:
    """What a final training ended with: its last epoch's validation scores -- or, when it
    diverged, NaN scores, the epoch whose loss turned NaN/inf and its losses (``history`` then
    holds the epochs before it)."""

    test_accuracy: float
    test_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    evaluated: nn.Module | None = None  # the weights that were scored: the EMA when it is on
    diverged_epoch: int | None = None
    diverged_loss: dict[str, float] = field(default_factory=dict)  # train_loss, test_loss


def cuda_grad_scaler() -> Any:
    """float16's loss scaler on CUDA: ``torch.amp.GradScaler("cuda")`` (torch 2.3+), or the
    older ``torch.cuda.amp.GradScaler`` that torch 2.2 has instead."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def _precision(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None``: plain fp32)."""
    p = recipe.precision
    if p == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if p == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a GPU; the device is {device}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


class _Run:
    """The state of one process's training: model, EMA, optimiser, schedule, loaders."""

    def __init__(
        self,
        model: nn.Module,
        data: TrainingData,
        recipe: Recipe,
        ctx: DistContext,
        seed: int,
        workers: int,
        identity: dict[str, Any],
    ) -> None:
        self.recipe, self.ctx, self.seed = recipe, ctx, seed
        self.identity = identity  # what every checkpoint records of the run
        # channels-last: what GPU convolutions (and their mixed precision kernels) run fastest in
        self.layout = torch.channels_last if ctx.device.type == "cuda" else torch.contiguous_format
        self.model: nn.Module = to_device(model, ctx.device, self.layout)
        self.ema = (
            ModelEMA(self.model, recipe.ema_decay, recipe.ema_warmup)
            if recipe.ema_decay is not None
            else None
        )
        self.net = ctx.wrap(self.model)
        self.opt = build_optimizer(self.model, recipe, recipe.batch_size)
        sampler = partial(GlobalBatchSampler, rank=ctx.rank, world_size=ctx.world_size, seed=seed)
        self.train_sampler = sampler(len(data.train), recipe.batch_size)
        self.val_sampler = sampler(len(data.val), recipe.batch_size, shuffle=False)
        steps = len(self.train_sampler)
        self.sched = WarmupCosine(
            self.opt, recipe.lr(), round(recipe.warmup_epochs * steps), recipe.epochs * steps
        )
        self.dtype = _precision(recipe, ctx.device)
        self.scaler = cuda_grad_scaler() if self.dtype == torch.float16 else None
        pin = ctx.device.type == "cuda"
        self.train_loader = make_loader(
            data.train, self.train_sampler, workers=workers, pin_memory=pin
        )
        self.val_loader = make_loader(data.val, self.val_sampler, workers=workers, pin_memory=pin)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.dtype)

    def train_epoch(self, epoch: int, on_step: Callable[[int, int], None] | None) -> float:
        """One pass over the training side; returns the mean training loss over all processes."""
        self.train_sampler.set_epoch(epoch)
        seeds = np.random.SeedSequence([self.seed, epoch, self.ctx.rank]).generate_state(1)
        torch.manual_seed(int(seeds[0]))  # dropout and any other use of the global generator
        self.net.train()
        dev = self.ctx.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        count = 0
        bar = tqdm(
            batches(self.train_loader),
            total=len(self.train_loader),
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            disable=None if self.ctx.is_main else True,
        )
        for step, (x, y) in enumerate(bar):
            x = x.to(dev, non_blocking=True, memory_format=self.layout)  # [b, C, S, S]
            y = y.to(dev, non_blocking=True)  # [b]
            with self._autocast():
                logits = self.net(x)  # [b, classes]
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update(self.model)
            loss_sum += loss.detach().double() * len(y)
            count += len(y)
            if on_step is not None:
                on_step(epoch, step)
        # every process's batch-norm statistics become rank 0's: DDP broadcasts them before each
        # forward, so each process's last step left its own, and the weights evaluated on every
        # process must be the ones rank 0 saves
        self.ctx.broadcast(self.model.buffers())
        if self.ema is not None:  # and so do the EMA's
            self.ctx.broadcast(self.ema.module.state_dict().values())
        total, n = self.ctx.sum([float(loss_sum), count])
        return total / n

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Mean loss and accuracy on the validation side, with the EMA weights when on."""
        net = self.evaluated
        net.eval()
        dev = self.ctx.device
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in batches(self.val_loader):
            x = x.to(dev, non_blocking=True, memory_format=self.layout)
            y = y.to(dev, non_blocking=True)
            with self._autocast():
                logits = net(x).float()  # [b, classes]
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        total_loss, total_correct, total = self.ctx.sum([loss_sum, correct, n])
        return total_loss / total, total_correct / total

    @property
    def evaluated(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def close(self) -> None:
        """Stop the data loaders' worker processes (:func:`close_workers`)."""
        close_workers(self.train_loader)
        close_workers(self.val_loader)

    def snapshot(self, history: list[dict[str, float]]) -> tuple[dict, dict]:
        """The checkpoint's tensors and JSON state."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_tensors, opt_rest = flatten_optimizer(self.opt.state_dict(), "optim")
        tensors.update(opt_tensors)
        state: dict[str, Any] = {
            **self.identity,
            "world_size": self.ctx.world_size,
            "schedule": self.sched.state_dict(),
            "sampler": self.train_sampler.state_dict(),
            "optimizer": opt_rest,
            "history": history,
        }
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
            state["ema_updates"] = self.ema.updates
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return tensors, state

    def restore(self, ckpt: Checkpoint, where: Path) -> list[dict[str, float]]:
        """Load a checkpoint written by :meth:`snapshot` (found in ``where``); returns its
        history."""

        def part(prefix: str) -> dict[str, torch.Tensor]:
            n = len(prefix)
            return {k[n:]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}

        s = ckpt.state
        # a checkpoint that records no run_info (older autoshrink) may be another network's
        loads = [(self.model, part("model."))]
        if self.ema is not None:
            loads.append((self.ema.module, part("ema.")))
        check_weights_fit(ckpt, where, *loads)
        for module, state in loads:
            module.load_state_dict(state)
        optim = unflatten_optimizer(ckpt.tensors, s["optimizer"], "optim")
        check_optimizer_state(self.opt, optim, "optim", stepped=ckpt.epoch > 0)
        self.opt.load_state_dict(optim)
        self.sched.load_state_dict(s["schedule"])
        if self.sched.steps != ckpt.epoch * len(self.train_sampler):  # a step per batch
            raise DamagedState(
                f"schedule.steps is {self.sched.steps}, where epoch {ckpt.epoch} ends at step "
                f"{ckpt.epoch * len(self.train_sampler)}"
            )
        # the sampler's and the EMA's states follow from the run and its steps: anything else
        # is damage (a count of 1.5 or a negative one, another seed, went on unnoticed)
        sampler = {"seed": self.train_sampler.seed, "epoch": ckpt.epoch}
        if s["sampler"] != sampler:
            raise DamagedState(
                f"sampler must be {json.dumps(sampler)}, got {json.dumps(s['sampler'])}"
            )
        if self.ema is not None:
            updates = s["ema_updates"]
            if not is_integer(updates) or updates != self.sched.steps:  # one per step
                raise DamagedState(
                    f"ema_updates must be {self.sched.steps} (one per step), got "
                    f"{json.dumps(updates)}"
                )
            self.ema.updates = updates
        self.train_sampler.set_epoch(ckpt.epoch)  # the state it saved: checked equal above
        if self.scaler is not None and "scaler" in s:
            self.scaler.load_state_dict(s["scaler"])
        return restored_history(ckpt, ("test_loss", "test_accuracy"))


def check_batch_trains(run: _Run, data: TrainingData) -> None:
    """Refuse a share of one image per process where batch norm meets a 1x1 map (the last
    stages of a small input): it has one value per channel there and cannot normalise it,
    which was torch's traceback at the first step. A forward of one blank image through a
    copy of the model, in training mode, tells; the model and the random generators are left
    as they were."""
    share = run.recipe.batch_size // run.ctx.world_size
    norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in run.model.modules())
    if share > 1 or not norms:
        return
    probe = copy.deepcopy(run.model).train()
    x = torch.zeros(1, data.in_channels, data.image_size, data.image_size, device=run.ctx.device)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            probe(x.contiguous(memory_format=run.layout))
    except ValueError as err:
        if "Expected more than 1 value per channel" not in str(err):
            raise
        per = f" ({run.ctx.world_size} processes, 1 image each)" if run.ctx.world_size > 1 else ""
        raise ConfigError(
            f"batch_size (--batch-size) {run.recipe.batch_size}{per} is too small for this "
            "network: its batch norm over 1x1 maps needs at least 2 images per process"
        ) from None


def open_run_folder(
    folder: Path, history: list[dict[str, float]], earlier: Path | None = None
) -> None:
    """Make a final training's run ``folder`` and write its log of the epochs restored
    (``history``); first remove the checkpoints of an ``earlier`` run (a run that starts at
    epoch 1 passes its checkpoint folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    if earlier is not None:
        clear_earlier_run(earlier)
    write_log(folder / LOG, history)


def train_final(
    model: nn.Module,
    data: TrainingData,
    recipe: Recipe,
    *,
    ctx: DistContext | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    workers: int = 0,
    run_info: dict[str, Any] | None = None,
    on_start: Callable[[], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> FinalResult:
    """Train ``model`` (built identically on every process) on ``data`` with ``recipe``.

    ``out``: the run folder for ``log.jsonl`` and ``checkpoints/`` (rank 0 writes; ``None``
    keeps nothing). ``resume``: continue from the newest checkpoint there -- refused, with a
    :class:`~autoshrink.errors.JournalError` naming what changed, when its recipe, seed or
    ``run_info`` differ from these -- or start fresh, with a warning, when there is none;
    without it, old checkpoints in ``out`` are removed. ``workers``: DataLoader worker
    processes per training process. ``run_info``: what the run is (JSON: network, data set,
    task), recorded in every checkpoint. ``on_start()`` is called on rank 0 once the run is
    set up and a resumed checkpoint restored -- every check passed -- before anything is
    written into ``out``; ``on_epoch(row)`` gets each epoch's summary, ``on_step(epoch,
    step)`` is called after every optimiser step. A loss that turns NaN/inf ends the training
    after its epoch (see :class:`FinalResult`).
    """
    check_value("seed", seed, SEED)  # else numpy's error, 9 calls down
    ctx = ctx or DistContext()
    folder = None if out is None else Path(out)
    ckpt_dir = None if folder is None else folder / CHECKPOINTS
    identity = run_identity(recipe.to_dict(), seed, run_info)
    ckpt = None
    if ckpt_dir is not None:
        ckpt = checkpoint_to_resume(ckpt_dir, resume, identity, warn=ctx.is_main)
    run = _Run(model, data, recipe, ctx, seed, workers, identity)
    with contextlib.closing(run):
        check_batch_trains(run, data)
        history: list[dict[str, float]] = []
        if ckpt is not None and ckpt_dir is not None:
            with restoring(ckpt, ckpt_dir):
                history = run.restore(ckpt, ckpt_dir)
        start = 1 if ckpt is None else ckpt.epoch + 1
        if resume and not ctx.agree(start):
            raise JournalError(
                f"{ckpt_dir}: the processes found different checkpoints; --out must be a folder "
                "that every machine of the run shares"
            )
        if on_start is not None and ctx.is_main:
            on_start()
        if folder is not None and ctx.is_main:
            open_run_folder(folder, history, ckpt_dir if start == 1 else None)
        if recipe.warmup_epochs >= recipe.epochs:
            logger.warning("warm-up (%g epochs) covers the whole run", recipe.warmup_epochs)
        for epoch in range(start, recipe.epochs + 1):
            t0 = time.perf_counter()
            train_loss = run.train_epoch(epoch, on_step)
            seconds = time.perf_counter() - t0
            # a NaN/inf training loss (summed over all processes: they all stop) leaves nothing
            # worth scoring
            val_loss, val_acc = (
                run.evaluate() if math.isfinite(train_loss) else (math.nan, math.nan)
            )
            if not math.isfinite(val_loss):
                logger.warning(
                    "epoch %d: training diverged (train loss %g, test loss %g); stopped",
                    epoch,
                    train_loss,
                    val_loss,
                )
                return FinalResult(
                    math.nan,
                    math.nan,
                    history,
                    start - 1,
                    run.evaluated,
                    diverged_epoch=epoch,
                    diverged_loss={"train_loss": train_loss, "test_loss": val_loss},
                )
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "test_loss": val_loss,
                "test_accuracy": val_acc,
                "lr": run.sched.lr_at(max(0, run.sched.steps - 1)),
                "train_seconds": seconds,
                "train_images_per_s": len(run.train_sampler) * recipe.batch_size / seconds,
            }
            history.append(row)
            if folder is not None and ckpt_dir is not None and ctx.is_main:
                tensors, state = run.snapshot(history)
                save_checkpoint(ckpt_dir, epoch, tensors, state)
                write_log(folder / LOG, [row], append=True)
            ctx.barrier()
            if ctx.is_main:
                logger.info(
                    "epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.4f (%.1fs)",
                    epoch,
                    recipe.epochs,
                    train_loss,
                    val_loss,
                    val_acc,
                    seconds,
                )
            if on_epoch is not None:
                on_epoch(row)
        last = history[-1]
        return FinalResult(
            last["test_accuracy"], last["test_loss"], history, start - 1, run.evaluated
        )
