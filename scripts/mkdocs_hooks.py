"""MkDocs hooks: the API reference pages, generated at build time from the package tree.

One page per sub-package of ``src/autoshrink`` (``api/<name>.md``) and one for the package
itself (its docstring: what ``import autoshrink`` names) and the modules of its root
(``api/root.md``), each a list of mkdocstrings ``::: autoshrink.x`` blocks, so
a new module or sub-package appears in the reference without editing the docs. The pages are
added to the nav under "API reference", after ``api/index.md``. Loaded from ``mkdocs.yml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "autoshrink"
ROOT_LEFT_OUT = {"__init__", "__main__"}


def _modules(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in ROOT_LEFT_OUT)


def api_pages() -> dict[str, str]:
    """``api/<name>.md`` -> its Markdown, for the package root and every sub-package."""
    pages = {
        "api/root.md": "# The package root\n\n"
        + "::: autoshrink\n    options:\n      members: false\n\n"  # what `import autoshrink` names
        + "The modules every layer shares.\n\n"
        + "".join(f"::: autoshrink.{name}\n\n" for name in _modules(PACKAGE))
    }
    for sub in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        blocks = [f"# `autoshrink.{sub.name}`\n",
                  f"::: autoshrink.{sub.name}\n    options:\n      show_root_heading: false\n"]
        blocks += [f"::: autoshrink.{sub.name}.{name}\n" for name in _modules(sub)]
        pages[f"api/{sub.name}.md"] = "\n".join(blocks)
    return pages


def on_config(config: Any, **kwargs: Any) -> Any:
    """Fill the "API reference" section of the nav with the generated pages."""
    for i, item in enumerate(config.nav or []):
        if isinstance(item, dict) and "API reference" in item:
            entries = [{"Overview": "api/index.md"}]
            for uri in api_pages():
                name = Path(uri).stem
                title = "package root" if name == "root" else f"autoshrink.{name}"
                entries.append({title: uri})
            config.nav[i] = {"API reference": entries}
    return config


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for uri, text in api_pages().items():
        files.append(File.generated(config, uri, content=text))
    return files
