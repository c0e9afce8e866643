"""Large run folders: a search's own work, its resume and its report, without training.

A training-free evaluator (the log of a cell's input-to-node paths as its accuracy, its MACs
and params counted) stands in for proxy training, so what is timed is what the package does
around the candidates: proposing (AutoShrink's shrink space, one canonical key per distinct
removal), journalling (one fsynced line each), replaying a journal on ``--resume`` and writing
the report. Three parts, each in a temporary folder:

- the first AutoShrink step's shrink space of a complete cell of each of ``--nodes`` nodes;
- regularized evolution over the demo cells for ``--budget`` candidates: the search, a resume
  of its journal less its last 10 records (what a kill leaves), and ``autoshrink report``;
- AutoShrink over a complete cell of ``--shrink-nodes`` nodes, K = 10, down to 5% of its edges:
  the search and its report (a step's chosen cell is drawn for at most 16 steps).

    python benchmarks/bench_large_runs.py [--nodes 32 64] [--budget 4000] [--shrink-nodes 20]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from autoshrink import Evaluation, SearchConfig, preset, run_search
from autoshrink.cost.cells import count
from autoshrink.graph import Cell
from autoshrink.report.folder import write_report
from autoshrink.search_loop import make_strategy
from autoshrink.spaces.macros import MacroSpec, cifar_proxy
from autoshrink.strategies.base import Observation
from machine import print_machine, run_main


class PathCount:
    """A training-free evaluator: accuracy from the cell's input-to-node paths, and the cell's
    MACs and params in the demo's proxy network."""

    def __init__(self, config: SearchConfig) -> None:
        self.macro: MacroSpec = cifar_proxy(in_channels=1, image_size=8, width=config.width)

    def profile(self, cell: Cell) -> dict[str, float]:
        counts = count(cell, self.macro)
        return {"macs": float(counts.macs), "params": float(counts.params)}

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        paths = [1] + [0] * (len(cell.ops) - 1)
        for i, j in cell.edges:  # sorted, i < j: a topological order
            paths[j] += paths[i]
        accuracy = 0.5 + 0.05 * math.log10(sum(paths)) + (seed % 1000) / 1e5
        return Evaluation({**self.profile(cell), "accuracy": accuracy})


def space_seconds(nodes: int) -> tuple[int, int, float]:
    """``(edges, distinct removals, seconds)`` of the first AutoShrink step's proposals from a
    complete cell of ``nodes`` nodes (K = 10)."""
    strategy = make_strategy(preset("demo", nodes=nodes, k=10))
    (start,) = strategy.ask()
    strategy.tell([Observation(start, 1.0)])
    t0 = time.perf_counter()
    strategy.ask()
    seconds = time.perf_counter() - t0
    return start.genotype.num_edges, len(strategy.shrink_space()), seconds


def timed(what: str, work: Callable[[], object]) -> None:
    """Run ``work()`` and print its seconds under ``what``."""
    t0 = time.perf_counter()
    work()
    print(f"  {what:<52} {time.perf_counter() - t0:8.2f} s")


def search(run_dir: Path, config: SearchConfig, resume: bool = False) -> None:
    run_search(run_dir, config, resume=resume, evaluator_factory=PathCount, progress=False)


def killed_copy(run_dir: Path, cut: int) -> Path:
    """A copy of a finished run folder as a kill leaves it: no ``result.json``, and its journal
    less its last ``cut`` records."""
    copy = Path(shutil.copytree(run_dir, run_dir.with_name(run_dir.name + "-killed")))
    (copy / "result.json").unlink()
    lines = (copy / "journal.jsonl").read_text().splitlines(keepends=True)
    (copy / "journal.jsonl").write_text("".join(lines[:-cut]))
    return copy


def records(run_dir: Path) -> int:
    return len((run_dir / "journal.jsonl").read_text().splitlines())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--budget", type=int, default=4000, help="rea's candidates")
    p.add_argument("--shrink-nodes", type=int, default=20, help="the AutoShrink search's N")
    a = p.parse_args()
    print_machine()
    print("first AutoShrink step's shrink space (K = 10), complete cells")
    print(f"{'nodes':>5} {'edges':>6} {'distinct':>8} {'seconds':>8}")
    for n in a.nodes:
        edges, distinct, seconds = space_seconds(n)
        print(f"{n:>5} {edges:>6} {distinct:>8} {seconds:>8.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        rea = Path(tmp) / "rea"
        config = preset("demo", strategy="rea", budget=a.budget, seed=1)
        print(f"rea over the demo cells, budget {a.budget}, training-free")
        timed(f"search ({a.budget} candidates)", lambda: search(rea, config))
        killed = killed_copy(rea, 10)
        timed(f"resume ({records(killed)} records replayed, 10 to go)",
              lambda: search(killed, config, resume=True))  # fmt: skip
        timed("report", lambda: write_report(rea))
        shrink = Path(tmp) / "shrink"
        config = preset("demo", nodes=a.shrink_nodes, k=10, keep_fraction=0.05, patience=10**6)
        print(f"AutoShrink, {a.shrink_nodes} nodes, K = 10, down to 5% of the edges")
        timed("search", lambda: search(shrink, config))
        timed(f"report ({records(shrink)} records)", lambda: write_report(shrink))


if __name__ == "__main__":
    run_main(main)
