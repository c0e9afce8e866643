"""Latency lookup tables (HW-NAS-Bench style): measure each distinct block once, predict by sum.

A macro network built from a cell is cut into :class:`Block` s, the units its forward pass runs
one after another: the stem (3x3 conv + BN + act), per cell the down-sampling 2x2 max-pool, the
concatenation feeding each node with several inputs, each node's op, the concatenation of the
leaves, the residual projection (1x1 conv + BN) and the residual add, then the head (1x1 conv
+ BN + act) and the classifier (global average pool + linear). A block is keyed by everything
that sets its cost -- kind, op, activation, whether it is a linear leaf, input channels (each
part of a concat), output channels, input size and stride -- and built from the very op
factories of :mod:`autoshrink.nn`, so the table measures what the network runs.

:func:`extend_table` measures the blocks a table lacks, each once, *where they run*: it runs a
network that contains them block by block on real data (:func:`profile_network`), timing each
block alone, so a block is timed with the caches and allocator in the state the network leaves
them in -- timed alone in a tight loop, blocks ran ~25% faster than inside the network on the
2-core dev box. :meth:`LatencyTable.predict` then sums the block medians of any network
without building or running it. Each timed call also pays the clock reads and one Python
call, which the network pays once: the table measures an identity (``io``) block on each
block's output shape, subtracts it from every block and adds it back once for the network's
output. Tables are measured with the torch backend (CPU or CUDA, where per-block CUDA events
time the kernels): onnxruntime fuses ops across blocks and runs whole graphs.

Tables are JSON (``autoshrink.latency-table/1``) with the measurement settings and the library
versions and machine they were measured on; a table only answers for the settings it was
measured with (backend, device, batch, threads).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from autoshrink.cost import CellPlacement, halve, node_channels, plan
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.graph import Cell
from autoshrink.latency import (
    LatencySettings,
    check_available,
    device_index,
    environment,
    measure_module,
    network_input_shape,
    steady_heap,
    torch_threads,
    until_stable,
)
from autoshrink.macros import MacroSpec
from autoshrink.nn.ops import activation, build_op, conv_bn

log = logging.getLogger(__name__)

FORMAT = "autoshrink.latency-table/1"
KINDS = ("stem", "pool", "concat", "op", "proj", "add", "head", "classifier", "io")
#: The settings a table's numbers depend on; the others only steer the repeat rule.
DEFINING = ("backend", "device", "batch", "threads")


class _Cat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, 1)


class _Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _Classifier(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes]
        return self.fc(x.mean(dim=(2, 3)))


@dataclass(frozen=True)
class Block:
    """One unit of a network's forward pass, with everything its latency depends on.

    Attributes:
        kind: one of :data:`KINDS`.
        inputs: channels of each input tensor (a concat has several, an add two).
        size: spatial size of the input tensors (square); 0 for a flat ``[B, C]`` tensor.
        out: output channels (conv-like blocks), classes (classifier), else 0.
        op, act, linear: the cell op, the activation, and whether the op is a leaf without
            its final activation (``op`` blocks; ``act`` also for stem and head).
        stride: the stride of the stem or of the residual projection.
    """

    kind: str
    inputs: tuple[int, ...]
    size: int
    out: int = 0
    op: str = ""
    act: str = ""
    linear: bool = False
    stride: int = 1

    @property
    def key(self) -> str:
        """A readable canonical key, e.g. ``op sep3x3 relu linear in=48 out=16 hw=16``."""
        parts = [self.kind, self.op, self.act, "linear" if self.linear else ""]
        parts += ["in=" + "+".join(map(str, self.inputs)), f"out={self.out}" if self.out else ""]
        parts += [f"hw={self.size}", f"s={self.stride}" if self.stride != 1 else ""]
        return " ".join(p for p in parts if p)

    def module(self) -> nn.Module:
        """The torch module of this block, built with the network's own factories."""
        c = self.inputs[0]
        if self.kind == "stem" or self.kind == "head":
            k = 3 if self.kind == "stem" else 1
            return nn.Sequential(*conv_bn(c, self.out, k, stride=self.stride), activation(self.act))
        if self.kind == "pool":
            return nn.MaxPool2d(2, stride=2, ceil_mode=True)
        if self.kind == "concat":
            return _Cat()
        if self.kind == "op":
            return build_op(self.op, c, self.out, self.act, self.linear)
        if self.kind == "proj":
            return nn.Sequential(*conv_bn(c, self.out, 1, stride=self.stride))
        if self.kind == "add":
            return _Add()
        if self.kind == "classifier":
            return _Classifier(c, self.out)
        if self.kind == "io":
            return nn.Identity()
        raise ConfigError(f"unknown block kind {self.kind!r}; expected one of {KINDS}")

    def input_shapes(self, batch: int) -> list[tuple[int, ...]]:
        if self.size == 0:
            return [(batch, c) for c in self.inputs]
        return [(batch, c, self.size, self.size) for c in self.inputs]

    def output(self) -> tuple[int, int]:
        """``(channels, size)`` of the output (size 0: a flat ``[B, classes]`` tensor)."""
        if self.kind == "classifier":
            return self.out, 0
        size = halve(self.size) if self.kind == "pool" or self.stride == 2 else self.size
        if self.kind in ("pool", "add", "io"):
            return self.inputs[0], size
        if self.kind == "concat":
            return sum(self.inputs), size
        return self.out, size

    def io(self) -> Block:
        """The identity block on this block's output: what one call costs beyond its work."""
        channels, size = self.output()
        return Block("io", (channels,), size)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Block:
        return cls(**{**d, "inputs": tuple(int(c) for c in d["inputs"])})


