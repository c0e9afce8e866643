"""Choose an executor by name: ``inprocess``, ``pool`` (single-thread workers) or ``ray``.

The default is the local pool on the CPU -- on a 2-core box two single-thread workers train
candidates faster than one two-thread process (``benchmarks/bench_executors.py``; figures in
benchmarks/README.md) -- and ``batched`` on a GPU: the K candidates of a step trained together
(the stacked CNN engine for ``--task cnn``, stacked RNN language models for ``--task rnn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from autoshrink.config import ExecutionSettings
from autoshrink.devices import is_cuda, resolve_device
from autoshrink.errors import ConfigError
from autoshrink.executors.base import (
    TIMEOUT_EXECUTORS,
    Executor,
    InProcessExecutor,
    check_timeout,
)
from autoshrink.executors.pool import LocalPoolExecutor
from autoshrink.executors.retries import DEFAULT_RETRIES
from autoshrink.nn.stacked_ops import check_depthwise, require_triton

EXECUTORS = ("inprocess", "pool", "ray", "batched")
#: ``--precision`` of the batched engine -> its options (``auto``: TF32 matmuls on CUDA).
PRECISIONS: Mapping[str, Mapping[str, bool]] = MappingProxyType(
    {
        "auto": MappingProxyType({"bf16": False, "tf32": True}),
        "fp32": MappingProxyType({"bf16": False, "tf32": False}),
        "bf16": MappingProxyType({"bf16": True, "tf32": True}),
    }
)
CPU_DEFAULT = "pool"  # measured: see the module docstring
GPU_DEFAULT = "batched"  # K candidates trained together, CNN or RNN (executors/batched.py)


def default_executor(device: str) -> str:
    """The executor used when none is named: :data:`CPU_DEFAULT` on the CPU, else
    :data:`GPU_DEFAULT`."""
    return GPU_DEFAULT if is_cuda(device) else CPU_DEFAULT


def build_executor(
    name: str | None,
    workers: int | None = None,
    *,
    device: str = "cpu",
    ray_address: str | None = None,
    max_retries: int = DEFAULT_RETRIES,
    precision: str | None = None,
    cuda_graph: bool | None = None,
    depthwise: str | None = None,
    threads: int | None = None,
    candidate_timeout: float | None = None,
) -> Executor:
    """The executor ``name``; ``None`` picks the default for ``device``.

    ``ray_address`` (a running Ray cluster) implies ``ray`` when no name is given.
    ``max_retries`` bounds how often the pool and Ray rerun a candidate whose worker died, and
    how often the in-process and batched executors rerun one that ran out of memory.
    ``precision`` (a key of :data:`PRECISIONS`), ``cuda_graph`` (``None``: each engine's
    default) and ``depthwise`` (a backend
    of :func:`autoshrink.nn.stacked_ops.depthwise3x3`) configure the batched engine and need
    the ``batched`` executor. ``threads``: the torch threads of each candidate (the config's
    ``threads``), which a Ray task asks for as its CPUs (``None``: 1). ``candidate_timeout``:
    the seconds a candidate may train before the pool or Ray kills its worker and records it
    ``"failed"`` (``None``: no limit); the in-process and batched executors cannot stop a
    candidate, and refuse one.
    """
    name = executor_name(ExecutionSettings(executor=name, ray_address=ray_address), device)
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; expected one of {EXECUTORS}")
    check_engine_options(name, device, precision, cuda_graph, depthwise)
    check_placement(name, workers, device, ray_address)
    check_timeout_for(name, candidate_timeout)
    if name == "inprocess":
        return InProcessExecutor(max_retries)
    if name == "pool":
        return LocalPoolExecutor(
            workers, max_retries=max_retries, candidate_timeout=candidate_timeout
        )
    if name == "batched":
        from autoshrink.executors.batched import BatchedExecutor

        return BatchedExecutor(
            max_retries,
            **PRECISIONS[precision or "auto"],
            cuda_graph=cuda_graph,
            depthwise=depthwise or "auto",
        )
    return ray_executor(ray_address, max_retries, threads or 1, candidate_timeout)


def check_timeout_for(name: str, candidate_timeout: float | None) -> None:
    """Refuse a bad time limit, and one for an executor that cannot stop a candidate: the
    in-process and batched executors train in this process, which they cannot interrupt
    safely (a limit they ignored would let a hang block the search all the same)."""
    if check_timeout(candidate_timeout) is not None and name not in TIMEOUT_EXECUTORS:
        raise ConfigError(
            "candidate_timeout (--candidate-timeout) needs executor 'pool' or 'ray' (--executor), "
            f"which kill a candidate's worker; {name!r} trains in this process and cannot stop "
            "a candidate"
        )


def check_engine_options(
    name: str,
    device: str,
    precision: str | None,
    cuda_graph: bool | None,
    depthwise: str | None,
) -> None:
    """Refuse the batched engine's options (:func:`build_executor`'s) that are unknown, given
    to another executor, or that need CUDA on another device."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {tuple(PRECISIONS)}")
    if depthwise is not None:
        check_depthwise(depthwise)
    if (precision is not None or cuda_graph or depthwise is not None) and name != "batched":
        raise ConfigError(
            "precision, cuda_graph and depthwise (--precision, --cuda-graph, --depthwise) set the "
            f"batched engine; the executor is {name!r}, not 'batched' (--executor batched, the "
            "default with device 'cuda')"
        )
    if cuda_graph and not is_cuda(device):
        raise ConfigError(
            f"cuda_graph (--cuda-graph) needs device 'cuda' (--device cuda), not {device!r}"
        )
    if depthwise not in (None, "auto") and not is_cuda(device):  # the CPU has one kernel
        raise ConfigError(
            f"depthwise (--depthwise) {depthwise!r} chooses CUDA kernels; device (--device) is "
            f"{device!r}"
        )
    if depthwise == "triton":
        require_triton("--depthwise triton")


