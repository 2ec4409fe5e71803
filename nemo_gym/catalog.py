"""The components a user can pick by name: environments, benchmarks, agents, model servers and
resources servers, found in the component search roots (NEMO_GYM_EXTRA_ROOTS, the working directory,
this checkout; the first root that has a name wins, so a user's own shadows a built-in).

Discovery only reads YAML: it never imports a server or resolves `${...}`, so listing works without
secrets, peers or a model. `gym list …` / `ng_list` print it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nemo_gym.paths import component_search_roots

SERVER_GROUPS = ("resources_servers", "responses_api_agents", "responses_api_models", "environment_servers")
# component type → (folder, the server group its configs declare)
FOLDERS = {
    "agents": ("responses_api_agents", "responses_api_agents"),
    "models": ("responses_api_models", "responses_api_models"),
    "resources_servers": ("resources_servers", "resources_servers"),
}
TYPES = ("environments", "benchmarks", "agents", "models", "resources_servers")


@dataclass(frozen=True)
class Component:
    """One listed component and what the listing shows about it."""

    name: str
    type: str
    path: Path
    configs: tuple[Path, ...] = ()
    domain: str | None = None
    description: str | None = None
    manifest: Path | None = None
    details: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "path": str(self.path),
            "configs": [str(p) for p in self.configs],
            "domain": self.domain,
            "description": self.description,
            "manifest": str(self.manifest) if self.manifest else None,
            "details": self.details,
        }


def _read(path: Path) -> dict[str, Any]:
    """A YAML mapping, or {} when the file is not one (listing skips what it cannot read)."""
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def server_blocks(data: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(instance, server group, implementation, block) of every server instance in a config."""
    for instance, body in data.items():
        if not isinstance(body, dict):
            continue
        for group in SERVER_GROUPS:
            impls = body.get(group)
            if not isinstance(impls, dict):
                continue
            for impl, block in impls.items():
                if isinstance(block, dict):
                    yield str(instance), group, str(impl), block


def _metadata(configs: list[Path], group: str | None = None) -> tuple[str | None, str | None]:
    """(domain, description) from the first server block that declares them."""
    domain = description = None
    for path in configs:
        for _, block_group, _, block in server_blocks(_read(path)):
            if group is not None and block_group != group:
                continue
            if domain is None and isinstance(block.get("domain"), str):
                domain = block["domain"]
            if description is None and isinstance(block.get("description"), str):
                description = block["description"]
    return domain, description


def _merge(found: dict[str, Component], more: dict[str, Component]) -> None:
    for name, component in more.items():
        found.setdefault(name, component)


def _servers_in(root: Path, component_type: str) -> dict[str, Component]:
    folder, group = FOLDERS[component_type]
    found: dict[str, Component] = {}
    base = root / folder
    if not base.is_dir():
        return found
    for child in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        configs = sorted((child / "configs").glob("*.yaml"))
        if not (child / "app.py").is_file() and not configs:
            continue
        domain, description = _metadata(configs, group)
        details = {"configs": ", ".join(p.stem for p in configs)} if configs else {}
        found[child.name] = Component(
            child.name, component_type, child, tuple(configs), domain, description, details=details
        )
    return found


def _runnable_configs(root: Path) -> dict[str, Component]:
    """Resources-server configs that also declare an agent: each one runs as an environment."""
    found: dict[str, Component] = {}
    base = root / "resources_servers"
    if not base.is_dir():
        return found
    for config in sorted(base.glob("*/configs/*.yaml")):
        blocks = list(server_blocks(_read(config)))
        groups = {group for _, group, _, _ in blocks}
        if not {"resources_servers", "responses_api_agents"} <= groups:
            continue
        server = config.parent.parent.name
        name = server if config.stem == server else f"{server}/{config.stem}"
        domain, description = _metadata([config], "resources_servers")
        agents = sorted({instance for instance, group, _, _ in blocks if group == "responses_api_agents"})
        found[name] = Component(
            name,
            "environments",
            config.parent.parent,
            (config,),
            domain,
            description,
            details={"source": "resources-server config", "agents": ", ".join(agents)},
        )
    return found


def _bundles(root: Path, folder: str, component_type: str, pattern: str) -> dict[str, Component]:
    """`environments/NAME/config*.yaml` (benchmarks may nest: `benchmarks/A/B/config.yaml`), with
    what their manifests say."""
    found: dict[str, Component] = {}
    base = root / folder
    if not base.is_dir():
        return found
    for config in sorted(base.glob(pattern)):
        bundle = config.parent
        relative = bundle.relative_to(base).as_posix()
        name = relative if config.stem == "config" else f"{relative}/{config.stem}"
        manifest = bundle / "manifest.yaml"
        meta = _read(manifest) if manifest.is_file() else {}
        domain, description = _metadata([config])
        data = _read(config)
        details = {"source": "bundle"}
        if isinstance(data.get("config_paths"), list):
            details["config_paths"] = ", ".join(str(p) for p in data["config_paths"])
        for key in ("version", "kind", "integration_profile", "lifecycle"):
            if meta.get(key) is not None:
                details[key] = str(meta[key])
        found[name] = Component(
            name,
            component_type,
            bundle,
            (config,),
            meta.get("domain") if isinstance(meta.get("domain"), str) else domain,
            meta.get("description") if isinstance(meta.get("description"), str) else description,
            manifest if manifest.is_file() else None,
            details,
        )
    return found


def discover(component_type: str, roots: list[Path] | None = None) -> dict[str, Component]:
    """Every component of a type, by name, in search-root order (the first root wins a name)."""
    if component_type not in TYPES:
        raise ValueError(f"unknown component type {component_type!r} (one of {', '.join(TYPES)})")
    found: dict[str, Component] = {}
    for root in roots if roots is not None else component_search_roots():
        if component_type == "environments":
            _merge(found, _bundles(root, "environments", component_type, "*/config*.yaml"))
            _merge(found, _runnable_configs(root))
        elif component_type == "benchmarks":
            _merge(found, _bundles(root, "benchmarks", component_type, "**/config.yaml"))
        else:
            _merge(found, _servers_in(root, component_type))
    return dict(sorted(found.items()))