@dataclass(frozen=True)
class Step:
    """One block of a network's forward pass and its data flow: the names of the tensors it
    reads and of the tensor it writes (``"x"`` is the network input)."""

    block: Block
    inputs: tuple[str, ...]
    output: str


def cell_program(cell: Cell, where: CellPlacement, i: int, x: str) -> list[Step]:
    """The steps of cell number ``i`` reading tensor ``x``, in execution order; its output is
    the tensor ``c{i}``."""
    act = cell.activation or "relu"
    ch = node_channels(cell, where.in_channels, where.nodes)
    size, leaves = where.out_size, set(cell.leaves)
    steps: list[Step] = []
    names = {0: x}
    if where.downsample:
        names[0] = f"c{i}n0"
        steps.append(Step(Block("pool", (where.in_channels,), where.in_size), (x,), names[0]))
    for k in cell.live_nodes[1:]:
        preds = cell.predecessors(k)
        parts, src = tuple(ch[p] for p in preds), tuple(names[p] for p in preds)
        if len(parts) > 1:
            steps.append(Step(Block("concat", parts, size), src, f"c{i}in{k}"))
            src = (f"c{i}in{k}",)
        op = Block("op", (sum(parts),), size, where.nodes, cell.ops[k], act, linear=k in leaves)
        names[k] = f"c{i}n{k}"
        steps.append(Step(op, src, names[k]))
    y = names[cell.leaves[0]]
    if len(cell.leaves) > 1:
        y = f"c{i}y"
        parts = tuple(ch[k] for k in cell.leaves)
        steps.append(Step(Block("concat", parts, size), tuple(names[k] for k in cell.leaves), y))
    shortcut = x
    if where.needs_projection:
        shortcut = f"c{i}s"
        stride = 2 if where.downsample else 1
        proj = Block("proj", (where.in_channels,), where.in_size, where.out_channels, stride=stride)
        steps.append(Step(proj, (x,), shortcut))
    add = Block("add", (where.out_channels, where.out_channels), size)
    return [*steps, Step(add, (y, shortcut), f"c{i}")]


