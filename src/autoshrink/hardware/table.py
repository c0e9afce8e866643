"""Latency lookup tables (HW-NAS-Bench style): measure each distinct block once, predict by sum.

A network is cut into :class:`~autoshrink.hardware.blocks.Block` s (see
:mod:`autoshrink.hardware.blocks`). :func:`extend_table` measures the blocks a table lacks, each
once, *where they run*: it runs a network that contains them block by block on real data
(:func:`profile_network`), timing each block alone, so a block is timed with the caches and
allocator in the state the network leaves them in -- timed alone in a tight loop, blocks ran
~25% faster than inside the network on the 2-core dev box. :meth:`LatencyTable.predict` then
sums the block medians of any network without building or running it. Each timed call also
pays the clock reads and one Python call, which the network pays once: the table measures an
identity (``io``) block on each block's output shape, subtracts it from every block and adds it
back once for the network's output. Tables are measured with the torch backend (CPU or CUDA,
where per-block CUDA events time the kernels): onnxruntime fuses ops across blocks and runs
whole graphs.

Tables are JSON (``autoshrink.latency-table/1``) with the measurement settings and the library
versions and machine they were measured on; a table only answers for the settings it was
measured with (backend, device, batch, threads, clock).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from autoshrink.atomic_write import locked, through_link, write_json
from autoshrink.devices import gpu_index, torch_threads
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.graph import Cell
from autoshrink.hardware.blocks import Block, network_blocks, network_program
from autoshrink.hardware.latency import (
    check_available,
    environment,
    measure_module,
    network_input_shape,
    steady_heap,
    until_stable,
)
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.spaces.macros import MacroSpec
from autoshrink.user_files import json_type_problem, read_json_file

log = logging.getLogger(__name__)

FORMAT = "autoshrink.latency-table/1"
#: The settings a table's numbers depend on (the clock too: a thread's CPU time is not the
#: wall's); the others only steer the repeat rule.
DEFINING = ("backend", "device", "batch", "threads", "clock")


#: The longest time a table's block may take, in ms: an hour, beyond any measurement's.
MAX_BLOCK_MS = 3.6e6


@dataclass(frozen=True, kw_only=True)
class EntrySchema:
    """The JSON types of a table's entry; a schema for :func:`json_type_problem`, never built."""

    median_ms: float
    iqr_ms: float
    block: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class TableSchema:
    """The JSON types of a latency table file (:meth:`LatencyTable.to_dict`); never built."""

    format: str
    settings: dict[str, Any]
    blocks: dict[str, EntrySchema]
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BlockEntry:
    """The measured latency of one block (ms)."""

    block: Block
    median_ms: float
    iqr_ms: float


