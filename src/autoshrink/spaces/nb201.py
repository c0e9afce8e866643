"""The NAS-Bench-201 / NATS-Bench search spaces: topology cells and size (channel) settings.

Topology space (NATS-Bench "tss", 15,625 cells): a cell has 4 nodes; node 0 is the cell input,
node 3 the output, and each of the 6 edges ``i -> j`` (``i < j``) carries one op from
:data:`OPS`. A node sums its incoming edges. The official arch string lists, for nodes 1..3,
the op on each incoming edge: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -- so the edge order is
:data:`EDGES`. Every one of the 5**6 op assignments is a cell of the space (also those whose
output is cut off from the input: they are trained and recorded too), and cells are *not*
merged by isomorphism, as in the official index.

A cell's ``code`` is the base-5 number of its op indices (edge 0 most significant); the
official *index* is an arbitrary order fixed by the benchmark files, so :class:`ArchIndex`
carries it, built from the 15,625 arch strings of a table or of the official ``meta`` file.

Size space (NATS-Bench "sss", 32,768 settings): the channels of the 5 layers of a fixed-cell
network, each from :data:`SIZE_CHANNELS`, written ``"8:16:32:48:64"``; the official index is
the base-8 number of the channel choices (first layer most significant).
No torch in this module.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoshrink.errors import CellError, ConfigError

#: The ops of the topology space, in the official order (``none`` first).
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
OP_INDEX: Mapping[str, int] = {op: k for k, op in enumerate(OPS)}
#: The 6 edges ``(i, j)`` in arch-string order: node 1 <- 0; node 2 <- 0, 1; node 3 <- 0, 1, 2.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
NUM_EDGES = len(EDGES)
NUM_CELLS = len(OPS) ** NUM_EDGES  # 15,625
_POW = tuple(len(OPS) ** (NUM_EDGES - 1 - e) for e in range(NUM_EDGES))

#: Channel choices of each layer of the size space, and its number of layers.
SIZE_CHANNELS: tuple[int, ...] = (8, 16, 24, 32, 40, 48, 56, 64)
SIZE_LAYERS = 5
NUM_SIZES = len(SIZE_CHANNELS) ** SIZE_LAYERS  # 32,768
#: The fixed cell of every size-space network (the official ``genotype`` of its records).
SIZE_SPACE_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)

#: The benchmark's data sets: official name -> (classes, input size in pixels).
DATASETS: Mapping[str, tuple[int, int]] = {
    "cifar10": (10, 32),
    "cifar100": (100, 32),
    "ImageNet16-120": (120, 16),
}
_DATASET_ALIASES = {"imagenet16-120": "ImageNet16-120", "imagenet": "ImageNet16-120"}


def dataset_name(name: str) -> str:
    """The official name of a data set (case-insensitive; ``imagenet`` = ImageNet16-120)."""
    low = str(name).lower()
    for official in DATASETS:
        if low == official.lower():
            return official
    if low in _DATASET_ALIASES:
        return _DATASET_ALIASES[low]
    raise ConfigError(f"unknown NAS-Bench-201 data set {name!r}; expected one of {list(DATASETS)}")


@dataclass(frozen=True, slots=True)
class NB201Cell:
    """A NAS-Bench-201 cell: one op name per edge of :data:`EDGES` (an immutable value).

    ``key`` is the official arch string, ``num_edges`` the number of edges whose op is not
    ``none`` (so :func:`autoshrink.strategies.base.better` breaks ties to smaller cells),
    ``code`` the base-5 number of the op indices (0 .. 15,624).
    """

    ops: tuple[str, ...]
    code: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != NUM_EDGES:
            raise CellError(f"a NAS-Bench-201 cell needs {NUM_EDGES} edge ops, got {len(ops)}")
        code = 0
        for e, op in enumerate(ops):
            k = OP_INDEX.get(op)
            if k is None:
                raise CellError(
                    f"unknown NAS-Bench-201 op {op!r} on edge {EDGES[e][0]}->{EDGES[e][1]}; "
                    f"expected one of {list(OPS)}"
                )
            code += k * _POW[e]
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "code", code)

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_code(cls, code: int) -> NB201Cell:
        """The cell whose op indices are the base-5 digits of ``code``."""
        if not 0 <= int(code) < NUM_CELLS:
            raise CellError(f"cell code must be in 0..{NUM_CELLS - 1}, got {code}")
        code = int(code)
        return cls(tuple(OPS[(code // p) % len(OPS)] for p in _POW))

    @classmethod
    def from_string(cls, text: str) -> NB201Cell:
        """Parse an official arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        if not isinstance(text, str):
            raise CellError(f"an arch string must be a str, got {type(text).__name__}")
        parts = text.strip().split("+")
        if len(parts) != NUM_NODES - 1:
            raise CellError(
                f"arch string {text!r} has {len(parts)} node groups; expected {NUM_NODES - 1} "
                "joined by '+', like |op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
            )
        ops: list[str] = []
        for node, part in enumerate(parts, start=1):
            if len(part) < 2 or part[0] != "|" or part[-1] != "|":
                raise CellError(f"node {node} of arch string {text!r} must look like |op~i|...|")
            items = part[1:-1].split("|")
            if len(items) != node:
                raise CellError(
                    f"node {node} of arch string {text!r} has {len(items)} inputs; expected {node}"
                )
            for i, item in enumerate(items):
                op, sep, src = item.partition("~")
                if not sep or src != str(i):
                    raise CellError(
                        f"input {i} of node {node} in arch string {text!r} must read 'op~{i}', "
                        f"got {item!r}"
                    )
                ops.append(op)
        return cls(tuple(ops))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NB201Cell:
        """Inverse of :meth:`to_dict` (reads the ``arch`` string)."""
        if data.get("space") != "nb201" or "arch" not in data:
            raise CellError("a NAS-Bench-201 cell dict needs space='nb201' and an 'arch' string")
        return cls.from_string(data["arch"])

    @classmethod
    def random(cls, rng: random.Random, ops: Sequence[str] = OPS) -> NB201Cell:
        """A cell with every edge's op drawn uniformly from ``ops`` by ``rng``."""
        return cls(tuple(rng.choice(ops) for _ in range(NUM_EDGES)))

    # -- views ----------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The official arch string (canonical: one string per cell)."""
        return self.arch_string()

    def arch_string(self) -> str:
        """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        o = self.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    def __str__(self) -> str:
        return self.arch_string()

    @property
    def num_edges(self) -> int:
        """Edges whose op is not ``none``."""
        return sum(op != "none" for op in self.ops)

    @property
    def is_connected(self) -> bool:
        """Whether a path of non-``none`` edges joins the input (node 0) to the output (node 3)."""
        reach = {0}
        for (i, j), op in zip(EDGES, self.ops, strict=True):
            if op != "none" and i in reach:
                reach.add(j)
        return NUM_NODES - 1 in reach

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"space": "nb201", "arch": ..., "ops": [...]}``."""
        return {"space": "nb201", "arch": self.arch_string(), "ops": list(self.ops)}

    # -- edits ----------------------------------------------------------------------------
    def with_op(self, edge: int, op: str) -> NB201Cell:
        """A copy with edge number ``edge`` (0..5, :data:`EDGES` order) set to ``op``."""
        if not 0 <= edge < NUM_EDGES:
            raise CellError(f"edge number must be in 0..{NUM_EDGES - 1}, got {edge}")
        ops = list(self.ops)
        ops[edge] = op
        return NB201Cell(tuple(ops))

    def neighbors(self) -> Iterator[tuple[int, str, NB201Cell]]:
        """Every cell one op change away: ``(edge, new op, cell)``, 24 in all."""
        for e, cur in enumerate(self.ops):
            for op in OPS:
                if op != cur:
                    yield e, op, self.with_op(e, op)


