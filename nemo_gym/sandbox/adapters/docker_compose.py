"""`AsyncSandboxCompose`: the services of a Compose file, one sandbox each, started in
dependency order and owned together.

The file must already be resolved (prebuilt images, mappings rather than Compose's list
shorthands). Each service's Compose command runs as a background exec (the sandbox itself has no entrypoint, so providers keep it alive on
their own) whose exit status is recorded under `/tmp/<project>/<service>/`, which is
how `depends_on` conditions and healthchecks are judged. Anything the sandbox API cannot honour
is refused before a sandbox is created, naming the field: several services need a provider that
networks sandboxes (`SupportsSandboxNetwork`, e.g. docker), published ports need endpoints,
volumes need shared storage, `cap_add`/`shm_size` need runtime requirements.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import replace
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from nemo_gym.sandbox.api import AsyncSandbox
from nemo_gym.sandbox.providers import SandboxSpec, create_provider
from nemo_gym.sandbox.providers.base import (
    SupportsSandboxEndpoint,
    SupportsSandboxNetwork,
    SupportsSandboxRuntimeRequirements,
    SupportsSandboxSharedStorage,
)

TOP_LEVEL = {"name", "services", "networks", "volumes"}
SERVICE_FIELDS = {
    "image",
    "entrypoint",
    "command",
    "environment",
    "working_dir",
    "user",
    "depends_on",
    "healthcheck",
    "expose",
    "ports",
    "networks",
    "volumes",
    "cpus",
    "mem_limit",
    "labels",
    "restart",
    "network_mode",
    "cap_add",
    "shm_size",
    "x-sandbox",
}
HEALTH_FIELDS = {"test", "disable", "interval", "timeout", "retries", "start_period", "start_interval"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# The background exec that carries a service lives until stop(); providers read a None timeout
# as their default command timeout, so it gets an explicit, effectively unbounded one.
SERVICE_LIFETIME_S = 7 * 24 * 3600.0
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: str | int | float) -> float:
    """A Compose duration (`1m30s`, `500ms`, or a number of seconds)."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = _DURATION.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"not a Compose duration: {value!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _checked_services(doc: Any) -> Mapping[str, Any]:
    """The document's services, once its top level holds only what we honour."""
    if not isinstance(doc, Mapping):
        raise ValueError("a Compose file must be a mapping")
    unknown = set(doc) - TOP_LEVEL
    if unknown:
        raise ValueError(f"unsupported top-level Compose keys: {sorted(unknown)}")
    services = doc.get("services")
    if not isinstance(services, Mapping) or not services:
        raise ValueError("a Compose file needs a non-empty `services` mapping")
    networks = doc.get("networks") or {}
    if set(networks) - {"default"} or (networks.get("default") or {}).get("ipam"):
        raise ValueError("only the default Compose network is supported")
    return services


def _check_service_fields(where: str, name: Any, service: Any) -> None:
    if not isinstance(service, Mapping):
        raise ValueError(f"{where} must be a mapping")
    if not _NAME.fullmatch(str(name)):
        raise ValueError(f"{where}: invalid service name")
    unknown = set(service) - SERVICE_FIELDS
    if unknown:
        raise ValueError(f"{where}: unsupported fields {sorted(unknown)}")
    if not service.get("image"):
        raise ValueError(f"{where} needs a prebuilt `image`")
    if service.get("restart", "no") != "no":
        raise ValueError(f"{where}: restart policies are not supported")
    if service.get("network_mode"):
        raise ValueError(f"{where}: network_mode is not supported")
    if set(service.get("networks") or {}) - {"default"}:
        raise ValueError(f"{where}: only the default network is supported")


def _checked_dependencies(where: str, service: Mapping[str, Any], services: Mapping[str, Any]) -> set[str]:
    """The services this one depends on (after its x-sandbox options, which are checked first)."""
    options = service.get("x-sandbox") or {}
    if set(options) - {"hosts", "resolve_environment"} or options.get("hosts", []) != []:
        raise ValueError(f"{where}: x-sandbox takes only hosts: [] and resolve_environment")
    depends = service.get("depends_on") or {}
    if not isinstance(depends, Mapping):
        raise ValueError(f"{where}: depends_on must be a mapping of service to options")
    for dependency, options in depends.items():
        if dependency not in services:
            raise ValueError(f"{where}: depends on unknown service {dependency!r}")
        if (options or {}).get("condition", "service_started") not in CONDITIONS:
            raise ValueError(f"{where}: unknown depends_on condition {(options or {}).get('condition')!r}")
    return set(depends)


class AsyncSandboxCompose:
    """Services of a Compose file as sandboxes (see the module docstring). `service_specs`
    supplies each service's deployment settings; Compose fields override them."""

    def __init__(
        self,
        provider: Any,
        compose_file: str | Path | None,
        *,
        service_specs: Mapping[str, SandboxSpec] | None = None,
        timeout_s: float = 1200,
        poll_interval_s: float = 0.5,
        volume_init_image: str = "alpine:3.22",
        volume_sources: Mapping[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("Compose timeout_s and poll_interval_s must be > 0")
        self.provider = create_provider(provider) if isinstance(provider, Mapping) else provider
        self.compose_file = Path(compose_file).resolve() if compose_file is not None else None
        self.service_specs = dict(service_specs or {})
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.volume_init_image = volume_init_image
        self.volume_sources = dict(volume_sources or {})
        self.project = "compose-" + uuid.uuid4().hex
        self.document: dict[str, Any] = {}
        self.services: dict[str, AsyncSandbox] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, asyncio.Task] = {}
        self._started = self._ready = self._closed = False

    # -- checking the file ---------------------------------------------------------------------

    def _check(self) -> list[str]:
        """Refuse what cannot be honoured; return the start order."""
        services = _checked_services(self.document)
        graph: dict[str, set[str]] = {}
        for name, service in services.items():
            where = f"Compose service {name!r}"
            _check_service_fields(where, name, service)
            self._check_service_needs(where, service)
            graph[str(name)] = _checked_dependencies(where, service, services)
        try:
            order = list(TopologicalSorter(graph).static_order())
        except CycleError as exc:
            raise ValueError(f"Compose depends_on has a cycle: {exc.args[1]}") from exc
        if len(services) > 1:
            if not isinstance(self.provider, SupportsSandboxNetwork):
                raise ValueError(
                    f"several Compose services need a provider that networks sandboxes; "
                    f"{getattr(self.provider, 'name', type(self.provider).__name__)!r} does not (docker does)"
                )
            self.provider.validate_networking()
        return order

    def _check_service_needs(self, where: str, service: Mapping[str, Any]) -> None:
        """A service's volumes, ports and runtime requirements need the provider to support them."""
        if service.get("volumes") and not isinstance(self.provider, SupportsSandboxSharedStorage):
            raise ValueError(f"{where}: volumes need a provider with shared storage")
        if service.get("ports") and not isinstance(self.provider, SupportsSandboxEndpoint):
            raise ValueError(f"{where}: published ports need a provider with service endpoints")
        for port in service.get("ports") or []:
            if (
                not isinstance(port, Mapping)
                or port.get("published") not in (None, 0, "0")
                or port.get("host_ip")
            ):
                raise ValueError(f"{where}: ports must be {{target: N}} mappings without a fixed host port")
        if service.get("cap_add") or service.get("shm_size") is not None:
            if not isinstance(self.provider, SupportsSandboxRuntimeRequirements):
                raise ValueError(f"{where}: cap_add/shm_size need a provider with runtime requirements")

    def _plan(self, name: str, service: Mapping[str, Any]) -> dict[str, Any]:
        entrypoint, command = service.get("entrypoint") or [], service.get("command") or []
        argv = [
            *(shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint),
            *(shlex.split(command) if isinstance(command, str) else command),
        ]
        if not argv:
            raise ValueError(f"Compose service {name!r} needs an entrypoint or command")
        health = dict(service.get("healthcheck") or {})
        if set(health) - HEALTH_FIELDS:
            raise ValueError(
                f"Compose service {name!r}: unsupported healthcheck fields {sorted(set(health) - HEALTH_FIELDS)}"
            )
        test = ["NONE"] if health.get("disable") else health.get("test") or ["NONE"]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if test[0] not in ("CMD", "CMD-SHELL", "NONE") or (test[0] != "NONE" and len(test) < 2):
            raise ValueError(f"Compose service {name!r}: invalid healthcheck test {test!r}")
        base = self.service_specs.get(name, SandboxSpec(ttl_s=self.timeout_s + 3600))
        resources = dict(vars(base.resources))
        if "cpus" in service:
            resources["cpu"] = float(service["cpus"])
        if "mem_limit" in service:
            resources["memory_mib"] = -(-int(service["mem_limit"]) // (1 << 20))
        env = {str(k): str(v) for k, v in (service.get("environment") or {}).items() if v is not None}
        ports = [int(str(p).removesuffix("/tcp")) for p in service.get("expose") or []]
        ports += [int(p["target"]) for p in service.get("ports") or []]
        user = service.get("user") or None
        if isinstance(user, str) and user.isdecimal():
            user = int(user)
        return {
            "command": shlex.join(argv),
            "user": user,
            "health": {**health, "test": test},
            "runtime": f"/tmp/{self.project}/{name}",
            "env": {},
            "spec": replace(
                base,
                image=service["image"],
                env={**base.env, **env},
                workdir=service.get("working_dir", base.workdir),
                resources=resources,
                ports=tuple(dict.fromkeys(ports)),
                entrypoint=None,  # providers keep an entrypoint-less sandbox alive themselves
                metadata={
                    **base.metadata,
                    **{str(k): str(v) for k, v in (service.get("labels") or {}).items()},
                },
            ),
        }

    # -- running -------------------------------------------------------------------------------

    async def _exit_status(self, name: str) -> str | None:
        runtime = self._plans[name]["runtime"]
        done = await self.services[name].exec(f"cat {runtime}/exit 2>/dev/null || true")
        return (done.stdout or "").strip() or None

    async def _wait_for(self, name: str, condition: str) -> None:
        if condition == "service_started":
            return
        plan = self._plans[name]
        health, failures = plan["health"], 0
        started = plan.get("started_at", asyncio.get_running_loop().time())
        while True:
            status = await self._exit_status(name)
            if status is not None:
                if condition == "service_completed_successfully" and status == "0":
                    return
                log = await self.services[name].exec(f"tail -c 4096 {plan['runtime']}/log")
                raise RuntimeError(f"Compose service {name!r} exited with {status}: {log.stdout}")
            if condition == "service_completed_successfully":
                await asyncio.sleep(self.poll_interval_s)
                continue
            if health["test"][0] == "NONE":
                raise RuntimeError(f"Compose service {name!r} is awaited healthy but has no healthcheck")
            test = health["test"]
            probe = shlex.join(test[1:]) if test[0] == "CMD" else shlex.join(["/bin/sh", "-c", test[1]])
            result = await self.services[name].exec(
                probe,
                timeout_s=_seconds(health.get("timeout", "30s")),
                user=plan["user"],
                env=plan["env"] or None,
            )
            if result.return_code == 0:
                return
            in_start_period = asyncio.get_running_loop().time() - started < _seconds(
                health.get("start_period", 0)
            )
            if not in_start_period:
                failures += 1
                if failures >= int(health.get("retries", 3)):
                    raise RuntimeError(
                        f"Compose service {name!r} is unhealthy: {result.stderr or result.stdout}"
                    )
            pause = health.get("start_interval", "5s") if in_start_period else health.get("interval", "30s")
            await asyncio.sleep(_seconds(pause))

    async def _launch(self, name: str) -> None:
        """Start the service's command in the background and wait until it has begun."""
        plan, sandbox = self._plans[name], self.services[name]
        runtime = plan["runtime"]
        made = await sandbox.exec(f"mkdir -p {runtime} && chmod 777 {runtime}")
        if made.return_code:
            raise RuntimeError(f"cannot prepare Compose service {name!r}: {made.stderr or made.stdout}")
        script = f"touch {runtime}/started\n{plan['command']}\nprintf '%s' \"$?\" > {runtime}/exit\n"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.sh"
            path.write_text(script)
            await sandbox.upload(path, f"{runtime}/run.sh")
        # The exec stays open for the service's life: some providers end a command's background
        # processes when its shell exits.
        self._runs[name] = asyncio.create_task(
            sandbox.exec(
                f"sh {runtime}/run.sh >{runtime}/log 2>&1 </dev/null",
                user=plan["user"],
                env=plan["env"] or None,
                timeout_s=SERVICE_LIFETIME_S,
            )
        )
        while (await sandbox.exec(f"test -f {runtime}/started")).return_code != 0:
            if self._runs[name].done():
                outcome = self._runs[name].result()
                raise RuntimeError(f"Compose service {name!r} did not start: {outcome.stderr}")
            await asyncio.sleep(self.poll_interval_s)
        plan["started_at"] = asyncio.get_running_loop().time()

    async def _network(self) -> None:
        """Tell every service the others' addresses and resolve URL environment variables."""
        if len(self.services) < 2 or not isinstance(self.provider, SupportsSandboxNetwork):
            return
        hosts: dict[str, str] = {}
        for name, sandbox in self.services.items():
            address = await self.provider.network_address(sandbox._require_handle())
            aliases = ((self.document["services"][name].get("networks") or {}).get("default") or {}).get(
                "aliases", []
            )
            for alias in [name, *aliases]:
                hosts[alias] = address
        for name, sandbox in self.services.items():
            options = self.document["services"][name].get("x-sandbox") or {}
            plan = self._plans[name]
            for key in options.get("resolve_environment", []):
                url = urlsplit(plan["spec"].env.get(key, ""))
                if url.hostname not in hosts:
                    raise ValueError(f"Compose service {name!r}: {key} must be a URL naming a service")
                authority = hosts[url.hostname] + (f":{url.port}" if url.port else "")
                plan["env"][key] = url._replace(netloc=authority).geturl()
            if "hosts" not in options:
                await self.provider.set_hosts(sandbox._require_handle(), hosts)

    async def start(self) -> AsyncSandboxCompose:
        if self._started or self._closed:
            raise RuntimeError("this Compose collection was already started")
        if self.compose_file is None:
            raise ValueError("starting a Compose collection needs its file")
        self._started = True
        try:
            async with asyncio.timeout(self.timeout_s):
                self.document = yaml.safe_load(self.compose_file.read_text(encoding="utf-8"))
                order = self._check()
                self._plans = {name: self._plan(name, self.document["services"][name]) for name in order}
                for name in order:
                    self.services[name] = AsyncSandbox(
                        self.provider, self._plans[name]["spec"], owns_provider=False
                    )
                    await self.services[name].start()
                    service = self.document["services"][name]
                    if service.get("cap_add") or service.get("shm_size") is not None:
                        await self.provider.configure_runtime(
                            self.services[name]._require_handle(),
                            cap_add=tuple(service.get("cap_add") or ()),
                            shm_size=service.get("shm_size"),
                        )
                await self._network()
                for name in order:
                    for dependency, options in (
                        self.document["services"][name].get("depends_on") or {}
                    ).items():
                        await self._wait_for(dependency, (options or {}).get("condition", "service_started"))
                    await self._launch(name)
                for name in order:
                    if self._plans[name]["health"]["test"][0] != "NONE":
                        await self._wait_for(name, "service_healthy")
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        return self

    async def serialize(self, *, scope: str | None = None) -> dict[str, Any]:
        """Connection descriptors of every service (the creating process keeps them running)."""
        if not self._ready or self._closed:
            raise RuntimeError("only a running Compose collection can be serialized")
        return {
            "services": {
                name: await sandbox.serialize(scope=scope) for name, sandbox in self.services.items()
            }
        }

    @classmethod
    async def connect(cls, descriptor: Mapping[str, Any], *, provider: Any) -> AsyncSandboxCompose:
        if not isinstance(descriptor, Mapping) or set(descriptor) != {"services"}:
            raise ValueError("a Compose descriptor is {'services': {name: sandbox descriptor}}")
        members = descriptor["services"]
        if not isinstance(members, Mapping) or not members:
            raise ValueError("a Compose descriptor needs at least one service")
        collection = cls(provider, None)
        for name, member in members.items():
            collection.services[str(name)] = await AsyncSandbox.connect(
                member, provider=collection.provider, owns_provider=False
            )
        collection._started = collection._ready = True
        return collection

    async def stop(self) -> None:
        if self._closed:
            return
        for task in self._runs.values():
            task.cancel()
        await asyncio.gather(*self._runs.values(), return_exceptions=True)
        errors: list[Exception] = []
        for name, sandbox in reversed(list(self.services.items())):
            try:
                if name in self._plans and sandbox._handle is not None and not sandbox._stopped:
                    # Providers that share the host's filesystem (local) keep no container to delete.
                    await sandbox.exec(f"rm -rf /tmp/{self.project}", timeout_s=60)
                await sandbox.stop()
            except Exception as exc:
                errors.append(exc)
        try:
            await self.provider.aclose()
        except Exception as exc:
            errors.append(exc)
        self._closed = True
        if errors:
            raise ExceptionGroup("stopping the Compose services failed", errors)

    async def __aenter__(self) -> AsyncSandboxCompose:
        return self if self._ready and not self._closed else await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
