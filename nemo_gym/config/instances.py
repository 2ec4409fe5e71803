"""Server-instance discovery: which top-level keys are servers, and are their references sound."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loader import PROJECT_ROOT, RESERVED_KEYS, LoadedConfig
from nemo_gym.paths import component_package_roots, extra_roots

SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents", "environment_servers")
DEFAULT_HOST = "127.0.0.1"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
PORT_PROBES = 200
LISTEN_BACKLOG = 4096  # as the servers ask uvicorn for


def advertised_host(host: str | None, default_host: str | None = None) -> str:
    """The address others use to reach a server listening on `host`.

    A server bound to every interface (`0.0.0.0`) is reached at `default_host` when that is a
    real address (a node IP, for trainers on several nodes), else on loopback: a wildcard is
    where to listen, never where to connect.
    """
    if host and host not in WILDCARD_HOSTS:
        return host
    if default_host and default_host not in WILDCARD_HOSTS:
        return default_host
    return DEFAULT_HOST


def resolve_default_host(config: Any) -> str:
    """`default_host`, else this machine's hostname address under `use_absolute_ip`, else loopback."""
    configured = config.get("default_host")
    if configured:
        return str(configured)
    if config.get("use_absolute_ip"):
        return socket.gethostbyname(socket.gethostname())
    return DEFAULT_HOST


@dataclass(frozen=True)
class ServerInstance:
    """One process `ng_run` starts: `name: {server_type: {impl_name: {...}}}`."""

    name: str
    server_type: str
    impl_name: str
    entrypoint: Path
    host: str
    port: int | None
    default_host: str = DEFAULT_HOST

    @property
    def implementation(self) -> str:
        return f"{self.server_type}/{self.impl_name}"

    @property
    def url(self) -> str:
        return f"http://{advertised_host(self.host, self.default_host)}:{self.port}"

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
    default_host = resolve_default_host(cfg)
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
                default_host=default_host,
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


def listen_socket(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening TCP socket on (host, port), bound as uvicorn binds (SO_REUSEADDR); port 0
    picks a free one. Raises OSError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _listen_in_range(host: str, low: int, high: int, taken: Iterable[int]) -> socket.socket:
    excluded = set(taken)
    candidates = [p for p in range(low, high + 1) if p not in excluded]
    random.shuffle(candidates)
    for port in candidates[:PORT_PROBES]:
        try:
            return listen_socket(host, port)
        except OSError:
            continue
    raise ConfigError(
        f"no free port on {host} in [{low}, {high}] (tried {min(len(candidates), PORT_PROBES)}); "
        "widen port_range_low/port_range_high",
        key="port_range_low",
    )


def port_in_range(host: str, low: int, high: int, taken: Iterable[int]) -> int:
    """A port in [low, high] that is free on `host` now and not among `taken`."""
    with _listen_in_range(host, low, high, taken) as sock:
        return int(sock.getsockname()[1])


def assign_ports(
    loaded: LoadedConfig,
    instances: list[ServerInstance],
    port_range: tuple[int, int] | None = None,
    disallowed: Iterable[int] = (),
    listeners: dict[str, socket.socket] | None = None,
) -> list[ServerInstance]:
    """Give every instance without a port a free one (within `port_range` when given), and write
    host/port into the config.

    With `listeners`, each instance's port is bound and listening by the time it is chosen, and
    the socket is left there under the instance's name for the process that will serve it: a
    port merely probed free can be taken by anyone before the server binds it.
    """
    taken = {int(loaded.config.head_server.port), *disallowed}
    taken.update(inst.port for inst in instances if inst.port)
    result = []
    try:
        for inst in instances:
            port = _choose_port(inst, port_range, taken, listeners)
            taken.add(port)
            impl = loaded.config[inst.name][inst.server_type][inst.impl_name]
            impl.host = inst.host
            impl.port = port
            result.append(replace(inst, port=port))
    except BaseException:
        for sock in (listeners or {}).values():
            sock.close()
        raise
    return result


def _choose_port(
    inst: ServerInstance,
    port_range: tuple[int, int] | None,
    taken: set[int],
    listeners: dict[str, socket.socket] | None,
) -> int:
    port = inst.port
    if port is not None and listeners is not None:
        try:
            listeners[inst.name] = listen_socket(inst.host, port)
        except OSError as exc:
            raise ConfigError(
                f"server '{inst.name}' cannot listen on {inst.host}:{port}: {exc.strerror or exc}",
                key=f"{inst.name}.{inst.server_type}.{inst.impl_name}.port",
            ) from None
        return port
    if port is not None:
        return port
    while port is None or port in taken:
        if port_range is not None:
            sock = _listen_in_range(inst.host, port_range[0], port_range[1], taken)
        else:
            sock = listen_socket(inst.host, 0)
        port = int(sock.getsockname()[1])
        if listeners is not None and port not in taken:
            listeners[inst.name] = sock
        else:
            sock.close()
    return port