@dataclass(frozen=True)
class LatencyTable:
    """Measured block latencies for one set of settings; an immutable value."""

    settings: LatencySettings
    entries: Mapping[str, BlockEntry] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def missing(self, blocks: Iterable[Block]) -> list[Block]:
        """The distinct blocks that predicting ``blocks`` needs and the table lacks: the blocks
        and the ``io`` blocks of their outputs, in first-seen order."""
        seen: dict[str, Block] = {}
        for b in blocks:
            for need in (b, b.io()):
                if need.key not in self.entries and need.key not in seen:
                    seen[need.key] = need
        return list(seen.values())

    def predict_blocks(self, blocks: Sequence[Block]) -> float:
        """Predicted ms of running ``blocks`` one after another: the sum of their medians
        less the fixed cost of a call returning each one's output (``io`` blocks), which is
        paid once, for the last block's output."""
        lacking = self.missing(blocks)
        if lacking:
            raise HardwareError(
                f"latency table lacks {len(lacking)} block(s), e.g. {lacking[0].key!r}; "
                "measure them first (extend_table)"
            )
        e = self.entries
        total = sum(e[b.key].median_ms - e[b.io().key].median_ms for b in blocks)
        return total + e[blocks[-1].io().key].median_ms

    def predict(self, cell: Cell, spec: MacroSpec) -> float:
        """Predicted ms of the network ``spec`` built from ``cell``, without running it."""
        return self.predict_blocks(network_blocks(cell, spec))

    def check_settings(self, settings: LatencySettings, source: str = "latency table") -> None:
        """Raise :class:`HardwareError` when ``settings`` measure something else than the table."""

        def same(k: str) -> bool:  # devices by what they name: cuda is cuda:0
            mine, asked = getattr(self.settings, k), getattr(settings, k)
            return gpu_index(mine) == gpu_index(asked) if k == "device" else mine == asked

        differ = [
            f"{k}={getattr(self.settings, k)!r} (asked {getattr(settings, k)!r})"
            for k in DEFINING
            if not same(k)
        ]
        if differ:
            raise HardwareError(f"{source} was measured with {', '.join(differ)}")

    @property
    def machine_key(self) -> str:
        """The :attr:`environment` entry that names the machine a block's time depends on:
        ``gpu`` for a GPU's settings (as :func:`environment` records it), else ``cpu``."""
        return "cpu" if gpu_index(self.settings.device) is None else "gpu"

    def check_machine(self, source: str = "latency table") -> None:
        """Raise :class:`HardwareError` when this machine's processor (or GPU) is not the one
        the table was measured on: blocks measured here would mix two machines in one table."""
        key = self.machine_key
        here, there = environment(self.settings), self.environment.get(key)
        if there is None and self.entries:  # extended anywhere, it would mix machines unseen
            raise HardwareError(
                f"{source} does not record the {key} it was measured on: its new blocks cannot "
                "be told from its others if measured here (start another table)"
            )
        if there is not None and there != here[key]:
            raise HardwareError(
                f"{source} was measured on {there}; this machine has {here[key]}: its new "
                "blocks cannot be measured here (measure them there, or start another table)"
            )

    def with_measured(self, entries: dict[str, BlockEntry]) -> LatencyTable:
        """This table holding ``entries``: its own and blocks measured on this machine (after
        :meth:`check_machine`), which it now records if it did not (an empty table)."""
        return replace(
            self, entries=entries, environment={**environment(self.settings), **self.environment}
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes: ``format``, settings, environment and the blocks by
        key (sorted)."""
        return {
            "format": FORMAT,
            "settings": self.settings.to_dict(),
            "environment": dict(self.environment),
            "blocks": {
                k: {"median_ms": e.median_ms, "iqr_ms": e.iqr_ms, "block": e.block.to_dict()}
                for k, e in sorted(self.entries.items())
            },
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "latency table") -> LatencyTable:
        """The table of a :meth:`to_dict` object; a :class:`HardwareError` naming ``source`` when
        ``d`` is not one or is malformed (a field of the wrong JSON type, by its dotted key; an
        entry whose key is not its block's; a time that is negative, not finite or beyond
        :data:`MAX_BLOCK_MS`)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise HardwareError(f"{source}: not a latency table ('format' must be {FORMAT!r})")
        problem = json_type_problem(TableSchema, d)
        if problem is not None:
            raise HardwareError(f"{source}: malformed latency table ({problem})")
        try:
            entries = {}
            for key, e in d["blocks"].items():
                block = Block.from_dict(e["block"])
                if block.key != key:
                    raise ValueError(f"entry {key!r} describes block {block.key!r}")
                median, iqr = float(e["median_ms"]), float(e["iqr_ms"])
                if not (0 <= median <= MAX_BLOCK_MS and 0 <= iqr <= MAX_BLOCK_MS):
                    raise ValueError(
                        f"entry {key!r}: median_ms {median:g} and iqr_ms {iqr:g} must be in "
                        f"0..{MAX_BLOCK_MS:g} (an hour)"
                    )
                entries[key] = BlockEntry(block, median, iqr)
            unknown = sorted(set(d["settings"]) - {f.name for f in fields(LatencySettings)})
            if unknown:  # LatencySettings(**...) said so in Python's words
                raise ValueError(f"unknown setting(s) {unknown} in 'settings'")
            return cls(
                settings=LatencySettings(**d["settings"]),
                entries=entries,
                environment=dict(d.get("environment", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # ConfigError too
            raise HardwareError(f"{source}: malformed latency table ({err})") from None

    def merged(self, other: LatencyTable, source: str = "latency table") -> LatencyTable:
        """This table with ``other``'s entries added; where both have a block, ``other``'s. A
        :class:`HardwareError` naming ``source`` (``other``'s file) when both hold blocks and
        record different machines (or one records none): a table never mixes machines."""
        mine, theirs = (t.environment.get(t.machine_key) for t in (self, other))
        if self.entries and other.entries and mine != theirs:
            raise HardwareError(
                f"{source} holds blocks measured on {theirs or 'an unrecorded machine'}, this "
                f"table's were measured on {mine or 'an unrecorded machine'}: one table cannot "
                "hold both (save into another table file)"
            )
        return replace(self, entries={**self.entries, **other.entries})

    def save(self, path: str | Path) -> None:
        """Write the table as JSON, creating its folder if needed; in one step (a temporary
        file renamed over it), so readers never see half a table."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict(), indent=1)

    def save_shared(self, path: str | Path) -> LatencyTable:
        """Save into ``path``, a table other processes may be extending meanwhile (a search's
        workers, ``autoshrink latency``): under its lock, the entries the file holds by then
        are merged in -- theirs win where both measured a block -- and the whole is saved
        (refused when the file's blocks were measured on another machine, :meth:`merged`).
        Returns that table. A symlink is followed: the file it names is extended (and locked,
        as its other users lock it), not replaced by a file in the link's place."""
        path = through_link(path)  # a loop of links stays as it is, no error
        path.parent.mkdir(parents=True, exist_ok=True)  # the lock file lives beside it
        with locked(path):
            saved = LatencyTable.load_checked(path, self.settings)
            table = self if saved is None else self.merged(saved, str(path))
            table.save(path)
        return table

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """The table in the JSON file ``path``; a damaged file is a one-line
        :class:`HardwareError` naming it."""
        path = Path(path)
        return cls.from_dict(read_json_file(path, HardwareError, "latency table"), str(path))

    @classmethod
    def load_checked(cls, path: str | Path, settings: LatencySettings) -> LatencyTable | None:
        """The table in ``path`` (``None`` when there is no file yet), refused with a
        :class:`HardwareError` naming ``path`` when it was measured under other ``settings``
        (:meth:`check_settings`): what a table about to be predicted from or extended must be."""
        if not Path(path).is_file():
            return None
        table = cls.load(path)
        table.check_settings(settings, str(path))
        return table


def measure_block(block: Block, settings: LatencySettings) -> BlockEntry:
    """Measure one block alone with ``settings`` (used for the ``io`` blocks)."""
    r = measure_module(
        block.module(), block.input_shapes(settings.batch), settings, with_environment=False
    )
    return BlockEntry(block, r.median_ms, r.iqr_ms)


def check_table_settings(settings: LatencySettings) -> None:
    """Raise :class:`HardwareError` unless tables can be measured with ``settings``."""
    check_available(settings)
    if settings.backend != "torch":
        raise HardwareError(
            f"latency tables need backend torch, got {settings.backend}: onnxruntime fuses "
            "ops across blocks and runs a graph, not blocks, so its block times do not add up"
        )


def profile_network(cell: Cell, spec: MacroSpec, settings: LatencySettings) -> list[BlockEntry]:
    """Time every block of the network where it runs: the steps are run in order on real data,
    each timed alone, for repeated forward passes (the rule of
    :func:`~autoshrink.hardware.latency.until_stable`, on the pass total). A block that occurs
    several times pools its samples. Returns one entry per distinct block."""
    check_table_settings(settings)
    if settings.steady_heap:
        steady_heap()
    program = network_program(cell, spec)
    dev = torch.device(settings.device)
    fns = [step.block.module().to(dev).eval() for step in program]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(network_input_shape(spec, settings.batch), generator=gen).to(dev)
    gpu = gpu_index(settings.device)  # events and synchronize on that GPU (cuda:N)
    cuda_events = gpu is not None
    events = [(_event(), _event()) for _ in program] if cuda_events else []
    tick = settings.nanoseconds()
    samples: list[list[float]] = [[] for _ in program]

    def one_pass() -> float:
        env = {"x": x}
        times = []
        for j, (step, fn) in enumerate(zip(program, fns, strict=True)):
            args = [env[name] for name in step.inputs]
            if cuda_events:
                events[j][0].record()
                env[step.output] = fn(*args)
                events[j][1].record()
            else:
                t0 = tick()
                env[step.output] = fn(*args)
                times.append((tick() - t0) / 1e6)
        if cuda_events:
            torch.cuda.synchronize()
            times = [float(a.elapsed_time(b)) for a, b in events]
        for j, t in enumerate(times):
            samples[j].append(t)
        return sum(times)

    on_gpu = torch.cuda.device(gpu) if gpu is not None else contextlib.nullcontext()
    with torch_threads(settings.threads), torch.inference_mode(), on_gpu:
        until_stable(one_pass, settings)
    pooled: dict[str, tuple[Block, list[float]]] = {}
    for step, times in zip(program, samples, strict=True):
        pooled.setdefault(step.block.key, (step.block, []))[1].extend(times[settings.warmup :])
    out = []
    for block, times in pooled.values():
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        out.append(BlockEntry(block, float(median), float(q3 - q1)))
    return out


def _event() -> Any:
    return torch.cuda.Event(enable_timing=True)


def extend_table(
    table: LatencyTable | None,
    cells: Iterable[Cell],
    spec: MacroSpec,
    settings: LatencySettings | None = None,
    *,
    progress: bool = False,
    source: str = "latency table",
) -> LatencyTable:
    """A table that also holds every block of the networks ``spec`` of ``cells``.

    The network of a cell with blocks the table lacks is profiled (:func:`profile_network`)
    and its new blocks are added; blocks already in the table keep their first measurement.
    The ``io`` blocks are measured alone. With ``table=None`` a new table is started with
    ``settings``; otherwise the table's own settings are used, and ``settings``, when given,
    must agree with them. A table measured on another machine may predict anywhere, but
    blocks are added to it only on that machine (:meth:`LatencyTable.check_machine`).
    """
    if table is None:
        if settings is None:
            raise ConfigError("a new latency table needs measurement settings")
        check_table_settings(settings)
        table = LatencyTable(settings, {}, environment(settings))
    elif settings is not None:
        table.check_settings(settings)
    entries = dict(table.entries)
    for cell in tqdm(list(cells), desc="latency profile", unit="cell", disable=not progress):
        blocks = network_blocks(cell, spec)
        if any(b.key not in entries for b in blocks):
            table.check_machine(source)
            for entry in profile_network(cell, spec, table.settings):
                entries.setdefault(entry.block.key, entry)
        for io in {b.io().key: b.io() for b in blocks}.values():
            if io.key not in entries:
                table.check_machine(source)
                entries[io.key] = measure_block(io, table.settings)
    if len(entries) == len(table.entries):
        return table
    return table.with_measured(entries)