def all_cells() -> list[NB201Cell]:
    """The 15,625 cells in code order."""
    return [NB201Cell.from_code(c) for c in range(NUM_CELLS)]


class ArchIndex:
    """The official index <-> cell mapping of a benchmark, read from its list of arch strings.

    Args:
        arch_strings: the arch string of official index 0, 1, ...; all 15,625 cells, each once.
        source: where the list came from, for error messages.
    """

    def __init__(self, arch_strings: Sequence[str], source: str = "arch list") -> None:
        if len(arch_strings) != NUM_CELLS:
            raise CellError(f"{source}: expected {NUM_CELLS} arch strings, got {len(arch_strings)}")
        codes = np.empty(NUM_CELLS, dtype=np.int64)
        for i, text in enumerate(arch_strings):
            try:
                codes[i] = NB201Cell.from_string(text).code
            except CellError as err:
                raise CellError(f"{source}, index {i}: {err}") from None
        index_of_code = np.full(NUM_CELLS, -1, dtype=np.int64)
        index_of_code[codes] = np.arange(NUM_CELLS)
        if (index_of_code < 0).any():
            missing = int(np.flatnonzero(index_of_code < 0)[0])
            raise CellError(
                f"{source}: cell {NB201Cell.from_code(missing)} is missing (some cell repeats)"
            )
        self.source = source
        #: official index -> code, and code -> official index (int64 arrays of 15,625).
        self.codes = codes
        self.index_of_code = index_of_code

    def index(self, cell: NB201Cell) -> int:
        """The official index of ``cell``."""
        return int(self.index_of_code[cell.code])

    def cell(self, index: int) -> NB201Cell:
        """The cell at official index ``index``."""
        if not 0 <= int(index) < NUM_CELLS:
            raise CellError(f"official index must be in 0..{NUM_CELLS - 1}, got {index}")
        return NB201Cell.from_code(int(self.codes[int(index)]))

    def __len__(self) -> int:
        return NUM_CELLS