def network_program(cell: Cell, spec: MacroSpec) -> list[Step]:
    """Every step of the network ``spec`` built from ``cell``, in execution order."""
    act = cell.activation or "relu"
    placements = plan(cell, spec)
    stem = Block(
        "stem",
        (spec.in_channels,),
        spec.image_size,
        spec.stem_channels,
        act=act,
        stride=spec.stem_stride,
    )
    steps, x = [Step(stem, ("x",), "stem")], "stem"
    for i, where in enumerate(placements):
        steps += cell_program(cell, where, i, x)
        x = f"c{i}"
    last = placements[-1]
    features = last.out_channels
    if spec.head_channels is not None:
        head = Block("head", (features,), last.out_size, spec.head_channels, act=act)
        steps.append(Step(head, (x,), "head"))
        features, x = spec.head_channels, "head"
    classifier = Block("classifier", (features,), last.out_size, spec.num_classes)
    return [*steps, Step(classifier, (x,), "logits")]


def network_blocks(cell: Cell, spec: MacroSpec) -> list[Block]:
    """The blocks of the network ``spec`` built from ``cell``, in execution order (repeated
    blocks repeat)."""
    return [step.block for step in network_program(cell, spec)]


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
        differ = [
            f"{k}={getattr(self.settings, k)!r} (asked {getattr(settings, k)!r})"
            for k in DEFINING
            if getattr(self.settings, k) != getattr(settings, k)
        ]
        if differ:
            raise HardwareError(f"{source} was measured with {', '.join(differ)}")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
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
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise HardwareError(f"{source}: not a latency table ('format' must be {FORMAT!r})")
        try:
            entries = {}
            for key, e in d["blocks"].items():
                block = Block.from_dict(e["block"])
                if block.key != key:
                    raise ValueError(f"entry {key!r} describes block {block.key!r}")
                entries[key] = BlockEntry(block, float(e["median_ms"]), float(e["iqr_ms"]))
            return cls(
                settings=LatencySettings(**d["settings"]),
                entries=entries,
                environment=dict(d.get("environment", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise HardwareError(f"{source}: malformed latency table ({err})") from None

    def merged(self, other: LatencyTable) -> LatencyTable:
        """This table with ``other``'s entries added; where both have a block, ``other``'s."""
        return replace(self, entries={**self.entries, **other.entries})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def save_atomic(self, path: str | Path) -> None:
        """Save through a temporary file and a rename, so readers never see half a table."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.save(tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise HardwareError(f"{path}: no such latency table") from None
        except (OSError, UnicodeDecodeError) as err:
            raise HardwareError(f"{path}: cannot read latency table ({err})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HardwareError(f"{path}: not valid JSON ({err.msg})") from None
        return cls.from_dict(data, str(path))


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
    :func:`~autoshrink.latency.until_stable`, on the pass total). A block that occurs several
    times pools its samples. Returns one entry per distinct block."""
    check_table_settings(settings)
    if settings.steady_heap:
        steady_heap()
    program = network_program(cell, spec)
    dev = torch.device(settings.device)
    fns = [step.block.module().to(dev).eval() for step in program]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(network_input_shape(spec, settings.batch), generator=gen).to(dev)
    cuda_events = device_index(settings.device) is not None
    events = [(_event(), _event()) for _ in program] if cuda_events else []
    tick = time.thread_time_ns if settings.clock == "cpu" else time.perf_counter_ns
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

    with torch_threads(settings.threads), torch.inference_mode():
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
) -> LatencyTable:
    """A table that also holds every block of the networks ``spec`` of ``cells``.

    The network of a cell with blocks the table lacks is profiled (:func:`profile_network`)
    and its new blocks are added; blocks already in the table keep their first measurement.
    The ``io`` blocks are measured alone. With ``table=None`` a new table is started with
    ``settings``; otherwise the table's own settings are used, and ``settings``, when given,
    must agree with them.
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
            for entry in profile_network(cell, spec, table.settings):
                entries.setdefault(entry.block.key, entry)
        for io in {b.io().key: b.io() for b in blocks}.values():
            if io.key not in entries:
                entries[io.key] = measure_block(io, table.settings)
    if len(entries) == len(table.entries):
        return table
    return replace(table, entries=entries)