def check_placement(name: str, workers: int | None, device: str, ray_address: str | None) -> None:
    """Refuse where executor ``name`` cannot train: a device this machine lacks (but for Ray,
    which places tasks on the cluster's GPUs, one whole GPU each), a number of workers below 1
    or for an executor that chooses its own (in-process, batched, Ray), a Ray address for
    another executor."""
    if name != "ray":
        resolve_device(device)
    if workers is not None and workers < 1:
        raise ConfigError(f"workers (--workers) must be >= 1, got {workers}")
    if ray_address is not None and name != "ray":
        raise ConfigError(
            f"ray_address (--ray-address) needs executor 'ray' (--executor ray), not {name!r}"
        )
    pool_only = "workers (--workers) is for executor 'pool' (--executor pool)"
    if workers is not None and name in ("inprocess", "batched"):
        raise ConfigError(f"{pool_only}; {name!r} trains in this process")
    if workers is not None and name == "ray":
        raise ConfigError(
            f"{pool_only}; Ray runs as many candidates at once as the cluster has free CPUs (or "
            "GPUs)"
        )
    if name == "ray" and device.startswith("cuda:"):
        raise ConfigError(
            f"device (--device) {device!r}: with executor 'ray' use 'cuda'; Ray gives each "
            "candidate its own GPU"
        )


def ray_executor(
    ray_address: str | None,
    max_retries: int,
    cpus_per_task: int,
    candidate_timeout: float | None = None,
) -> Executor:
    """The Ray executor (Ray itself is imported here, and is said to be missing in one line);
    Ray chooses how many candidates run at once and which GPU each gets."""
    from autoshrink.executors.ray_executor import RayExecutor, require_ray

    require_ray()
    return RayExecutor(
        ray_address,
        max_retries=max_retries,
        cpus_per_task=cpus_per_task,
        candidate_timeout=candidate_timeout,
    )


#: Executors whose workers train each candidate on one torch thread unless the config sets
#: ``threads`` (the pool's workers, Ray's one-CPU tasks).
ONE_THREAD_EXECUTORS = ("pool", "ray")


def executor_name(settings: ExecutionSettings, device: str) -> str:
    """The name of the executor ``settings`` describe on ``device`` (the default resolved)."""
    if settings.executor is not None:
        return settings.executor
    return "ray" if settings.ray_address is not None else default_executor(device)


def executor_for(settings: ExecutionSettings, device: str, threads: int | None = None) -> Executor:
    """The executor a config's ``execution`` settings describe on ``device``, its candidates on
    ``threads`` torch threads each (the config's) -- what ``autoshrink search`` trains a
    run's candidates with. Pass it to
    :func:`~autoshrink.search.run_search` to get the command line's results from Python (its
    default, in this process with torch's own thread count, gives other numbers on the CPU)."""
    return build_executor(
        settings.executor,
        settings.workers,
        device=device,
        ray_address=settings.ray_address,
        precision=settings.precision,
        cuda_graph=settings.cuda_graph,
        depthwise=settings.depthwise,
        threads=threads,
        candidate_timeout=settings.candidate_timeout,
    )
