"""``scripts/oldest-versions.txt``, the releases ``scripts/check_versions.sh oldest`` installs,
pins every lower bound of ``pyproject.toml`` at that bound (a bound raised in one place and not
the other would let the check run on releases pyproject no longer allows, or miss some)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Bounds the oldest run does not pin, and why: the build backend; ruff and mypy, which
#: install.sh pins to one release each; Triton, which the oldest torch replaces with its own
#: Triton 2; the docs tools, which pip resolves for the Python at hand.
NOT_PINNED = {"setuptools", "ruff", "mypy", "triton", "mkdocs", "mkdocs-material", "mkdocstrings"}


def test_the_oldest_versions_are_pyprojects_lower_bounds() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    bounds = dict(re.findall(r'"([A-Za-z][\w.-]*)(?:\[[^\]]*\])?>=([\d.]+)"', text))
    lines = (ROOT / "scripts" / "oldest-versions.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert bounds.keys() >= NOT_PINNED  # each still a bound: else drop it here
    for name, pinned in pins.items():  # "2.2.0" pins ">=2.2": equal releases, zeros padded
        wanted = bounds[name].split(".")
        assert pinned.split(".")[: len(wanted)] == wanted, name
        assert set(pinned.split(".")[len(wanted) :]) <= {"0"}, name
    assert pins.keys() == bounds.keys() - NOT_PINNED


def test_check_versions_says_its_usage() -> None:
    """``--help`` is answered on stdout with status 0; no edge, or another, is a usage error."""
    script = str(ROOT / "scripts" / "check_versions.sh")
    for args, status in (["--help"], 0), (["-h"], 0), ([], 2), (["oldset"], 2):
        done = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=30)
        said = done.stdout if status == 0 else done.stderr
        assert done.returncode == status and said.startswith("usage: "), (args, done)


def test_check_versions_refuses_a_venv_of_another_python(tmp_path: Path) -> None:
    """A ``.venv-newest`` made by an earlier run with Python 3.12 was used as it was when PYTHON
    named 3.13: the suite ran on another Python than the one asked for. It is refused in one
    line, status 2, before anything is installed."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "check_versions.sh"
    script.write_text((ROOT / "scripts" / "check_versions.sh").read_text())
    installed = tmp_path / "installed"

    def fake_python(path: Path, version: str) -> Path:
        # answers -c (the script asks for the major.minor version) with ``version``; anything
        # else (venv, pip) would install: noted
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'#!/bin/sh\nif [ "$1" = -c ]; then echo {version}; else echo "$@" >> {installed}; fi\n'
        )
        path.chmod(0o755)
        return path

    fake_python(tmp_path / ".venv-newest" / "bin" / "python", "3.12")
    wanted = fake_python(tmp_path / "bin" / "python3.13", "3.13")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(wanted)}
    done = subprocess.run(
        ["bash", str(script), "newest"], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode == 2 and not installed.exists(), done
    assert done.stderr.splitlines() == [
        f"check_versions.sh: .venv-newest has Python 3.12, not {wanted}'s 3.13; remove "
        f".venv-newest to make it again with {wanted}"
    ]
