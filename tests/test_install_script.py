"""``scripts/install.sh``'s refusals, which come before anything is installed, and its repair of
a ``.venv`` without pip, offline: run from a copy of ``scripts/`` in a temporary folder, so that
the checkout's ``.venv`` is never made or touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_a_venv_without_pip_gets_it(tmp_path: Path) -> None:
    """A ``.venv`` whose making stopped while ensurepip ran (Ctrl-C in the first install), or
    one made by a Python without ensurepip (Debian's without python3-venv), has a Python but
    no pip: every later install stopped at once with ``No module named pip``. Here nothing can
    be downloaded and apt-get is not on PATH, so the install gets as far as torch and stops
    there, with pip in the venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / ".venv"], check=True)
    tools = tmp_path / "bin"  # bash, dirname and the interpreter: no apt-get
    tools.mkdir()
    for name in ("bash", "dirname"):
        (tools / name).symlink_to(shutil.which(name) or f"/bin/{name}")
    (tools / "python3").symlink_to(sys.executable)
    offline = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tools)}
    done = install(tmp_path, PATH=str(tools), **offline)
    assert "No module named pip" not in done.stderr
    assert "install.sh: warning: no CPU build of torch" in done.stderr
    pip = [tmp_path / ".venv" / "bin" / "python", "-m", "pip", "--version"]
    assert subprocess.run(pip, capture_output=True).returncode == 0


def test_a_venv_whose_python_is_gone_is_named(tmp_path: Path) -> None:
    """A ``.venv`` made from an interpreter since removed (a pyenv version uninstalled, a
    checkout copied from another machine) cannot be mended in place: Debian's ``python3 -m
    venv`` stopped at ``[Errno 2] No such file or directory: '.../.venv/bin/python3'`` (status
    1), which said neither what was wrong nor what to do."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(tmp_path / "gone" / "python3")
    done = install(tmp_path)
    assert done.returncode == 2, done.stderr
    said = (
        f"install.sh: .venv/bin/python links to {tmp_path}/gone/python3, which is not there; "
        "remove .venv to make it again\n"
    )
    assert done.stderr == said
    assert (tmp_path / ".venv" / "bin" / "python").is_symlink()
