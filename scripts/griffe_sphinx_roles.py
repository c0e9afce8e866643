"""A Griffe extension for the docs site: Sphinx roles in docstrings become checked links.

The docstrings of autoshrink cite each other with Sphinx roles (``:class:`Cell```,
``:func:`~autoshrink.search.run_search```, ``:mod:`.cells```). MkDocs with mkdocstrings links
Markdown cross-references (``[Cell][autoshrink.graph.Cell]``) instead. Once the whole package
is loaded, this extension rewrites every role into such a reference, resolving the name the
way Python would see it from where the docstring stands:

- ``autoshrink.x.y``: taken as written;
- ``.x`` / ``..x``: as a relative import in the docstring's module;
- ``name`` / ``name.attr``: looked up in the enclosing class, then the module, including the
  names the module imports (followed to where they are defined).

A name of another library (``torch.nn.Module``, ``numpy.ndarray``) stays plain code. A name
that should be autoshrink's but resolves to nothing is kept as a reference to itself, so
``mkdocs build --strict`` (run by ``tests/test_docs.py``) fails on it: that is the point.
Loaded from ``mkdocs.yml`` (``extensions: [scripts/griffe_sphinx_roles.py]``).
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`<]+?)`")
PACKAGE = "autoshrink"


def _lookup(scope: griffe.Object, dotted: str) -> str | None:
    """The full path of ``dotted`` seen from ``scope``, or None when nothing there defines it."""
    head, _, rest = dotted.partition(".")
    node: griffe.Object | None = scope
    while node is not None:
        if head in node.members:
            member = node.members[head]
            target = member.target_path if member.is_alias else member.path
            return f"{target}.{rest}" if rest else target
        node = node.parent
    return None


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path a role's target means in ``obj``'s docstring; None for another library."""
    if name.startswith(PACKAGE + ".") or name == PACKAGE:
        return name
    module = obj.module
    if name.startswith("."):  # as a relative import: "." is the module's package
        dots = len(name) - len(name.lstrip("."))
        package = module.path.split(".")
        if not module.is_init_module:
            package = package[:-1]
        return ".".join(package[: len(package) - (dots - 1)] + [name[dots:]])
    scope = obj if obj.is_class or obj.is_module else obj.parent
    found = _lookup(scope, name) if scope is not None else None
    if found is not None:
        return found
    if "." not in name and name in dir(builtins):
        return f"builtins.{name}"
    return name if "." not in name else None  # a bare unknown name: left to fail the build


def _rewrite(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        short, name = match.group(1), match.group(2).strip()
        shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
        path = _resolve(obj, name)
        if path is None or (not path.startswith(PACKAGE) and "." in path):
            return f"`{shown}`"  # another library's name
        return f"[`{shown}`][{path}]"

    return ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles into mkdocstrings cross-references once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)
