"""Shared test fixtures: the ../shared/data folder (skipped when absent) and a tiny CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$AUTOSHRINK_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("AUTOSHRINK_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The reference data folder; the test is skipped, with the reason, when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set AUTOSHRINK_SHARED_DATA)")
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``autoshrink ARGS...`` in-process; returns (exit status, stdout, stderr). The
    loggers' levels the command line sets for the rest of its process are given back after."""
    import logging

    from autoshrink.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    loggers = [logging.getLogger(name) for name in ("autoshrink", "matplotlib")]
    levels = [logger.level for logger in loggers]
    yield run
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): small networks gain nothing from more,
    and a second thread on a busy machine stalls at every parallel region."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ended_pid() -> int:
    """The process id of a process that has ended (a killed writer's, in a temporary file's
    name)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)
