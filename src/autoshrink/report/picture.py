"""Pictures of cells: Graphviz DOT text, rendered PNG/SVG, and a plain-text fallback.

``to_dot`` is pure; ``render`` writes a ``.dot`` file as DOT source, and a ``.png`` or ``.svg``
by running the Graphviz ``dot`` program when it is installed -- otherwise it writes the text
rendering next to where the picture would have gone; it writes no other file. A cell of more
than :data:`GRAPH_EDGE_LIMIT` edges is drawn as its adjacency matrix instead (matplotlib): a
drawing of that many arrows cannot be read, and Graphviz's layout time grows faster than the
square of the edges (``benchmarks/bench_cell_picture.py``: 435 edges 4.7 s, 990 edges 55 s,
1,770 over 120 s on 2 CPU cores; the matrix takes under half a second).
"""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from autoshrink.atomic_write import write_atomic, write_text_atomic
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell

if TYPE_CHECKING:
    from autoshrink.report.mpl import Figure

PICTURE_FORMATS = ("png", "svg", "dot")
#: Cells with more edges than this are drawn as an adjacency matrix (see the module docstring).
GRAPH_EDGE_LIMIT = 300

log = logging.getLogger(__name__)

_FILL = {
    "input": "#d9d9d9",
    "sep3x3": "#9ecae1",
    "conv1x1": "#fdd0a2",
    "conv3x3": "#a1d99b",
    "maxpool3x3": "#dadaeb",
    "identity": "#bdbdbd",  # #f0f0f0 vanished on the matrix picture's white
    "relu": "#fdd0a2",
    "sigmoid": "#a1d99b",
    "tanh": "#9ecae1",
}


def dot_string(text: str) -> str:
    """``text`` as the inside of a DOT quoted string, shown as written: backslashes (Graphviz
    reads ``\\n``, ``\\N`` ... as escapes) and quotes escaped, line breaks as ``\\n``."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(cell: Cell, title: str | None = None) -> str:
    """Graphviz DOT source of the live part of ``cell``, leaves joined into an output node (method
    section 1): a CNN cell's output concatenates its leaves and adds the cell input (a dotted
    edge labelled "residual"); an RNN cell's output is the mean of its leaves' states."""
    lines = [
        "digraph cell {",
        '  rankdir=LR; node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    if title:
        lines.append(f'  label="{dot_string(title)}"; labelloc=t; fontname="Helvetica";')
    for k in cell.live_nodes:
        fill = _FILL.get(cell.ops[k], "#ffffff")
        lines.append(f'  n{k} [label="{k}: {cell.ops[k]}", fillcolor="{fill}"];')
    joined = "mean" if cell.kind == "rnn" else "concat + residual"
    lines.append(f'  out [label="output: {joined}", shape=ellipse, fillcolor="#ffffff"];')
    for i, j in cell.edges:
        lines.append(f"  n{i} -> n{j};")
    for k in cell.leaves:
        lines.append(f"  n{k} -> out [style=dashed];")
    if cell.kind != "rnn":  # the shortcut of the cell input, added to the leaves' concat
        lines.append('  n0 -> out [style=dotted, label="residual", fontname="Helvetica"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_text(cell: Cell) -> str:
    """A plain-text picture: one line per live node with its inputs, then the cell's output:
    a CNN cell's leaves concatenated plus the shortcut of its input, an RNN cell's the mean of
    its leaves' states (method section 1)."""
    rows = [str(cell)]
    for k in cell.live_nodes:
        pred = cell.predecessors(k)
        src = "cell input" if k == 0 else ", ".join(str(p) for p in pred)
        rows.append(f"  node {k:>2} {cell.ops[k]:<10} <- {src}")
    leaves = ", ".join(str(k) for k in cell.leaves)
    if cell.kind == "rnn":
        rows.append(f"  output = {leaves if len(cell.leaves) == 1 else f'mean({leaves})'}")
    else:
        joined = leaves if len(cell.leaves) == 1 else f"concat({leaves})"
        rows.append(f"  output = {joined} + cell input")
    return "\n".join(rows) + "\n"


def picture_format(path: Path) -> str:
    """The picture format of ``path``'s suffix (one of :data:`PICTURE_FORMATS`); another is a
    :class:`ConfigError` naming the path."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in PICTURE_FORMATS:
        known = f"{', '.join(PICTURE_FORMATS[:-1])} or {PICTURE_FORMATS[-1]}"
        raise ConfigError(f"{path}: a cell picture is {known}, not {fmt!r}")
    return fmt


def render(cell: Cell, path: str | Path, title: str | None = None) -> Path:
    """Write a picture of ``cell`` to ``path`` (its suffix: ``.png``, ``.svg`` or ``.dot``, the
    Graphviz source).

    Returns the file written: ``path`` itself, or ``path`` with suffix ``.txt`` when a PNG or
    SVG is asked for and Graphviz's ``dot`` is not installed (then a warning is logged). A
    ``dot`` that fails (a full disk) is an :class:`OSError` naming ``path``, which is left as
    it was.
    """
    path = Path(path)
    fmt = picture_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        write_text_atomic(path, to_dot(cell, title))
        return path
    if cell.num_edges > GRAPH_EDGE_LIMIT:
        log.info("%d edges: drawing the adjacency matrix of the cell", cell.num_edges)
        from autoshrink.report.mpl import save_figure  # only for large cells

        save_figure(matrix_figure(cell, title), path)
        return path
    dot = shutil.which("dot")
    if dot is None:
        out = path.with_suffix(".txt")
        write_text_atomic(out, to_text(cell))
        log.warning("Graphviz 'dot' not found; wrote a text picture to %s", out)
        return out
    source = to_dot(cell, title).encode("utf-8", "replace")  # a title from a non-UTF-8 path

    def draw(tmp: Path) -> None:
        # -oFILE in one word: dot takes a separate word starting with "-" (a folder "-run") for
        # an option, not for -o's file
        done = subprocess.run([dot, f"-T{fmt}", f"-o{tmp}"], input=source, capture_output=True)
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = said[-1] if said else f"exit status {done.returncode}"
            raise OSError(errno.EIO, f"Graphviz dot could not draw the cell ({why})", str(path))

    write_atomic(path, draw)
    return path


def matrix_figure(cell: Cell, title: str | None = None) -> Figure:
    """The adjacency matrix of ``cell``: a filled square at row ``i``, column ``j`` for the
    edge ``i -> j``, in the colour of node ``j``'s op; the legend names the ops."""
    from autoshrink.report.mpl import Figure, ListedColormap, literal  # only for large cells

    ops = sorted({cell.ops[j] for _, j in cell.edges})
    grid = [[0] * cell.num_nodes for _ in range(cell.num_nodes)]
    for i, j in cell.edges:
        grid[i][j] = 1 + ops.index(cell.ops[j])
    colours = ["#ffffff"] + [_FILL.get(op, "#636363") for op in ops]
    side = min(12.0, 3.0 + cell.num_nodes / 20)
    fig = Figure(figsize=(side + 2.0, side), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=0, vmax=len(ops), interpolation="nearest")
    ax.set_xlabel("to node")
    ax.set_ylabel("from node")
    shown = literal(title) + ": " if title else ""
    ax.set_title(f"{shown}{cell.num_nodes} nodes, {cell.num_edges} edges")
    handles = [
        ax.scatter([], [], marker="s", color=_FILL.get(op, "#636363"), edgecolors="k", label=op)
        for op in ops
    ]
    fig.legend(handles=handles, loc="outside right upper", title="op of the edge's target")
    return fig
