"""Ray, only for the environments that use it: which servers need it, and how one joins.

NeMo Gym environments put heavy verification (code execution, for example) in `ray.remote`
tasks. A server class says so with `ray_enabled = True`; one that says nothing is taken to
need Ray only if its code imports it. `ng_run` (nemo_gym/runner/ray_cluster.py) then joins the
cluster named by `ray_head_node_address`, or starts a local one, and hands the address to every
server in the running config; a server process joins it before serving. Both sides read this
module, so the server runtime needs nothing from the launcher. Servers that do not need Ray
never import it, so they pay nothing.
"""

from __future__ import annotations

import ast
import gc
import logging
from pathlib import Path
from typing import Any

RAY_ADDRESS_KEY = "ray_head_node_address"
logger = logging.getLogger("nemo_gym.ray")


def _declared_ray_enabled(tree: ast.Module) -> bool | None:
    """The value of a class-level `ray_enabled = True/False` in this module, if any."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                targets: list[ast.expr] = []
                value: ast.expr | None = None
                if isinstance(stmt, ast.Assign):
                    targets, value = stmt.targets, stmt.value
                elif isinstance(stmt, ast.AnnAssign):
                    targets, value = [stmt.target], stmt.value
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == "ray_enabled":
                        if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                            return value.value
    return None


def _imports_ray(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "ray"
        ):
            return True
    return False


def _local_modules(tree: ast.Module, folder: Path) -> list[Path]:
    """The server's own modules that the entrypoint imports (siblings in its folder)."""
    found: list[Path] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            candidate = folder / f"{name.rsplit('.', 1)[-1]}.py"
            if candidate.is_file() and candidate not in found:
                found.append(candidate)
    return found


def _parse(path: Path) -> ast.Module:
    """`ast.parse` with the collector off: CPython 3.11 raises "AST constructor recursion depth
    mismatch" when a finalizer runs Python code while the tree is being built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    finally:
        if enabled:
            gc.enable()


def server_needs_ray(entrypoint: Path) -> bool:
    """Whether the server started from `entrypoint` uses Ray, read from its source (not run).

    An explicit `ray_enabled` in the entrypoint wins; otherwise an import of `ray` in the
    entrypoint or in the sibling modules it imports counts.
    """
    try:
        tree = _parse(entrypoint)
    except (OSError, SyntaxError, ValueError):
        return False
    declared = _declared_ray_enabled(tree)
    if declared is not None:
        return declared
    if _imports_ray(tree):
        return True
    for path in _local_modules(tree, entrypoint.parent):
        if path == entrypoint:
            continue
        try:
            if _imports_ray(_parse(path)):
                return True
        except (OSError, SyntaxError, ValueError):
            continue
    return False


def connect_server(global_config: dict[str, Any]) -> None:
    """In a server process whose class needs Ray: join ng_run's cluster before serving."""
    import ray

    if ray.is_initialized():
        return
    address = global_config.get(RAY_ADDRESS_KEY)
    ray.init(
        address=address or "local",
        ignore_reinit_error=True,
        logging_level=logging.WARNING,
    )
    logger.info("joined the Ray cluster at %s", address or "(a new local one)")
