"""The modules of ``src/auxseg`` import each other in layers: the import graph has no cycle.

The graph is read with :mod:`ast` from every module's imports, top-level and inside functions alike (a function-level
import that closes a circle only hides it). ``from auxseg.x import y`` counts as an edge to ``auxseg.x.y`` when that is
a module, else to ``auxseg.x``; importing a module also imports its packages (``auxseg.a.b`` → ``auxseg.a``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import auxseg

ROOT = Path(auxseg.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    """Dotted name → file of every module of the package."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(top_level_only: bool = False) -> dict[str, set[str]]:
    """Module → the auxseg modules it imports (``top_level_only``: only imports outside functions and classes)."""
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        if top_level_only:  # also imports nested in top-level if/try blocks, not in defs
            stack, nodes = list(tree.body), []
            while stack:
                node = stack.pop()
                nodes.append(node)
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    stack.extend(ast.iter_child_nodes(node))
        for node in nodes:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                while target:  # importing auxseg.a.b runs auxseg.a and auxseg first
                    if target != name and not name.startswith(target + "."):
                        graph[name].add(target)
                    target = target.rpartition(".")[0]
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_reader_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert "auxseg.models.resnet38" in graph["auxseg.models.backbones"] and "auxseg.losses" in graph["auxseg.steps.train_round"]


def test_top_level_imports_have_no_cycle():
    assert find_cycles(import_graph(top_level_only=True)) == []


def test_function_level_imports_close_no_cycle_either():
    assert find_cycles(import_graph()) == []
