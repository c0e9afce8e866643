"""Start-up time of ``autoshrink`` commands: the sub-command's module alone against all of them.

A run of ``autoshrink`` loads the module of its own sub-command only (``autoshrink.cli``), so a
command that needs no torch starts without importing it. The baseline, in the same run, is the
same command with every sub-command's module loaded first, as every command did before. Each
figure is the best of ``--repeats`` fresh Python processes (wall seconds). The machine header
comes from this process, which imports no torch, so it costs the measured processes nothing.

    python benchmarks/bench_cli_startup.py [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import count, print_machine, run_main

CELL = Path(__file__).resolve().parents[1] / "src/autoshrink/cells/shrinkcnn.json"

RUN = """
import importlib, sys
from autoshrink.cli import SUBCOMMANDS, main
if {load_all}:
    for name in SUBCOMMANDS:
        importlib.import_module(f"autoshrink.cli.{{name}}")
try:
    main({args!r})
except SystemExit:
    pass
"""


def best_seconds(args: list[str], load_all: bool, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``autoshrink ARGS`` in a new interpreter."""
    code = RUN.format(load_all=load_all, args=args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=count, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    info = print_machine(sys.stderr if a.json else None)  # this process: imports no torch
    with tempfile.TemporaryDirectory() as tmp:
        commands = [
            ["--help"],
            ["count", str(CELL), "--macro", "shrinkcnn-imagenet"],
            ["show", str(CELL), "--picture", f"{tmp}/cell.svg"],
            ["bench", "nb201", "--help"],
            ["search", "--help"],
        ]
        rows = [
            {
                "command": " ".join(c).replace(str(CELL), "shrinkcnn.json").replace(tmp, "TMP"),
                "all_modules_s": best_seconds(c, True, a.repeats),
                "own_module_s": best_seconds(c, False, a.repeats),
            }
            for c in commands
        ]
    if a.json:
        print(json.dumps({"machine": info, "rows": rows}))
        return
    print(f"best of {a.repeats} processes, wall seconds")
    print(f"{'autoshrink ...':<52} {'all modules':>11} {'own module':>11} {'ratio':>6}")
    for r in rows:
        ratio = r["all_modules_s"] / r["own_module_s"]
        print(
            f"{r['command']:<52} {r['all_modules_s']:>11.2f} {r['own_module_s']:>11.2f} "
            f"{ratio:>6.1f}"
        )


if __name__ == "__main__":
    run_main(main)
