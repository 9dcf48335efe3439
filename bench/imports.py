"""The import graph of `edgecap/` and `export/`, read from the source (nothing is imported).

    python bench/imports.py            # from the repo root: the graph as text, then the verdict
    python bench/imports.py --quiet    # the verdict only

Every `import` counts, including those inside functions (a lazy import is still a dependency:
a cycle through one is a cycle). Exits 1 when the graph has a cycle, or when anything in
`edgecap/` imports `export/` (the run time must not need the build-time package).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = ("edgecap", "export")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(root, path)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that `name` (a module, or a name inside one) belongs to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` names a sub-module; `from mod import name` names the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in (_resolve(t, modules) for t in targets) if t and t != module)
    return found


def build_graph(root: Path) -> dict[str, set[str]]:
    modules = find_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(1000, 4 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def runtime_to_build(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [(a, b) for a in sorted(graph) for b in sorted(graph[a])
            if a.split(".")[0] == "edgecap" and b.split(".")[0] == "export"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--quiet", action="store_true", help="print the verdict only")
    args = parser.parse_args(argv)

    graph = build_graph(args.root)
    if not args.quiet:
        for name in sorted(graph):
            print(f"{name} -> {', '.join(sorted(graph[name])) or '(nothing)'}")
        print()
    cycles, wrong_way = find_cycles(graph), runtime_to_build(graph)
    for cycle in cycles:
        print("cycle: " + " <-> ".join(cycle))
    for a, b in wrong_way:
        print(f"run time imports build time: {a} -> {b}")
    edges = sum(len(targets) for targets in graph.values())
    print(f"{len(graph)} modules, {edges} imports, {len(cycles)} cycles, "
          f"{len(wrong_way)} edgecap -> export imports")
    return 1 if cycles or wrong_way else 0


if __name__ == "__main__":
    sys.exit(main())
