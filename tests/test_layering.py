"""The import graph of nemo_gym/: no cycles, and the server runtime stands below the launcher.

Every import counts, also one inside a function (a deferred import still ties the two modules
together; deferring only hides the cycle from the interpreter), except those under
`if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The launcher and the commands: the server runtime must never need them.
ABOVE_THE_SERVER = ("nemo_gym.runner", "nemo_gym.cli")


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name → file, for every module of `package` under `root`."""
    files: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports (`from pkg import mod` names `pkg.mod`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    known = module_files(root, package)
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module `start` imports, directly or not → the module that imports it on one path."""
    via: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        for successor in graph[node]:
            if successor not in via and successor != start:
                via[successor] = node
                todo.append(successor)
    return via


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
    return "; ".join(edges)


@cache
def nemo_gym_graph() -> dict[str, set[str]]:
    return import_graph(ROOT, "nemo_gym")


def test_nemo_gym_has_no_import_cycle() -> None:
    graph = nemo_gym_graph()
    assert len(graph) > 100  # the walk found the package
    assert [_describe(graph, c) for c in cycles(graph)] == []


@pytest.mark.parametrize(
    "module", sorted(m for m in module_files(ROOT, "nemo_gym") if m.startswith("nemo_gym.server"))
)
def test_server_runtime_needs_nothing_from_the_launcher_or_the_commands(module: str) -> None:
    graph = nemo_gym_graph()
    via = reachable(graph, module)
    above = sorted(m for m in via if m.startswith(ABOVE_THE_SERVER))
    assert [f"{m} (imported by {via[m]})" for m in above] == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


def test_the_check_sees_a_cycle_through_a_deferred_import(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "def f():\n    from . import c\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nfrom .a import x\n",
            "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/e.py": "from .. import d\nimport pkg.sub\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
        "pkg.d": set(),  # under TYPE_CHECKING: never runs
        "pkg.sub": set(),
        "pkg.sub.e": {"pkg.d", "pkg.sub"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert _describe(graph, ["pkg.a", "pkg.b", "pkg.c"]) == "pkg.a -> pkg.b; pkg.b -> pkg.c; pkg.c -> pkg.a"
    assert reachable(graph, "pkg.sub.e") == {"pkg.d": "pkg.sub.e", "pkg.sub": "pkg.sub.e"}
