"""``scripts/install.sh``'s refusals, which come before anything is installed: run from a copy
of ``scripts/`` in a temporary folder, so that no ``.venv`` is made or touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO


def install(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    shutil.copytree(REPO / "scripts", tmp_path / "scripts", dirs_exist_ok=True)
    return subprocess.run(
        ["bash", str(tmp_path / "scripts" / "install.sh"), *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_interpreter_that_cannot_run_is_named(tmp_path: Path) -> None:
    """``PYTHON=python3.99`` ended in bash's ``command not found`` (status 127), after an
    attempt to install Debian's python3-venv for it."""
    done = install(tmp_path, PYTHON="python3.99")
    assert done.returncode == 2, done.stderr
    said = "install.sh: cannot run python3.99; set PYTHON to an interpreter's name or path\n"
    assert done.stderr == said
    assert not (tmp_path / ".venv").exists()


def test_unknown_arguments_are_refused(tmp_path: Path) -> None:
    done = install(tmp_path, "--tests")
    assert done.returncode == 2 and "install.sh: unknown arguments: --tests" in done.stderr
    assert install(tmp_path, "--help").stdout.startswith("usage: bash scripts/install.sh")
