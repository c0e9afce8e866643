"""Drawing large cells: Graphviz's layout against the adjacency-matrix picture.

``autoshrink show`` (``report.picture.render``) lays a cell out with Graphviz up to
``GRAPH_EDGE_LIMIT`` edges and draws its adjacency matrix beyond. For complete cells of
``--nodes`` nodes this times, in the same run, Graphviz's ``dot -Tpng`` on the cell's DOT source
(the baseline; stopped after ``--timeout`` seconds) and the matrix picture ``render`` writes
instead (PNG).

    python benchmarks/bench_cell_picture.py [--nodes 20 30 45 200] [--timeout 120]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from autoshrink.graph import Cell
from autoshrink.report.picture import GRAPH_EDGE_LIMIT, matrix_figure, to_dot
from machine import print_machine, run_main


def complete(nodes: int) -> Cell:
    ops = ["sep3x3", "conv1x1", "maxpool3x3"]
    return Cell.complete("cnn", ["input"] + [ops[i % 3] for i in range(nodes - 1)])


def graphviz_seconds(cell: Cell, out: Path, timeout: float) -> float | None:
    """Seconds of ``dot -Tpng`` on the cell, or None past ``timeout``."""
    t0 = time.perf_counter()
    try:
        subprocess.run(
            ["dot", "-Tpng", "-o", str(out)],
            input=to_dot(cell),
            text=True,
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t0


def matrix_seconds(cell: Cell, out: Path) -> float:
    t0 = time.perf_counter()
    matrix_figure(cell).savefig(out, format="png")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[20, 30, 45, 200])
    p.add_argument("--timeout", type=float, default=120.0, help="Graphviz's limit per cell, s")
    a = p.parse_args()
    if shutil.which("dot") is None:
        p.error("Graphviz's dot is not installed (apt-get install graphviz)")
    print_machine()
    print(f"complete cells; render() switches to the matrix above {GRAPH_EDGE_LIMIT} edges")
    print(f"{'nodes':>5} {'edges':>6} {'graphviz s':>11} {'matrix s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.nodes:
            cell = complete(n)
            dot = graphviz_seconds(cell, Path(tmp) / "g.png", a.timeout)
            shown = f"> {a.timeout:g}" if dot is None else f"{dot:.2f}"
            matrix = matrix_seconds(cell, Path(tmp) / "m.png")
            print(f"{n:>5} {cell.num_edges:>6} {shown:>11} {matrix:>9.2f}")


if __name__ == "__main__":
    run_main(main)
