"""PyTorch's own distributed training, as one small context: one process per GPU (or per CPU
worker), started by ``torchrun``.

:func:`distributed` reads what ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``), joins the process group -- NCCL when the processes drive GPUs,
gloo on the CPU -- picks this process's device (``cuda:LOCAL_RANK``) and leaves the group on
exit. Without ``torchrun`` it is a one-process context and nothing is initialised. A
:class:`DistContext` offers the few collective operations a training loop needs (sum of
floats, broadcast of tensors from rank 0, barrier) and :meth:`DistContext.wrap` puts a model in
DistributedDataParallel. Only the main process (rank 0) writes logs and checkpoints.
:func:`end_process` ends a process of such a run once its work is done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from autoshrink.devices import resolve_device
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.processes import exit_now

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether there are several processes (the collectives then communicate)."""
        return self.world_size > 1

    def sum(self, values: Iterable[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        t = torch.tensor(list(values), dtype=torch.float64)
        if self.is_distributed:
            t = t.to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values."""
        if self.is_distributed:
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def agree(self, value: int) -> bool:
        """Whether every process holds the same ``value`` (all of them learn the answer)."""
        if not self.is_distributed:
            return True
        t = torch.tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t[0]) == -int(t[1])

    def barrier(self) -> None:
        """Wait until every process gets here (a no-op for one process)."""
        if self.is_distributed:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel when there are several processes."""
        if not self.is_distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def launched_as() -> tuple[int, int]:
    """``(rank, world size)`` of this process as ``torchrun`` set them (``(0, 1)`` without it),
    before :func:`distributed` joins the process group."""
    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)


@contextmanager
def distributed(device: str = "auto", timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """The process context under ``torchrun`` (or a single process without it).

    ``device``: ``auto`` (this process's GPU when there is one, else the CPU), ``cpu``,
    ``cuda`` (this process's GPU) or an explicit ``cuda:N``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    try:
        dev = resolve_device(device, local_rank=local_rank)
    except ConfigError as err:  # this process's own (its local rank's GPU): said by it
        if world == 1:
            raise
        raise HardwareError(f"process {rank} (local rank {local_rank}): {err}") from None
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        started = True
        logger.debug("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    try:
        yield DistContext(rank, world, local_rank, dev)
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def end_process(status: int) -> NoReturn:
    """End this process now with exit ``status``, skipping the interpreter's teardown: how a
    process of a multi-process run (torchrun) ends once its work is done, as multiprocessing
    ends its children. Logging and the standard streams are flushed first; ``atexit``
    handlers do not run.

    gloo's worker threads outlive :func:`distributed`: DistributedDataParallel keeps
    references to the process group, so ``destroy_process_group`` cannot join them. One may
    still be releasing the last collective's tensors when the interpreter shuts down, and
    releasing a tensor Python made then needs the GIL: the process aborts (SIGABRT,
    ``terminate called without an active exception``) after its work succeeded.
    """
    exit_now(status)
