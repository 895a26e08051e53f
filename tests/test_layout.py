"""The package's shape: which packages may import which, no import circle, commands that only parse, call, print.

Imports are read from the source (``ast``), lazy ones inside functions included; ``if TYPE_CHECKING:`` blocks are
left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prvql"
MAX_RUN_LINES = 40  # "parse -> one library call -> print", printing included

# package -> packages of prvql it must never import (directly or lazily)
FORBIDDEN = {
    "train": {"infer", "app", "commands", "synth"},
    "infer": {"train", "app", "commands", "synth"},
    "model": {"data", "synth", "train", "infer", "metrics", "app", "commands"},
    "data": {"synth", "train", "infer", "app", "commands"},
    "synth": {"train", "infer", "app", "commands"},
    "metrics": {"model", "synth", "train", "infer", "app", "commands"},
    "app": {"train", "commands", "synth"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The modules ``path`` imports (absolute names); ``top_level_only``: only those run when it is imported."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and top_level_only:
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit([c for c in children if isinstance(c, ast.stmt | ast.ExceptHandler)])
            if isinstance(node, ast.ExceptHandler):
                visit(node.body)
            if isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def _prvql_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_packages_import_only_what_the_layout_allows() -> None:
    modules = _prvql_modules()
    wrong = []
    for name, path in modules.items():
        parts = name.split(".")
        if len(parts) < 3 or parts[1] not in FORBIDDEN:
            continue
        for imported in _imports(path, top_level_only=False):
            target = imported.split(".")
            if target[0] == "prvql" and len(target) > 1 and target[1] in FORBIDDEN[parts[1]]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    modules = _prvql_modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported in _imports(path, top_level_only=True):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("tree", ["prvql", "tests", "benchmarks"])
def test_product_tests_and_benchmarks_stay_apart(tree: str) -> None:
    forbidden = {"prvql": {"tests", "benchmarks", "experiments"}, "tests": {"benchmarks", "experiments"}}
    forbidden["benchmarks"] = {"tests", "experiments"}
    wrong = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        if tree == "benchmarks" and "tests" in path.relative_to(ROOT / tree).parts:
            continue  # the benchmarks' own tests
        for imported in _imports(path, top_level_only=False):
            if imported.split(".")[0] in forbidden[tree]:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_commands_only_parse_call_and_print() -> None:
    long = []
    for path in sorted((PACKAGE / "commands").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name == "run":
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_RUN_LINES:
                    long.append(f"{path.name}: run() has {lines} lines")
    assert not long, "\n".join(long)


def test_the_checks_see_a_forbidden_import_and_a_circle(tmp_path: Path) -> None:
    """The reader above finds lazy imports and skips TYPE_CHECKING blocks (else the tests could pass vacuously)."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prvql.train import loop\n"
        "def f():\n    from prvql.infer.locate import locate\n"
    )
    assert "prvql.infer.locate" in _imports(source, top_level_only=False)
    assert "prvql.infer.locate" not in _imports(source, top_level_only=True)
    assert not any(name.startswith("prvql.train") for name in _imports(source, top_level_only=False))
