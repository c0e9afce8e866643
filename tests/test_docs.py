"""The documentation: the site builds with warnings as errors, and what it shows is current.

- ``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav, a
  docstring cross-reference (a Sphinx role, see ``scripts/griffe_sphinx_roles.py``) that leads
  nowhere, or a snippet file that is gone;
- every ``from autoshrink... import ...`` in a code block of the docs and the README imports;
- every ``autoshrink ...`` command in a code block of them parses with today's command line;
- the layers picture matches the imports of the source;
- relative links of README.md and CONTRIBUTING.md (not part of the site) lead to files and
  headings.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe")


def _missing_doc_tools() -> list[str]:
    missing = []
    for name in DOC_TOOLS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


needs_doc_tools = pytest.mark.skipif(
    bool(_missing_doc_tools()),
    reason=f"docs tools not installed ({', '.join(_missing_doc_tools())}): "
    "pip install -e '.[docs]'",
)


def _markdown_files() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]


@pytest.mark.slow
@needs_doc_tools
def test_site_builds_strict(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    problems = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "\n".join(problems) or done.stderr[-3000:]
    site = tmp_path / "site"
    # The generated API pages and the included benchmark results are really there.
    strategies = (site / "api" / "strategies.html").read_text()
    assert "autoshrink.strategies.autoshrink.AutoShrink" in strategies
    bench_heading = (ROOT / "benchmarks" / "README.md").read_text().splitlines()[0].lstrip("# ")
    assert bench_heading in (site / "benchmarks.html").read_text()


IMPORT = re.compile(r"^\s*from (autoshrink(?:\.\w+)*) import ([\w, ]+)$", re.MULTILINE)


def _documented_imports() -> list[tuple[str, str, str]]:
    found = []
    for path in _markdown_files():
        if not path.exists():
            continue
        for block in re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            for module, names in IMPORT.findall(block):
                found += [(path.name, module, n.strip()) for n in names.split(",") if n.strip()]
    return found


def test_documented_imports_exist():
    imports = _documented_imports()
    assert len(imports) > 20  # the docs have their examples
    wrong = []
    for page, module, name in imports:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            wrong.append(f"{page}: from {module} import {name}: {error}")
    assert not wrong, "\n".join(wrong)


def _documented_commands() -> list[tuple[str, str]]:
    """``(page, command line)`` for each ``autoshrink`` command of a code block, with
    backslash continuations joined; lines with a ``...`` placeholder are left out."""
    found = []
    for path in [*_markdown_files(), ROOT / "benchmarks" / "README.md"]:
        if not path.exists():
            continue
        for block in re.findall(
            r"^```[^\n]*\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M
        ):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if line.startswith("autoshrink ") and "..." not in line:
                    found.append((path.name, line))
    return found


def test_documented_commands_parse():
    from autoshrink.cli import build_parser

    commands = _documented_commands()
    assert len(commands) > 50  # the docs have their examples
    wrong = []
    for page, line in commands:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit as stop:
            if stop.code:
                wrong.append(f"{page}: {line}: {stderr.getvalue().strip().splitlines()[-1]}")
    assert not wrong, "\n".join(wrong)


def test_layers_picture_matches_the_imports(tmp_path):
    committed = (ROOT / "docs" / "img" / "layers.dot").read_text(encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "layers.py"),
            "--dot-only",
            "--out",
            str(tmp_path / "layers.svg"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    fresh = (tmp_path / "layers.dot").read_text(encoding="utf-8")
    assert fresh == committed, "the imports changed: run python scripts/layers.py and commit"
    # Independent spot checks of what the picture must say.
    assert '"strategies" -> "spaces"' in fresh
    assert not re.search(r'"\w+" -> "cli"', fresh)


def test_layers_reduction_keeps_only_unimplied_edges():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from layers import reduce
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    graph = {("a", "b"): False, ("b", "c"): False, ("a", "c"): False, ("a", "d"): True}
    assert reduce(graph) == {("a", "b"): False, ("b", "c"): False, ("a", "d"): True}
    with pytest.raises(SystemExit, match="cycle"):
        reduce({("a", "b"): False, ("b", "a"): False})


@needs_doc_tools
def test_sphinx_roles_resolve_where_python_would():
    import griffe

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from griffe_sphinx_roles import _rewrite
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    package = griffe.load("autoshrink", search_paths=[str(ROOT / "src")])
    cost, search = package["cost"], package["search"]
    assert _rewrite(cost, ":mod:`.cells`") == "[`cells`][autoshrink.cost.cells]"
    # A name the module imports links to where it is defined.
    assert _rewrite(search, ":class:`Cell`") == "[`Cell`][autoshrink.graph.Cell]"
    assert (
        _rewrite(search, ":func:`~autoshrink.presets.preset`")
        == "[`preset`][autoshrink.presets.preset]"
    )
    # Another library stays plain code; an unknown bare name stays a reference (and fails).
    assert _rewrite(search, ":class:`torch.nn.Module`") == "`torch.nn.Module`"
    assert _rewrite(search, ":class:`ValueError`") == "`ValueError`"
    assert _rewrite(search, ":class:`NoSuchThing`") == "[`NoSuchThing`][NoSuchThing]"


def test_the_api_reference_shows_what_the_package_exports():
    """The package root's page renders ``autoshrink`` itself, whose docstring names every name
    of its ``__all__`` (before, the page began at ``autoshrink.atomic_write`` and the package's
    own names were nowhere on the site)."""
    import autoshrink

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from mkdocs_hooks import api_pages
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert "\n::: autoshrink\n" in api_pages()["api/root.md"]
    doc = autoshrink.__doc__ or ""
    missing = [n for n in autoshrink.__all__ if f":`{n}`" not in doc and f"``{n}``" not in doc]
    assert missing == []


def _slug(heading: str) -> str:
    """The anchor GitHub and MkDocs give a heading (lower case, punctuation dropped)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_and_contributing_links_lead_to_files():
    broken = []
    for path in (ROOT / "README.md", ROOT / "CONTRIBUTING.md"):
        if not path.exists():
            continue
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
        for link in links:
            target, _, anchor = link.partition("#")
            if "://" in target or target.startswith("mailto:") or not target:
                continue
            file = path.parent / target
            if not file.exists():
                broken.append(f"{path.name}: {link}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(
                    r"^#+ (.+)$",
                    re.sub(r"```.*?```", "", file.read_text(encoding="utf-8"), flags=re.S),
                    re.M,
                )
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{path.name}: {link} (no such heading)")
    assert not broken, "\n".join(broken)
