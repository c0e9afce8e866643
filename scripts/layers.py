"""Draw the layers of the package: which sub-package imports which, read from the real imports.

Every module under ``src/autoshrink`` is parsed (not imported); each ``import autoshrink.x`` or
``from autoshrink.x import ...`` (relative imports included) becomes an edge from the importing
module's group to the imported one's. A group is a sub-package (``cost``, ``hardware``, ...) or
one module of the package root (``graph``, ``search``, ...). Imports at module level are solid
edges; imports deferred into a function body (so a layer loads only when used) are dashed.

To keep the picture readable it draws the transitive reduction: an import A -> C is left out
when A also reaches C through another layer B (A -> B -> C), so every arrow that remains is a
real import and everything below a layer is what it may use. ``autoshrink.errors`` is imported
by nearly everything and is left out too (both said in the picture's legend). ``--list`` prints
every direct import between layers.

    python scripts/layers.py                   # writes docs/img/layers.dot and docs/img/layers.svg
    python scripts/layers.py --dot-only        # the DOT file only (no Graphviz needed)
    python scripts/layers.py --list            # every direct import between layers
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "autoshrink"
LEFT_OUT = {"errors", "__main__", "__init__"}


def module_name(path: Path) -> str:
    """``src/autoshrink/cost/cells.py`` -> ``autoshrink.cost.cells``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def group(module: str) -> str | None:
    """The layer a module belongs to: its sub-package, or the root module's own name."""
    parts = module.split(".")
    if parts[0] != "autoshrink" or len(parts) < 2:
        return None
    return parts[1]


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported autoshrink module, deferred) for every import statement of one file.

    Imports under ``if TYPE_CHECKING:`` are for annotations only and are skipped.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, deferred)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, deferred) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import a, b: each name is a module
                found.extend((f"{target}.{alias.name}", deferred) for alias in node.names)
            else:
                found.append((target, deferred))
        inside = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return [(name, deferred) for name, deferred in found if name.startswith("autoshrink")]


def edges() -> dict[tuple[str, str], bool]:
    """(importer group, imported group) -> True when every such import is deferred."""
    result: dict[tuple[str, str], bool] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        source = group(module_name(path))
        if source is None or source in LEFT_OUT:
            continue
        for target_module, deferred in imports(path):
            target = group(target_module)
            if target is None or target in LEFT_OUT or target == source:
                continue
            key = (source, target)
            result[key] = result.get(key, True) and deferred
    return result


def reduce(graph: dict[tuple[str, str], bool]) -> dict[tuple[str, str], bool]:
    """The edges not implied by a longer path; raises on an import cycle between layers."""
    succ: dict[str, set[str]] = {}
    for source, target in graph:
        succ.setdefault(source, set()).add(target)

    def reach(start: str, seen: set[str]) -> set[str]:
        for nxt in succ.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    below = {node: reach(node, set()) for node in succ}
    cycles = sorted(node for node, seen in below.items() if node in seen)
    if cycles:
        raise SystemExit(f"import cycle between layers through: {', '.join(cycles)}")
    return {
        (a, c): deferred
        for (a, c), deferred in graph.items()
        if not any(c in below.get(b, ()) for b in succ[a] if b != c)
    }


def to_dot(graph: dict[tuple[str, str], bool]) -> str:
    """Graphviz DOT: sub-packages as boxes, root modules as ellipses, top layer (cli) first."""
    nodes = sorted({name for pair in graph for name in pair})
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    lines = [
        "digraph layers {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.45,',
        '         label="autoshrink layers: A -> B, modules of A import B (dashed: only inside'
        ' functions);\\nan import implied by a longer path is not drawn; errors.py, imported by'
        ' almost all, is left out.", labelloc=b];',
        '  node [fontname="Helvetica", fontsize=11, style=filled, fillcolor="#eef3fb",'
        ' color="#5a7bb5"];',
        '  edge [color="#666666", arrowsize=0.6];',
    ]
    for name in nodes:
        if name in packages:
            lines.append(f'  "{name}" [shape=box, label="{name}/"];')
        else:
            lines.append(f'  "{name}" [shape=ellipse, fillcolor="#fdf3e1", color="#b58a3a",'
                         f' label="{name}.py"];')
    for (source, target), deferred in sorted(graph.items()):
        style = " [style=dashed]" if deferred else ""
        lines.append(f'  "{source}" -> "{target}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "layers.svg")
    parser.add_argument("--dot-only", action="store_true", help="write the DOT file only")
    parser.add_argument("--list", action="store_true", help="print every direct import and exit")
    args = parser.parse_args(argv)
    if args.list:
        for (source, target), deferred in sorted(edges().items()):
            print(f"{source} -> {target}" + (" (deferred)" if deferred else ""))
        return 0
    dot_path = args.out.with_suffix(".dot")
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(to_dot(reduce(edges())), encoding="utf-8")
    if not args.dot_only:
        subprocess.run(["dot", "-Tsvg", str(dot_path), "-o", str(args.out)], check=True)
    print(f"wrote {dot_path}" + ("" if args.dot_only else f" and {args.out}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
