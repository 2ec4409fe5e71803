"""NeMo Gym's composition keys, applied to the merged config before interpolations resolve.

- `_inherit_from: <dotted path>` in a mapping: the mapping becomes the one at that path with its
  own keys on top, and the one at that path is removed. A bundle uses it to rename an agent
  instance while keeping its implementation's block (`cline_math_agent: {_inherit_from: cline_agent, …}`).
- `_copy: <dotted path>`: the same, but the source stays.
- `${inherit_from:<path>}` / `${copy:<path>}` as a whole string value: the value at that path
  (moved or copied).

Keys set through a source keep the source's file in error messages.
"""

from __future__ import annotations

import copy
from typing import Any

from nemo_gym.config.errors import ConfigError

INHERIT_KEY = "_inherit_from"
COPY_KEY = "_copy"
_STRING_FORMS = {"${inherit_from:": True, "${copy:": False}  # prefix → moves the source
_MAX_CHAIN = 32


def _lookup(tree: dict[str, Any], path: list[str]) -> Any:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(".".join(path))
        node = node[part]
    return node


def _deep_merge(base: Any, top: dict[str, Any]) -> Any:
    if not isinstance(base, dict):
        return copy.deepcopy(top)
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _string_reference(value: Any) -> tuple[str, bool] | None:
    if not isinstance(value, str) or not value.endswith("}"):
        return None
    for prefix, moves in _STRING_FORMS.items():
        if value.startswith(prefix):
            return value[len(prefix) : -1].strip(), moves
    return None


class _Composer:
    def __init__(self, merged: dict[str, Any], origins: dict[str, str]) -> None:
        self.merged = merged
        self.frozen = copy.deepcopy(merged)
        self.origins = origins
        self.moved: list[list[str]] = []

    def source(self, dotted_from: str, where: str) -> Any:
        try:
            return _lookup(self.frozen, dotted_from.split("."))
        except KeyError:
            raise ConfigError(
                f"refers to '{dotted_from}', which is not defined", key=where, source=self.origins.get(where)
            ) from None

    def inherit_origins(self, dotted_from: str, dotted_to: str) -> None:
        prefix = f"{dotted_from}."
        for key, origin in list(self.origins.items()):
            if key.startswith(prefix):
                self.origins.setdefault(f"{dotted_to}.{key[len(prefix) :]}", origin)

    def walk(self, node: Any, path: list[str]) -> Any:
        if isinstance(node, dict):
            for _ in range(_MAX_CHAIN):  # a source may itself inherit
                key = next((k for k in (INHERIT_KEY, COPY_KEY) if k in node), None)
                if key is None:
                    break
                node = dict(node)
                reference = node.pop(key)
                where = ".".join([*path, key])
                if not isinstance(reference, str) or not reference:
                    raise ConfigError("must be the dotted path of a config key", key=where)
                node = _deep_merge(self.source(reference, where), node)
                self.inherit_origins(reference, ".".join(path))
                if key == INHERIT_KEY:
                    self.moved.append(reference.split("."))
            else:
                raise ConfigError("inherits in a cycle", key=".".join(path))
            return {k: self.walk(v, [*path, str(k)]) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(item, [*path, str(i)]) for i, item in enumerate(node)]
        reference = _string_reference(node)
        if reference is None:
            return node
        dotted, moves = reference
        value = self.source(dotted, ".".join(path))
        if moves:
            self.moved.append(dotted.split("."))
        return self.walk(copy.deepcopy(value), path)


def apply_composition(merged: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """The merged config with every `_inherit_from` / `_copy` (and their string forms) applied."""
    composer = _Composer(merged, origins)
    result = composer.walk(merged, [])
    for path in composer.moved:
        parent: Any = result
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return result
