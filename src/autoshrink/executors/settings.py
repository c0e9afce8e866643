"""How a search runs its candidates: the executor and its options, as saved in ``config.json``.

:class:`ExecutionSettings` is part of a run's :class:`~autoshrink.config.SearchConfig`, so that
``--resume`` rebuilds the executor the run was started with (a CUDA run resumes on the batched
GPU executor, not on the CPU pool). It is not part of the config hash that guards the journal
(:meth:`~autoshrink.config.SearchConfig.fingerprint`): where candidates train does not change
which candidates a search asks for. :func:`autoshrink.executors.factory.build_executor`
checks the values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ExecutionSettings:
    """``executor`` (``None``: the device's default), pool ``workers``, ``ray_address``, and
    the batched engine's ``precision``, ``cuda_graph`` and ``depthwise`` backend."""

    executor: str | None = None
    workers: int | None = None
    ray_address: str | None = None
    precision: str | None = None
    cuda_graph: bool = False
    depthwise: str | None = None
