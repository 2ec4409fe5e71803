"""Server-instance discovery: which top-level keys are servers, and are their references sound."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loader import PROJECT_ROOT, RESERVED_KEYS, LoadedConfig
from nemo_gym.paths import component_package_roots, extra_roots

SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents", "environment_servers")
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerInstance:
    """One process `ng_run` starts: `name: {server_type: {impl_name: {...}}}`."""

    name: str
    server_type: str
    impl_name: str
    entrypoint: Path
    host: str
    port: int | None

    @property
    def implementation(self) -> str:
        return f"{self.server_type}/{self.impl_name}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def impl_key(self) -> str:
        return f"{self.name}.{self.server_type}.{self.impl_name}"


def resolve_entrypoint(server_type: str, impl_name: str, entry: str) -> Path:
    """`<server_type>/<impl_name>/<entry>` under this checkout, else the working directory, else the
    `NEMO_GYM_EXTRA_ROOTS`, else the other trees the server packages come from (our implementations
    win a name clash, as in the compat tier); an absolute entrypoint may live anywhere."""
    if Path(entry).is_absolute():
        return Path(entry)
    relative = Path(server_type) / impl_name / entry
    others = [*extra_roots(), *component_package_roots()]
    roots = list(dict.fromkeys([PROJECT_ROOT, Path.cwd().resolve(), *(r.resolve() for r in others)]))
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    return PROJECT_ROOT / relative


def _looks_like_instance(value: Any) -> bool:
    return isinstance(value, dict | DictConfig) and any(k in SERVER_TYPES for k in value)


def discover_instances(loaded: LoadedConfig) -> list[ServerInstance]:
    """Find and validate every server instance; raise ConfigError naming key and file."""
    cfg = loaded.config
    default_host = str(cfg.get("default_host") or DEFAULT_HOST)
    instances: list[ServerInstance] = []
    for name, value in cfg.items():
        name = str(name)
        if name in RESERVED_KEYS or not _looks_like_instance(value):
            continue
        source = loaded.source_of(name)
        if len(value) != 1:
            raise ConfigError(
                f"a server instance must have exactly one key, the server type (one of {', '.join(SERVER_TYPES)}); "
                f"found {sorted(str(k) for k in value)}",
                key=name,
                source=source,
            )
        server_type = str(next(iter(value)))
        impls = value[server_type]
        if not isinstance(impls, DictConfig) or len(impls) != 1:
            raise ConfigError(
                "must hold exactly one implementation name, e.g. '{vllm_model: {entrypoint: app.py}}'",
                key=f"{name}.{server_type}",
                source=loaded.source_of(f"{name}.{server_type}"),
            )
        impl_name = str(next(iter(impls)))
        impl = impls[impl_name]
        impl_key = f"{name}.{server_type}.{impl_name}"
        if not isinstance(impl, DictConfig):
            raise ConfigError(
                "must be a mapping with at least 'entrypoint'",
                key=impl_key,
                source=loaded.source_of(impl_key),
            )
        entry = impl.get("entrypoint")
        if not entry:
            raise ConfigError(
                "is missing; set it to the server's app.py",
                key=f"{impl_key}.entrypoint",
                source=loaded.source_of(impl_key),
            )
        entrypoint = resolve_entrypoint(server_type, impl_name, str(entry))
        if not entrypoint.is_file():
            raise ConfigError(
                f"points to {entrypoint}, which does not exist",
                key=f"{impl_key}.entrypoint",
                source=loaded.source_of(f"{impl_key}.entrypoint"),
            )
        port = impl.get("port")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigError(
                f"must be an integer port, got {port!r}",
                key=f"{impl_key}.port",
                source=loaded.source_of(f"{impl_key}.port"),
            )
        instances.append(
            ServerInstance(
                name=name,
                server_type=server_type,
                impl_name=impl_name,
                entrypoint=entrypoint,
                host=str(impl.get("host") or default_host),
                port=port,
            )
        )
    _check_references(loaded, instances)
    return instances


def _check_references(loaded: LoadedConfig, instances: list[ServerInstance]) -> None:
    by_type: dict[str, list[str]] = {t: [] for t in SERVER_TYPES}
    for inst in instances:
        by_type[inst.server_type].append(inst.name)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, DictConfig):
            keys = {str(k) for k in node}
            if keys == {"type", "name"} and node.get("type") in SERVER_TYPES:
                ref_type, ref_name = str(node.type), str(node.name)
                if ref_name not in by_type[ref_type]:
                    available = ", ".join(by_type[ref_type]) or "none"
                    raise ConfigError(
                        f"refers to {ref_type} instance '{ref_name}', which is not defined. "
                        f"Defined {ref_type} instances: {available}",
                        key=path,
                        source=loaded.source_of(path),
                    )
                return
            for key, child in node.items():
                walk(child, f"{path}.{key}")
        elif OmegaConf.is_list(node):
            for i, child in enumerate(node):
                walk(child, f"{path}[{i}]")

    for inst in instances:
        walk(loaded.config[inst.name], inst.name)


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def assign_ports(loaded: LoadedConfig, instances: list[ServerInstance]) -> list[ServerInstance]:
    """Give every instance without a port a free one, and write host/port into the config."""
    taken = {int(loaded.config.head_server.port)}
    taken.update(inst.port for inst in instances if inst.port)
    result = []
    for inst in instances:
        port = inst.port
        while port is None or (port in taken and port != inst.port):
            port = free_port(inst.host)
        taken.add(port)
        impl = loaded.config[inst.name][inst.server_type][inst.impl_name]
        impl.host = inst.host
        impl.port = port
        result.append(
            ServerInstance(inst.name, inst.server_type, inst.impl_name, inst.entrypoint, inst.host, port)
        )
    return result
