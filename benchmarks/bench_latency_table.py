"""Latency table vs measurement: predicted and measured latency of random cells on this CPU.

Draws random cells of the AutoShrink CNN search space (a seeded start cell of 8 nodes with
sep3x3/conv1x1 ops, then a random number of random edge removals): a *profiling* set, from
whose networks the latency table is built (each distinct block measured once, inside a
network), and a disjoint *test* set of N cells. For every test cell whose blocks the table
holds, it prints the table's prediction, the measured latency of the whole network and the
relative error |pred - meas| / meas, then the median relative error.

Printed in the same run: the baseline, MACs x a ms-per-MAC factor fitted on the other test
cells (leave one out), the usual stand-in for latency; and the noise floor, the same test
cells measured once more before the table was built (on a busy machine latency drifts).

    python benchmarks/bench_latency_table.py                   # torch, cifar-proxy, 24 test cells
    python benchmarks/bench_latency_table.py --clock cpu       # steadier on a busy, shared machine
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import machine
from autoshrink.cost.cells import count
from autoshrink.graph import Cell
from autoshrink.hardware.blocks import network_blocks
from autoshrink.hardware.latency import measure_cell
from autoshrink.hardware.latency_settings import CLOCKS, LatencySettings
from autoshrink.hardware.table import extend_table
from autoshrink.spaces.cells import start_cell
from autoshrink.spaces.macros import MACROS, get_macro
from machine import print_machine, run_main


def random_cells(n: int, seed: int, nodes: int = 8) -> list[Cell]:
    """``n`` distinct cells: a random start cell each, minus a random number of edges."""
    rng = random.Random(seed)
    cells: dict[str, Cell] = {}
    while len(cells) < n:
        cell = start_cell("cnn", nodes, rng)
        for _ in range(rng.randrange(cell.num_edges)):
            if cell.edges:  # a removal may cut off nodes and take their edges along
                cell = cell.remove_edge(rng.choice(cell.edges))
        if len(cell.live_nodes) > 1:
            cells.setdefault(cell.key, cell)
    return list(cells.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=machine.count, default=24, help="test cells (2 or more)")
    p.add_argument(
        "--profile-cells", type=machine.count, default=150, help="cells the table is built from"
    )
    p.add_argument("--macro", default="cifar-proxy", choices=sorted(MACROS))
    p.add_argument("--clock", default="wall", choices=CLOCKS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20, help="timed runs per round (min_repeats)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.cells < 2:  # known now, not after minutes of measuring
        p.error(
            f"--cells {args.cells}: the MACs baseline needs 2 or more test cells (its ms per "
            "MAC is fitted on the others)"
        )
    print_machine()
    settings = LatencySettings(
        clock=args.clock, threads=args.threads, batch=args.batch, min_repeats=args.repeats
    )
    spec = get_macro(args.macro)
    test = random_cells(args.cells, args.seed)
    keys = {cell.key for cell in test}
    profile = [c for c in random_cells(args.profile_cells, args.seed + 1) if c.key not in keys]

    before = {c.key: measure_cell(c, spec, settings).median_ms for c in test}  # noise floor
    t0 = time.perf_counter()
    table = extend_table(None, profile, spec, settings, progress=True)
    build_s = time.perf_counter() - t0
    print(
        f"{args.macro}, backend torch, clock {args.clock}, {args.threads} thread(s), "
        f"batch {args.batch}: table of {len(table)} blocks from {len(profile)} profiled "
        f"networks in {build_s:.1f} s"
    )

    rows = []
    for cell in test:
        blocks = network_blocks(cell, spec)
        if table.missing(blocks):
            print(f"test cell {cell.key}: {len(table.missing(blocks))} blocks not in the table")
            continue
        t0 = time.perf_counter()
        predicted = table.predict_blocks(blocks)
        predict_us = (time.perf_counter() - t0) * 1e6
        rows.append((cell, len(blocks), measure_cell(cell, spec, settings), predicted, predict_us))

    if len(rows) < 2:  # the baseline's ms-per-MAC factor is fitted on the other test cells
        p.exit(
            1,
            f"{len(rows)} test cell(s) covered by the table; the MACs baseline needs 2 or "
            "more: raise --profile-cells or --cells\n",
        )
    macs = [count(cell, spec).macs for cell, *_ in rows]
    meas = [m.median_ms for _, _, m, *_ in rows]
    head = ("#", "edges", "blocks", "MMACs", "measured ms", "IQR", "earlier", "table ms", "error")
    print("{:>3} {:>5} {:>6} {:>7} {:>12} {:>7} {:>8} {:>9} {:>7}".format(*head))
    err_table, err_macs, err_again = [], [], []
    for i, (cell, n_blocks, m, predicted, _) in enumerate(rows):
        per_mac = statistics.median(meas[j] / macs[j] for j in range(len(rows)) if j != i)
        err_table.append(abs(predicted - m.median_ms) / m.median_ms)
        err_macs.append(abs(macs[i] * per_mac - m.median_ms) / m.median_ms)
        err_again.append(abs(before[cell.key] - m.median_ms) / m.median_ms)
        print(
            f"{i:>3} {cell.num_edges:>5} {n_blocks:>6} {macs[i] / 1e6:>7.2f} "
            f"{m.median_ms:>12.3f} {m.iqr_ms:>7.3f} {before[cell.key]:>8.3f} {predicted:>9.3f} "
            f"{100 * (predicted - m.median_ms) / m.median_ms:>+6.1f}%"
        )
    print(f"{len(rows)} test cells; median relative error against the measured latency:")
    for name, errors in (
        ("latency table", err_table),
        ("baseline: MACs x fitted ms/MAC (leave one out)", err_macs),
        ("noise floor: the same cells measured earlier", err_again),
    ):
        print(f"  {name + ':':<50} {100 * statistics.median(errors):5.1f}%")
    timed_s = statistics.median(m.median_ms * m.repeats / 1e3 for _, _, m, *_ in rows)
    predict_us = statistics.median(r[4] for r in rows)
    print(f"prediction: {predict_us:.0f} us per cell; measurement: ~{timed_s:.2f} s of timed runs")


if __name__ == "__main__":
    run_main(main)