@dataclass(frozen=True, slots=True)
class NB201Size:
    """A size-space setting: the output channels of the 5 layers (stem/cell 1, reduction 1,
    cell 2, reduction 2, cell 3), each from :data:`SIZE_CHANNELS`."""

    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        ch = tuple(int(c) for c in self.channels)
        if len(ch) != SIZE_LAYERS or any(c not in SIZE_CHANNELS for c in ch):
            raise CellError(
                f"a size setting needs {SIZE_LAYERS} channel counts from {list(SIZE_CHANNELS)}, "
                f"got {list(self.channels)}"
            )
        object.__setattr__(self, "channels", ch)

    @classmethod
    def from_string(cls, text: str) -> NB201Size:
        """Parse ``"8:16:32:48:64"``."""
        try:
            return cls(tuple(int(c) for c in text.split(":")))
        except (ValueError, AttributeError):
            raise CellError(
                f"size setting {text!r} must be {SIZE_LAYERS} integers joined by ':'"
            ) from None

    @classmethod
    def from_index(cls, index: int) -> NB201Size:
        """The setting at official size-space index ``index`` (base 8, first layer first)."""
        if not 0 <= int(index) < NUM_SIZES:
            raise CellError(f"size index must be in 0..{NUM_SIZES - 1}, got {index}")
        n, base = int(index), len(SIZE_CHANNELS)
        digits = [(n // base ** (SIZE_LAYERS - 1 - k)) % base for k in range(SIZE_LAYERS)]
        return cls(tuple(SIZE_CHANNELS[d] for d in digits))

    @property
    def index(self) -> int:
        """The official size-space index."""
        n = 0
        for c in self.channels:
            n = n * len(SIZE_CHANNELS) + SIZE_CHANNELS.index(c)
        return n

    @property
    def key(self) -> str:
        """The channels joined by ``:`` (``8:16:32:48:64``), as :meth:`from_string` parses them."""
        return ":".join(str(c) for c in self.channels)

    def __str__(self) -> str:
        return self.key

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"space": "nb201-size", "channels": [...]}``."""
        return {"space": "nb201-size", "channels": list(self.channels)}
