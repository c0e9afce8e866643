"""heap_guard (``scripts/heap_guard.sh``): a write past the end of an aligned block fails at
once, and the CPU kernels of the project's training paths write within their buffers.

A native kernel that writes past its buffer (oneDNN issue #6035, see
``test_onednn_workaround.py``) corrupts the heap silently; the process aborts later, elsewhere,
or not at all, and which kernel runs depends on the CPU. Under the guard such a write faults in
the kernel itself on every machine whose kernels do it, so the last test here turns that class
of bug from a rare abort into a failing test that names the line.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUARD = ROOT / "scripts" / "heap_guard.sh"

pytestmark = [
    pytest.mark.skipif(
        platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
        reason="heap_guard preloads into glibc's allocator (Linux)",
    ),
    pytest.mark.skipif(
        shutil.which("cc") is None,
        reason="no C compiler (cc) to build heap_guard: apt-get install gcc libc6-dev",
    ),
]

#: Writes one byte at ``OFFSET`` of a ``SIZE``-byte block from posix_memalign (64-aligned, as
#: PyTorch's), then frees it.
WRITE = textwrap.dedent(
    """
    import ctypes, sys
    size, offset = int(sys.argv[1]), int(sys.argv[2])
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    block = ctypes.c_void_p()
    assert libc.posix_memalign(ctypes.byref(block), 64, size) == 0
    ctypes.memset(block.value + offset, 1, 1)
    libc.free(block.value)
    print("freed")
    """
)


def _guarded(*command: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(GUARD), *map(str, command)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def test_writes_within_a_block_pass() -> None:
    for size, offset in ((4096, 4095), (100, 99), (1, 0)):
        run = _guarded(sys.executable, "-c", WRITE, size, offset)
        assert run.returncode == 0 and run.stdout.strip() == "freed", run.stderr


def test_a_write_past_the_end_faults_where_it_happens() -> None:
    # 4096 bytes at 64-byte alignment leave no slack: the next byte is the inaccessible page
    run = _guarded(sys.executable, "-c", WRITE, 4096, 4096)
    assert run.returncode == 128 + signal.SIGSEGV, run.stderr  # bash's status of a signal
    assert "Fatal Python error: Segmentation fault" in run.stderr  # faulthandler: the line
    assert "freed" not in run.stdout


def test_a_write_into_the_alignment_slack_is_caught_on_free() -> None:
    # 100 bytes at 64-byte alignment: bytes 100..127 lie before the page, checked on free
    run = _guarded(sys.executable, "-c", WRITE, 100, 100)
    assert run.returncode == 128 + signal.SIGABRT, run.stderr
    assert "heap_guard: bytes written past the end of a block (a block of 100 bytes" in run.stderr
    assert "freed" not in run.stdout


def test_the_exit_status_and_usage() -> None:
    assert _guarded("false").returncode == 1  # the command's own
    usage = subprocess.run(["bash", str(GUARD)], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: ")
    asked = subprocess.run(["bash", str(GUARD), "--help"], capture_output=True, text=True)
    assert asked.returncode == 0 and asked.stdout.startswith("usage: ")  # not run as a command


@pytest.mark.slow
def test_the_training_kernels_write_within_their_buffers(tmp_path: Path) -> None:
    """Proxy training (channels-last, the down-sampling cells' small channel counts), the
    batched engine, final training, under the guard: the kernels these run on this CPU."""
    files = [
        "tests/test_onednn_workaround.py",
        "tests/test_proxy_training.py",
        "tests/test_batched_search.py",
        "tests/test_training.py",
    ]
    run = _guarded(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--basetemp", tmp_path / "inner", *files,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
