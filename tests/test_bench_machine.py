"""The machine header of the benchmark scripts (benchmarks/machine.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import machine  # noqa: E402


def test_the_line_names_cpu_cores_load_torch_onnxruntime_and_gpu() -> None:
    info = {
        "cpu": "Fancy CPU 9000",
        "logical_cores": 2,
        "load_average": 1.5,
        "torch": "2.13.0+cpu",
        "torch_loaded": True,
        "torch_threads": 1,
        "onnxruntime": "1.32.0",
        "gpu": "NVIDIA H100",
    }
    assert machine.machine_line(info) == (
        "machine: Fancy CPU 9000, 2 logical cores, load average 1.50; torch 2.13.0+cpu, "
        "1 thread; onnxruntime 1.32.0; GPU NVIDIA H100"
    )
    unloaded = info | {"torch_loaded": False, "torch_threads": None, "gpu": None}
    assert machine.machine_line(unloaded | {"onnxruntime": None}) == (
        "machine: Fancy CPU 9000, 2 logical cores, load average 1.50; torch 2.13.0+cpu "
        "(not loaded); no onnxruntime"
    )


def test_the_header_imports_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import sys, machine; info = machine.print_machine(); "
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules; "
        "assert not info['torch_loaded'] and info['cpu']"
    )
    env_path = f"{REPO / 'src'}:{REPO / 'benchmarks'}"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("machine: ") and "(not loaded)" in done.stdout


def test_every_bench_script_prints_the_header() -> None:
    """Each prints the header and runs its main through run_main: bad user input ends it with
    one line and status 2, not a traceback."""
    missing = [
        p.name
        for p in sorted((REPO / "benchmarks").glob("bench_*.py"))
        if "print_machine(" not in p.read_text() or "run_main(main)" not in p.read_text()
    ]
    assert missing == []
