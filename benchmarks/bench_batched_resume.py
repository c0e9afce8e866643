"""How far a batched search killed in the middle of a step resumes from the uninterrupted run.

The batched executor trains a step's candidates stacked in one group, and in float32 a
candidate's rounding depends on the group it trains in: on resume the candidates of the
killed step that the journal lacks train in a smaller group. This script measures what that
changes. It runs the search once (``--preset``, batched executor, one thread on the CPU), then
for each ``--cut STEP:KEPT`` copies the run folder with the journal cut after the first
``KEPT`` records of step ``STEP`` (a kill there), resumes it, and prints how many records of
the resumed journal equal the uninterrupted run's (all fields but ``seconds``), which fields
differ in the others, and whether the path and the best cell stayed the same.

    python benchmarks/bench_batched_resume.py [--preset demo] [--device cpu]
        [--cut 3:2 --cut 8:2] [--out /tmp/batched-resume]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from machine import print_machine, run_main

KEPT_FILES = ("config.json", "fingerprint.json")  # what a search writes before its journal


def search(args: list[str]) -> None:
    """``autoshrink search ARGS`` in a fresh interpreter; its summary line printed (what it
    said on stderr raised, if it failed)."""
    done = subprocess.run(
        [sys.executable, "-m", "autoshrink", "search", *args, "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"autoshrink search {' '.join(args)}: {done.stderr.strip()}")
    print("   ", done.stdout.strip().splitlines()[-2])


def records(run: Path) -> dict[tuple[int, str], dict[str, Any]]:
    """The journal's records by (step, key), without their ``seconds``."""
    out = {}
    for line in (run / "journal.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds", None)
        out[rec.get("step", 0), rec["key"]] = rec
    return out


def cut(full: Path, run: Path, step: int, kept: int) -> int:
    """``run``: ``full``'s config with its journal cut after ``kept`` records of ``step``;
    the number of records left."""
    run.mkdir(parents=True)
    for name in KEPT_FILES:
        shutil.copy(full / name, run / name)
    lines, seen = [], 0
    for line in (full / "journal.jsonl").read_text().splitlines():
        at = json.loads(line).get("step", 0)
        if at < step or (at == step and seen < kept):
            seen += at == step
            lines.append(line)
    (run / "journal.jsonl").write_text("".join(x + "\n" for x in lines))
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cut", action="append", default=None, help="STEP:KEPT (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/batched-resume"))
    args = parser.parse_args()
    print_machine()
    cuts = [tuple(int(v) for v in c.split(":")) for c in args.cut or ["3:2", "8:2"]]
    shutil.rmtree(args.out, ignore_errors=True)
    full = args.out / "full"
    common = ["--executor", "batched", "--device", args.device]
    common += ["--threads", "1"] if args.device == "cpu" else []
    print(f"uninterrupted: --preset {args.preset} {' '.join(common)}")
    search(["--preset", args.preset, *common, "--out", str(full)])
    whole = records(full)
    best = json.loads((full / "result.json").read_text())["best"]
    for step, kept in cuts:
        run = args.out / f"cut-{step}-{kept}"
        left = cut(full, run, step, kept)
        print(f"killed after {kept} records of step {step} ({left} records kept), resumed:")
        search(["--resume", str(run)])  # on the run's own executor and device
        again = records(run)
        differ = {
            k: sorted(f for f in whole[k] if whole[k][f] != v.get(f))
            for k, v in again.items()
            if k in whole and whole[k] != v
        }
        print(
            f"    {sum(whole.get(k) == v for k, v in again.items())} of {len(again)} records "
            f"equal the uninterrupted run's ({len(whole)}); same path: "
            f"{sorted(again) == sorted(whole)}"
        )
        for (at, key), fields in sorted(differ.items()):
            scores = f"score {whole[at, key]['score']:.4f} -> {again[at, key]['score']:.4f}"
            print(f"    step {at} {key}: {', '.join(fields)} differ ({scores})")
        result = json.loads((run / "result.json").read_text())["best"]
        print(f"    best cell: {result['key'] == best['key']} ({result['score']:.4f})")


if __name__ == "__main__":
    run_main(main)
