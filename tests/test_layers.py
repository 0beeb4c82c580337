"""The package is layered: every module imports only modules on lower floors, never inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sftbook

PACKAGE = Path(sftbook.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def sftbook_imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """``(module, node)`` for every import of a sftbook module in ``tree`` (``from sftbook import a, b`` too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[1], node) for alias in node.names if alias.name.startswith("sftbook.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sftbook":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
            found += [(name, node) for name in names if name in sftbook.FLOOR_OF]
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {
        path.stem: {name for name, _ in sftbook_imports(ast.parse(path.read_text()))} - {path.stem}
        for path in package.glob("*.py")
        if path.stem not in ("__init__", "__main__")
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target] if target in path else [node, target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_every_module_has_a_floor():
    assert sorted(sftbook.FLOOR_OF) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_lower_floors(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    upward = [(name, sftbook.FLOOR_OF[name]) for name, _ in sftbook_imports(tree) if sftbook.FLOOR_OF[name] >= sftbook.FLOOR_OF[module]]
    assert upward == [], f"{module} (floor {sftbook.FLOOR_OF[module]}) imports {upward}"


@pytest.mark.parametrize("module", MODULES)
def test_no_sftbook_import_inside_a_function(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    inside = [
        (function.name, name)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for name, _ in sftbook_imports(function)
    ]
    assert inside == [], f"{module} imports inside functions: {inside}"


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_finds_a_cycle_and_the_floor_check_an_upward_import(tmp_path):
    (tmp_path / "data.py").write_text("from sftbook import zoo\n")
    (tmp_path / "zoo.py").write_text("def f():\n    from sftbook.data import load\n")
    assert find_cycle(import_graph(tmp_path)) in (["data", "zoo", "data"], ["zoo", "data", "zoo"])
    names = [name for name, _ in sftbook_imports(ast.parse((tmp_path / "data.py").read_text()))]
    assert names == ["zoo"] and sftbook.FLOOR_OF["zoo"] > sftbook.FLOOR_OF["data"]
    function = ast.parse((tmp_path / "zoo.py").read_text()).body[0]
    assert [name for name, _ in sftbook_imports(function)] == ["data"]
