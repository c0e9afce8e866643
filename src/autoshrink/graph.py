"""The cell genotype: an immutable DAG whose nodes are operations.

A :class:`Cell` is a plain value -- ops per node and edges ``i -> j`` with ``i < j`` -- that
validates itself on construction and never builds a network. Node 0 is the cell input; a node
exists only while it is reachable from node 0, and :meth:`Cell.remove_edge` drops the nodes an
edit cuts off together with their out-edges. Cells round-trip through the public JSON format
``autoshrink.cell/1`` and have a canonical key under which isomorphic cells are equal.
No torch in this module.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_json
from autoshrink.errors import CellError, ConfigError
from autoshrink.ranges import is_integer
from autoshrink.user_files import parse_json, read_json_file

FORMAT = "autoshrink.cell/1"
#: The fields of the JSON form, in the order :meth:`Cell.to_dict` writes them.
FIELDS = ("format", "kind", "ops", "edges", "activation")
INPUT = "input"

#: The operation vocabulary of each kind of cell (node 0 is always ``input``).
OPS: Mapping[str, tuple[str, ...]] = {
    "cnn": ("sep3x3", "conv1x1", "conv3x3", "maxpool3x3", "identity"),
    "rnn": ("identity", "relu", "sigmoid", "tanh"),
}
#: A cell of each kind, in words (``"an rnn cell"``: what error messages say it is).
A_CELL_OF: Mapping[str, str] = {"cnn": "a cnn cell", "rnn": "an rnn cell"}
#: Activation functions a CNN cell may use between operations.
CNN_ACTIVATIONS: tuple[str, ...] = ("relu", "swish")

Edge = tuple[int, int]


def check_kind(cell: object, kind: str, needs: str) -> None:
    """Raise :class:`ConfigError` ``"<needs> needs a <kind> cell, got ..."`` unless ``cell`` is a
    :class:`Cell` of ``kind``: naming the other kind, or the type given where a cell goes (a
    cell's dict or its list of ops met an ``AttributeError`` deep inside)."""
    if isinstance(cell, Cell) and cell.kind == kind:
        return
    got = (
        A_CELL_OF[cell.kind]
        if isinstance(cell, Cell)
        else f"a {type(cell).__name__} (Cell.from_dict(d) or Cell.load(path) makes a cell)"
    )
    raise ConfigError(f"{needs} needs {A_CELL_OF[kind]}, got {got}")


@dataclass(frozen=True)
class Cell:
    """An immutable cell genotype.

    Attributes:
        kind: ``"cnn"`` or ``"rnn"``.
        ops: one operation name per node; ``ops[0] == "input"``.
        edges: sorted tuple of ``(i, j)`` pairs, ``i < j``; every edge starts at a node
            reachable from node 0.
        activation: the CNN activation (``"relu"`` or ``"swish"``); ``None`` for RNN cells,
            whose activations are their node ops.
    """

    kind: str
    ops: tuple[str, ...]
    edges: tuple[Edge, ...]
    activation: str | None = None
    _succ: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ops = _op_names(self.ops)
        try:
            pairs = list(self.edges)
        except TypeError:
            raise CellError("a cell's ops and edges must be lists") from None
        edges = tuple(sorted({_edge(e) for e in pairs}))
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "edges", edges)
        self._check_ops()
        self._check_edges()
        self._settle_activation()
        succ: list[list[int]] = [[] for _ in ops]
        for i, j in edges:
            succ[i].append(j)
        object.__setattr__(self, "_succ", tuple(tuple(s) for s in succ))
        dead = sorted({i for i, _ in edges} - set(self.live_nodes))
        if dead:
            raise CellError(
                f"node {dead[0]} has out-edges but no path from the input node 0; "
                "use Cell.pruned() to drop unreachable nodes"
            )

    def _check_ops(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in OPS:
            raise CellError(f"unknown cell kind {self.kind!r}; expected one of {sorted(OPS)}")
        if len(self.ops) < 2:
            raise CellError(f"a cell needs at least 2 nodes, got {len(self.ops)}")
        if self.ops[0] != INPUT:
            raise CellError(f"node 0 must be {INPUT!r}, got {self.ops[0]!r}")
        for k, op in enumerate(self.ops[1:], start=1):
            if op not in OPS[self.kind]:
                raise CellError(
                    f"unknown {self.kind} op {op!r} at node {k}; "
                    f"expected one of {list(OPS[self.kind])}"
                )

    def _check_edges(self) -> None:
        n = len(self.ops)
        for i, j in self.edges:
            if not (0 <= i < n and 0 <= j < n):
                raise CellError(f"edge {i}->{j} names a node outside 0..{n - 1}")
            if i >= j:
                raise CellError(
                    f"edge {i}->{j} does not go forward (edges must satisfy i < j; "
                    "a backward edge would make a cycle)"
                )

    def _settle_activation(self) -> None:
        """A cnn cell's activation checked (``None``: relu); an rnn cell must have none."""
        if self.kind == "cnn":
            act = self.activation or "relu"
            if act not in CNN_ACTIVATIONS:
                raise CellError(f"unknown activation {act!r}; expected one of {CNN_ACTIVATIONS}")
            object.__setattr__(self, "activation", act)
        elif self.activation is not None:
            raise CellError("an rnn cell takes its activations from its node ops, not 'activation'")

    # ----------------------------------------------------------------- construction
    @classmethod
    def pruned(
        cls, kind: str, ops: Iterable[str], edges: Iterable[Edge], activation: str | None = None
    ) -> Cell:
        """Build a cell, first dropping edges that start at nodes unreachable from node 0."""
        ops = _op_names(ops)
        try:
            pairs = sorted({_edge(e) for e in edges})
        except TypeError:
            raise CellError("a cell's edges must be a list of (i, j) pairs") from None
        live = _reachable(pairs)
        return cls(kind, ops, tuple(e for e in pairs if e[0] in live), activation)

    @classmethod
    def complete(cls, kind: str, ops: Iterable[str], activation: str | None = None) -> Cell:
        """The complete DAG over ``ops``: every edge ``i -> j`` with ``i < j``."""
        ops = _op_names(ops)
        return cls(kind, ops, tuple(combinations(range(len(ops)), 2)), activation)

    # ----------------------------------------------------------------- structure
    @property
    def num_nodes(self) -> int:
        """Number of nodes, live or not (the ``N`` of the search space)."""
        return len(self.ops)

    @property
    def live_nodes(self) -> tuple[int, ...]:
        """Nodes reachable from node 0, ascending (node 0 always included)."""
        return tuple(sorted(_reachable(self.edges)))

    @property
    def num_edges(self) -> int:
        """Number of edges; all of them are reachable by construction."""
        return len(self.edges)

    def predecessors(self, node: int) -> tuple[int, ...]:
        """The nodes with an edge into ``node``, ascending."""
        self._check_node(node)
        return tuple(i for i, j in self.edges if j == node)

    def successors(self, node: int) -> tuple[int, ...]:
        """The nodes ``node`` has an edge into, ascending."""
        self._check_node(node)
        return self._succ[node]

    def _check_node(self, node: int) -> None:
        if not is_integer(node):
            raise CellError(f"node {node!r} is not a node number (an integer)")
        if not 0 <= node < len(self.ops):
            raise CellError(f"node {node} is outside 0..{len(self.ops) - 1}")

    @property
    def leaves(self) -> tuple[int, ...]:
        """Live nodes without out-edges: the nodes whose outputs form the cell output."""
        return tuple(k for k in self.live_nodes if not self._succ[k])

    # ----------------------------------------------------------------- edits
    def remove_edge(self, edge: Edge) -> Cell:
        """A new cell without ``edge``; nodes that become unreachable are dropped."""
        edge = _edge(edge)
        if edge not in self.edges:
            raise CellError(f"edge {edge[0]}->{edge[1]} is not in the cell")
        return Cell.pruned(
            self.kind, self.ops, (e for e in self.edges if e != edge), self.activation
        )

    def with_ops(self, ops: Iterable[str]) -> Cell:
        """The same topology with other node ops."""
        return Cell(self.kind, _op_names(ops), self.edges, self.activation)

    # ----------------------------------------------------------------- identity
    @cached_property
    def key(self) -> str:
        """Canonical key: equal for isomorphic cells (same ops, same wiring up to renumbering).

        Iterated neighbourhood hashing over the live nodes (as in NAS-Bench-101), seeded with
        each node's op and whether it is the input; dead nodes and their ops do not count. Not
        a complete invariant: a few highly symmetric cells that are not isomorphic share a key
        (docs/search.md). Computed once per cell (the cell is immutable): a search asks a
        proposal's key a dozen times, and a cell of 64 nodes takes tens of milliseconds.
        """
        live = self.live_nodes
        pred: dict[int, list[int]] = {k: [] for k in live}
        for i, j in self.edges:  # every edge joins live nodes
            pred[j].append(i)
        label = {k: _h(f"{self.ops[k]}|{int(k == 0)}") for k in live}
        for _ in range(len(live)):
            label = _hash_round(label, pred, self._succ)
        head = f"{self.kind}|{self.activation}|{len(self.edges)}"
        return _h(head + "|" + ",".join(sorted(label.values())))[:16]

    @property
    def signature(self) -> tuple[int, tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]]:
        """A cheap invariant of :attr:`key`: the number of edges and, over the live nodes, the
        sorted ``(op, predecessors' ops, successors' ops)`` -- what the key's first round of
        hashing reads. Cells of different signatures have different keys (each round's label
        is hashed into the next, so the last labels determine the first round's; only a
        collision of the key's 64 bits could join them); cells of one signature may or may
        not share a key. Comparing signatures first spares most keys where only distinct
        cells matter (:meth:`~autoshrink.strategies.autoshrink.AutoShrink.shrink_space`)."""
        pred: dict[int, list[str]] = {k: [] for k in self.live_nodes}
        succ: dict[int, list[str]] = {k: [] for k in pred}
        for i, j in self.edges:
            pred[j].append(self.ops[i])
            succ[i].append(self.ops[j])
        nodes = ((self.ops[k], tuple(sorted(pred[k])), tuple(sorted(succ[k]))) for k in pred)
        return len(self.edges), tuple(sorted(nodes))

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The public JSON form ``autoshrink.cell/1``."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "ops": list(self.ops),
            "edges": [list(e) for e in self.edges],
        }
        if self.activation is not None:
            d["activation"] = self.activation
        return d

    def to_json(self) -> str:
        """The cell as one line of JSON (:meth:`to_dict`)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "cell") -> Cell:
        """Parse the JSON form; every defect raises :class:`CellError` naming ``source``."""
        if not isinstance(d, dict):
            raise CellError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise CellError(f"{source}: 'format' must be {FORMAT!r}, got {d.get('format')!r}")
        missing = [k for k in ("kind", "ops", "edges") if k not in d]
        if missing:
            raise CellError(f"{source}: missing field(s) {missing}")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:  # a misspelt 'activation' would otherwise silently mean relu
            raise CellError(f"{source}: unknown field(s) {unknown}; expected {list(FIELDS)}")
        ops, edges = d["ops"], d["edges"]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise CellError(f"{source}: 'ops' must be a list of strings")
        if not isinstance(edges, list) or not all(
            isinstance(e, list)
            and len(e) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in e)
            for e in edges
        ):
            raise CellError(f"{source}: 'edges' must be a list of [i, j] integer pairs")
        seen: set[tuple[int, int]] = set()
        for i, j in edges:
            if (i, j) in seen:
                raise CellError(f"{source}: edge {i}->{j} is listed twice")
            seen.add((i, j))
        try:
            return cls(d["kind"], tuple(ops), tuple((i, j) for i, j in edges), d.get("activation"))
        except CellError as err:
            raise CellError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "cell") -> Cell:
        """The cell in the JSON ``text``; malformed text or a bad cell is a one-line
        :class:`CellError` naming ``source``."""
        return cls.from_dict(parse_json(text, source, CellError), source)

    @classmethod
    def load(cls, path: str | Path) -> Cell:
        """Read a cell JSON file."""
        path = Path(path)
        return cls.from_dict(read_json_file(path, CellError, "cell"), str(path))

    def save(self, path: str | Path) -> None:
        """Write the cell to ``path`` as indented JSON (what :meth:`load` reads)."""
        write_json(path, self.to_dict())

    def __str__(self) -> str:
        live = set(self.live_nodes)
        nodes = " ".join(
            f"{k}:{op}" + ("" if k in live else "(dead)") for k, op in enumerate(self.ops)
        )
        edges = " ".join(f"{i}->{j}" for i, j in self.edges)
        act = f" act={self.activation}" if self.activation else ""
        return f"{self.kind} cell [{nodes}] edges [{edges}] leaves {list(self.leaves)}{act}"


def _reachable(edges: Iterable[Edge]) -> set[int]:
    """The nodes reachable from node 0 along ``edges`` (sorted by source: one pass visits the
    nodes in topological order)."""
    live = {0}
    for i, j in edges:
        if i in live:
            live.add(j)
    return live


def _op_names(ops: Any) -> tuple[str, ...]:
    """``ops`` as a tuple; a :class:`CellError` for a str (read letter by letter, it named the
    wrong culprit) or anything not iterable."""
    try:
        if isinstance(ops, str):
            raise TypeError
        return tuple(ops)
    except TypeError:
        raise CellError(
            f"a cell's ops must be a list of op names, got a {type(ops).__name__}"
        ) from None


def _edge(edge: Any) -> Edge:
    """``edge`` as an ``(i, j)`` pair of node numbers (Python or NumPy integers, not bools or
    floats); a :class:`CellError` naming it otherwise."""
    try:
        i, j = edge
        if isinstance(i, bool) or isinstance(j, bool):
            raise TypeError
        return operator.index(i), operator.index(j)
    except (TypeError, ValueError):
        raise CellError(f"edge {edge!r} is not a pair of node numbers (i, j)") from None


def _hash_round(
    label: dict[int, str], pred: Mapping[int, Iterable[int]], succ: tuple[tuple[int, ...], ...]
) -> dict[int, str]:
    """One round of :attr:`Cell.key`'s hashing: each live node's new label hashes its label,
    its predecessors' labels and its successors' labels, each list sorted. The nodes are
    visited once in label order, each passing its label to its neighbours' lists, so every
    list comes out sorted without a sort per node (a cell of 64 nodes has 4,032 list entries
    a round)."""
    ins: dict[int, list[str]] = {k: [] for k in label}
    outs: dict[int, list[str]] = {k: [] for k in label}
    for k in sorted(label, key=label.__getitem__):
        mine = label[k]
        for j in succ[k]:
            ins[j].append(mine)
        for i in pred[k]:
            outs[i].append(mine)
    return {k: _h(f"{label[k]}<{','.join(ins[k])}>{','.join(outs[k])}") for k in label}


def _h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()
