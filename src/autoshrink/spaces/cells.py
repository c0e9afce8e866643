"""The AutoShrink cell spaces: starting cells with fixed node ops, and the published cells.

CNN cells draw a balanced random assignment of ``sep3x3`` and ``conv1x1`` to nodes 1..N-1; RNN
cells draw each node's activation from {relu, sigmoid, tanh, identity}. Both start as the
complete DAG. The space a search explores is every sub-DAG of that start cell (same node
ops); :func:`random_subcell` samples it and :func:`flip_edge` is its one-edge mutation, for the
baselines. The released ShrinkCNN and ShrinkRNN cells ship with the package.
"""

from __future__ import annotations

import random
from importlib import resources

from autoshrink.errors import ConfigError
from autoshrink.graph import INPUT, OPS, Cell

CNN_SEARCH_OPS: tuple[str, ...] = ("sep3x3", "conv1x1")
RNN_SEARCH_OPS: tuple[str, ...] = OPS["rnn"]
PUBLISHED = ("shrinkcnn", "shrinkrnn")


def balanced_ops(num_nodes: int, choices: tuple[str, ...], rng: random.Random) -> tuple[str, ...]:
    """Node ops for nodes 1..N-1: each choice used equally often (±1), in a seeded random order."""
    if num_nodes < 2:
        raise ConfigError(f"a cell needs at least 2 nodes, got {num_nodes}")
    n = num_nodes - 1
    ops = [choices[k % len(choices)] for k in range(n)]
    rng.shuffle(ops)
    return (INPUT, *ops)


def start_cell(
    kind: str, num_nodes: int, rng: random.Random, activation: str | None = None
) -> Cell:
    """The complete DAG a search starts from, with ops drawn from ``rng``.

    CNN: balanced ``sep3x3``/``conv1x1``; RNN: an activation drawn uniformly for each node.
    """
    if kind == "cnn":
        return Cell.complete("cnn", balanced_ops(num_nodes, CNN_SEARCH_OPS, rng), activation)
    if kind == "rnn":
        if num_nodes < 2:
            raise ConfigError(f"a cell needs at least 2 nodes, got {num_nodes}")
        ops = (INPUT, *(rng.choice(RNN_SEARCH_OPS) for _ in range(num_nodes - 1)))
        return Cell.complete("rnn", ops)
    raise ConfigError(f"unknown cell kind {kind!r}; expected 'cnn' or 'rnn'")


def random_subcell(parent: Cell, rng: random.Random, min_edges: int = 1) -> Cell:
    """A random sub-DAG of ``parent`` with at least ``min_edges`` edges (at least one).

    The number of edges ``m`` is uniform in ``min_edges..E`` (so small and large cells are drawn
    alike), then ``m`` of ``parent``'s edges are drawn uniformly; edges cut off from the input
    are pruned, and a draw left with fewer than ``min_edges`` edges is repeated.
    """
    low = max(1, min_edges)
    if parent.num_edges < low:
        raise ConfigError(f"cannot draw a sub-cell of >= {low} edges from {parent.num_edges}")
    while True:
        m = rng.randint(low, parent.num_edges)
        cell = Cell.pruned(parent.kind, parent.ops, rng.sample(parent.edges, m), parent.activation)
        if cell.num_edges >= low:
            return cell


def flip_edge(
    cell: Cell, parent: Cell, rng: random.Random, min_edges: int = 1
) -> tuple[tuple[int, int], Cell]:
    """One-edge mutation of ``cell`` within the sub-DAGs of ``parent``: ``(edge, child)``.

    The edge is drawn uniformly from those whose flip changes the cell: any edge of ``cell``
    (removed, with the nodes it cuts off, unless that leaves fewer than ``min_edges`` edges, at
    least one) or an edge of ``parent`` that ``cell`` lacks and that leaves a live node (added).
    """
    low = max(1, min_edges)
    live = set(cell.live_nodes)
    present = set(cell.edges)
    choices = list(cell.edges) + [e for e in parent.edges if e not in present and e[0] in live]
    rng.shuffle(choices)  # uniform draw, redrawn when a removal would leave too few edges
    for edge in choices:
        if edge not in present:
            return edge, Cell(cell.kind, cell.ops, (*cell.edges, edge), cell.activation)
        child = cell.remove_edge(edge)
        if child.num_edges >= low:
            return edge, child
    raise ConfigError(f"no edge of the parent cell can be flipped in {cell}")


def published_cell(name: str) -> Cell:
    """A published cell shipped with the package: ``shrinkcnn`` or ``shrinkrnn``."""
    if name not in PUBLISHED:
        raise ConfigError(f"unknown published cell {name!r}; expected one of {PUBLISHED}")
    text = resources.files("autoshrink").joinpath(f"cells/{name}.json").read_text()
    return Cell.from_json(text, f"{name}.json")
