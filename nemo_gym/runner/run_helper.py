"""`RunHelper`: start the head server and every configured server, watch them, stop them.

This is the one way servers start: `ng_run` is a thin command over it, and RL trainers (NeMo RL,
veRL, TRL) drive it in-process, as they drive NeMo Gym's class of the same name. The head server
runs in the caller's process (a thread); every other server is a child process in its own
process group.

Children are spawned from one long-lived thread that this helper owns. A child learns that its
parent is gone through PR_SET_PDEATHSIG, which the kernel ties to the *thread* that forked it: a
trainer that called `start()` from a short-lived thread (a Ray actor method, `asyncio.to_thread`)
would otherwise see its servers killed when that thread ends.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from omegaconf import OmegaConf
from pydantic import Field

from nemo_gym.config import ServerInstance, assign_ports, discover_instances, load_config
from nemo_gym.config.command_keys import ConfigCommandKeys, check_top_level_keys, key_names
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.global_keys import GlobalKeys, validate_global_keys
from nemo_gym.config.loader import INITIAL_SOURCE, LoadedConfig
from nemo_gym.config.redact import SecretScrubber, secret_values
from nemo_gym.exceptions import NemoGymError
from nemo_gym.http.server_client import close_shared_client_now
from nemo_gym.ray_support import RAY_ADDRESS_KEY, server_needs_ray
from nemo_gym.runner.head_server import HeadServerThread, build_head_app
from nemo_gym.runner.processes import ChildProcess, stop_all
from nemo_gym.runner.ray_cluster import RayCluster
from nemo_gym.runner.upstream_check import UpstreamProblem, check_upstreams
from nemo_gym.server.context import write_runtime_file

logger = logging.getLogger("nemo_gym.run")
HEALTH_POLL_SECONDS = 0.1


class RunConfig(ConfigCommandKeys):
    """`ng_run`'s own keys (RunHelper reads the same keys from the global config)."""

    startup_timeout: float = Field(180.0, gt=0, description="Seconds every server gets to answer /health.")
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds between SIGINT and SIGKILL at shutdown.")
    log_dir: str | None = Field(
        None, description="Write each server's output to <log_dir>/<name>.log instead of prefixed stdout."
    )
    session_secret: str | None = Field(
        None, description="Secret signing session cookies (default: random per run)."
    )
    require_upstreams: bool = Field(
        False, description="Fail the start when a model server's upstream is unreachable or lacks the model."
    )
    ray_head_node_address: str | None = Field(
        None,
        description="Ray cluster to join (host:port) for servers that use Ray; unset: start a local one when needed.",
    )


class ServerStartError(NemoGymError, RuntimeError):
    """A server did not come up (it exited, or missed its deadline); the message names it."""


class ServerDiedError(NemoGymError, RuntimeError):
    """A server (or the head server) stopped while it should be serving; the message names it."""


@dataclass
class StartedRun:
    """What `start()` resolved: the config as the servers see it, and where each one listens."""

    loaded: LoadedConfig
    plain: dict[str, Any]
    keys: RunConfig
    global_keys: GlobalKeys
    instances: list[ServerInstance]
    # Each server's bound listening socket, by instance name (none in a dry run).
    listeners: dict[str, socket.socket] = field(default_factory=dict)


def resolve_run(parser_config: Any = None, args: list[str] | None = None) -> StartedRun:
    """Load and check everything `start()` needs, without starting anything (dry runs use it too)."""
    from nemo_gym.global_config import GlobalConfigDictParserConfig

    arguments = (parser_config or GlobalConfigDictParserConfig()).loader_arguments(args)
    initial = arguments.initial
    loaded = load_config(arguments.args, initial=initial, env_yaml=arguments.env_yaml)
    if initial is not None:
        names = [str(k) for k in initial]
        # Names the config files define or anything references are variables, whoever sets them.
        from_files = {
            k for k in map(str, loaded.config) if loaded.origins.get(k) not in (INITIAL_SOURCE, None)
        }
        defined = from_files | _referenced(loaded.config)
        check_top_level_keys(names, key_names(RunConfig), defined, owner="RunHelper", source=INITIAL_SOURCE)
    plain: dict[str, Any] = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    global_keys = validate_global_keys(plain, loaded.origins)
    keys = _run_config(plain, loaded)
    port_range = None
    if global_keys.port_range_low is not None and global_keys.port_range_high is not None:
        port_range = (global_keys.port_range_low, global_keys.port_range_high)
    listeners: dict[str, socket.socket] = {}
    instances = assign_ports(
        loaded,
        discover_instances(loaded),
        port_range,
        global_keys.disallowed_ports,
        None if global_keys.dry_run else listeners,
    )
    try:
        if not instances:
            raise ConfigError('no server instances found; pass "+config_paths=[...]"', key="config_paths")
        _give_agents_the_verification_keys(loaded, instances, global_keys)
        plain = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    except BaseException:
        for sock in listeners.values():
            sock.close()
        raise
    return StartedRun(loaded, plain, keys, global_keys, instances, listeners)


def _give_agents_the_verification_keys(
    loaded: LoadedConfig, instances: list[ServerInstance], keys: GlobalKeys
) -> None:
    """Top-level `skip_verification(_reward)` reach every agent that does not set its own."""
    for name in ("skip_verification", "skip_verification_reward"):
        value = getattr(keys, name)
        if value is None:
            continue
        for inst in instances:
            if inst.server_type == "responses_api_agents":
                block = loaded.config[inst.name][inst.server_type][inst.impl_name]
                if name not in block:
                    block[name] = value


def _referenced(config: Any) -> set[str]:
    from nemo_gym.config.loader import _referenced_names

    names: set[str] = set()
    _referenced_names(OmegaConf.to_container(config, resolve=False), names)
    return names


def _run_config(plain: dict[str, Any], loaded: LoadedConfig) -> RunConfig:
    from pydantic import ValidationError

    mine = {k: v for k, v in plain.items() if k in set(key_names(RunConfig))}
    try:
        return RunConfig.model_validate(mine)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{first['msg']} (got {first.get('input')!r})", key=key, source=loaded.source_of(key)
        ) from None


class RunHelper:
    """Starts, watches and stops one set of servers. Safe to `shutdown()` from any thread, twice."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._lock = threading.RLock()
        self._children: list[ChildProcess] = []
        self._head: HeadServerThread | None = None
        self._ray = RayCluster()
        self._config_file: Path | None = None
        self._spawner: ThreadPoolExecutor | None = None
        self._scrubber = SecretScrubber(set())
        self._run: StartedRun | None = None
        self._stopped = False

    # --- what callers read ----------------------------------------------------------------
    @property
    def global_config(self) -> dict[str, Any]:
        """The resolved config the servers run with (ports filled in); secrets included."""
        if self._run is None:
            raise RuntimeError("RunHelper.start() has not run")
        return self._run.plain

    @property
    def head_server_url(self) -> str:
        from nemo_gym.config.instances import advertised_host

        head = self.global_config["head_server"]
        return (
            f"http://{advertised_host(head['host'], self.global_config.get('default_host'))}:{head['port']}"
        )

    def server_instances(self) -> list[dict[str, Any]]:
        """Every server's name, type, implementation, address, pid and status (as the head serves it)."""
        return [
            {
                "name": c.name,
                "server_type": c.instance.server_type,
                "implementation": c.instance.implementation,
                "host": c.instance.host,
                "port": c.instance.port,
                "url": c.instance.url,
                "pid": c.pid,
                "status": c.status,
            }
            for c in self._children
        ]

    def _print(self, text: str, *, err: bool = False) -> None:
        stream = self._out or (sys.stderr if err else sys.stdout)
        print(text, file=stream, flush=True)

    # --- start ----------------------------------------------------------------------------------
    def start(self, global_config_dict_parser_config: Any = None, *, args: list[str] | None = None) -> None:
        """Start the head server and every server; return once each answers `/health`.

        Anything that fails (a server that exits or misses its deadline, a bad key, Ctrl+C) stops
        what was started before the error reaches the caller.
        """
        with self._lock:
            if self._run is not None:
                raise RuntimeError("this RunHelper already started its servers; use a new one")
            self._stopped = False
        try:
            self._start(resolve_run(global_config_dict_parser_config, args))
        except BaseException:
            self.shutdown()
            raise

    def _start(self, run: StartedRun) -> None:
        self._run = run
        keys, gkeys = run.keys, run.global_keys
        self._scrubber = SecretScrubber(secret_values(run.plain))
        if gkeys.dry_run:
            self._children = [ChildProcess(inst, Path(os.devnull)) for inst in run.instances]
            self._print(self.instance_table())
            self._print(f"Dry run: {len(run.instances)} servers resolved; none started.")
            return
        self._join_ray(run)
        secret = keys.session_secret or secrets.token_hex(32)
        self._config_file = write_runtime_file(run.loaded, secret)
        log_dir = keys.log_dir or gkeys.nemo_gym_log_dir
        env = {"HF_TOKEN": gkeys.hf_token} if gkeys.hf_token else {}
        self._children = [
            ChildProcess(
                inst,
                self._config_file,
                log_dir=Path(log_dir) if log_dir else None,
                extra_env=env,
                listener=run.listeners.pop(inst.name, None),
            )
            for inst in run.instances
        ]
        head_cfg = run.plain["head_server"]
        self._head = HeadServerThread(
            build_head_app(run.plain, self.server_instances), str(head_cfg["host"]), int(head_cfg["port"])
        )
        try:
            self._head.start()
        except RuntimeError as exc:
            raise ServerStartError(f"head server: {exc} at {head_cfg['host']}:{head_cfg['port']}") from None
        self._print(f"Head server at http://{head_cfg['host']}:{head_cfg['port']}")
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemo-gym-spawner")
        for child in self._children:
            self._spawner.submit(child.start).result()
            if child.log_path:
                self._print(f"{child.name}: logging to {child.log_path}")
        atexit.register(self.shutdown)
        timeout = gkeys.server_spinup_timeout_seconds or keys.startup_timeout
        self.wait_for_spinup(timeout)
        self._print(self.instance_table())
        self._print(f"All {len(self._children)} servers ready")
        self._check_upstreams(run)
        self._adopt_config(run)

    def _join_ray(self, run: StartedRun) -> None:
        needing = [inst.name for inst in run.instances if server_needs_ray(inst.entrypoint)]
        configured = run.keys.ray_head_node_address or run.global_keys.ray_head_node_address
        if not needing and not configured:
            return
        try:
            address = self._ray.ensure(str(configured) if configured else None)
        except RuntimeError as exc:
            if not needing:
                self._print(f"note: {RAY_ADDRESS_KEY} is set but not joined: {exc}", err=True)
                return
            raise ServerStartError(f"{exc} (needed by: {', '.join(needing)})") from None
        verb = "Joined" if configured else "Started"
        users = f" for: {', '.join(needing)}" if needing else ""
        self._print(f"{verb} the Ray cluster at {address}{users}")
        OmegaConf.update(run.loaded.config, RAY_ADDRESS_KEY, address, force_add=True)
        run.plain[RAY_ADDRESS_KEY] = address

    def wait_for_spinup(self, timeout: float | None = None) -> None:
        """Block until every server answers `/health`; raise ServerStartError naming one that cannot.

        `timeout` <= 0 waits without a deadline, as NeMo Gym's `server_spinup_timeout_seconds` does.
        """
        if timeout is None:
            timeout = self._run.keys.startup_timeout if self._run else 180.0
        deadline = time.monotonic() + timeout if timeout > 0 else None
        pending = [c for c in self._children if c.status != "ready"]
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for child in list(pending):
                    code = child.poll()
                    if code is not None:
                        child.status = f"exited ({code})"
                        raise ServerStartError(self._death_message(child, "during startup"))
                    try:
                        if client.get(child.instance.url + "/health").status_code == 200:
                            child.status = "ready"
                            pending.remove(child)
                    except httpx.HTTPError:
                        pass
                if pending and deadline is not None and time.monotonic() > deadline:
                    for child in pending:
                        child.status = "timed out"
                    first = pending[0]
                    raise ServerStartError(
                        f"server '{first.name}' ({first.instance.implementation}) did not become healthy "
                        f"within {timeout:g} s during startup. Last log lines:\n"
                        f"{self._scrubber.scrub(first.log_tail())}"
                    )
                if pending:
                    time.sleep(HEALTH_POLL_SECONDS)

    def _check_upstreams(self, run: StartedRun) -> None:
        wait = run.global_keys.model_endpoint_readiness_timeout_seconds
        problems = check_upstreams(run.plain, run.instances)
        if wait is not None and wait > 0:
            deadline = time.monotonic() + wait
            while _unreachable(problems) and time.monotonic() < deadline:
                time.sleep(1.0)
                problems = check_upstreams(run.plain, run.instances)
            unreachable = _unreachable(problems)
            if unreachable:
                listed = "; ".join(self._scrubber.scrub(p.line()) for p in unreachable)
                raise ConfigError(
                    f"{len(unreachable)} model upstream(s) never accepted a connection within {wait:g} s: "
                    f"{listed}",
                    key="model_endpoint_readiness_timeout_seconds",
                    source=run.loaded.source_of("model_endpoint_readiness_timeout_seconds"),
                )
        strict = run.keys.require_upstreams
        for problem in problems:
            label = "error" if strict else "WARNING"
            self._print(f"{label}: {self._scrubber.scrub(problem.line())}", err=True)
        if problems and strict:
            raise ServerStartError(
                f"{len(problems)} upstream(s) not usable and +require_upstreams=true; shutting down."
            )

    def _adopt_config(self, run: StartedRun) -> None:
        """This process now runs with the servers' config: `get_global_config_dict()` returns it
        and this process's ServerClient pool takes its size from it."""
        from nemo_gym import global_config
        from nemo_gym.http.server_client import PoolSettings, configure_pool

        global_config._GLOBAL_CONFIG_DICT = OmegaConf.create(run.plain)
        configure_pool(PoolSettings.from_config(run.plain))

    # --- watch ----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Raise ServerDiedError naming the first server (or the head server) that stopped."""
        if self._run is None:
            raise RuntimeError("RunHelper.start() has not run")
        if self._run.global_keys.dry_run:
            return
        if self._stopped:
            raise ServerDiedError("the servers were shut down")
        if self._head is None or not self._head.thread.is_alive():
            raise ServerDiedError("the head server stopped")
        for child in self._children:
            code = child.poll()
            if code is not None:
                child.status = f"exited ({code})"
                raise ServerDiedError(self._death_message(child, "while running"))

    def _death_message(self, child: ChildProcess, when: str) -> str:
        where = (
            child.instance.implementation
            if when == "during startup"
            else f"{child.instance.implementation}, pid {child.pid}"
        )
        return (
            f"server '{child.name}' ({where}) exited with code {child.poll()} {when}. "
            f"Last log lines:\n{self._scrubber.scrub(child.log_tail())}"
        )

    def run_forever(self, interval: float = 0.2) -> None:
        """Watch the servers until one dies (ServerDiedError) or the caller is interrupted."""
        try:
            while True:
                self.poll()
                time.sleep(interval)
        finally:
            self.shutdown()

    def instance_table(self) -> str:
        from nemo_gym.cli.common import format_table

        rows = [
            [c.name, c.instance.server_type, c.instance.impl_name, c.instance.url, str(c.pid or "-")]
            for c in self._children
        ]
        return format_table(["name", "type", "implementation", "url", "pid"], rows)

    def display_server_instance_info(self) -> None:
        self._print(self.instance_table())

    # --- stop -----------------------------------------------------------------------------------
    def shutdown(self, grace: float | None = None) -> None:
        """Stop every server (SIGINT, then SIGKILL after the grace period) and the head server.

        Needs no event loop and works from any thread; a second call does nothing.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self.shutdown)
        if grace is None:
            grace = self._run.keys.shutdown_grace if self._run else 10.0
        stop_all([c for c in self._children if c.proc is not None], grace=grace)
        for child in self._children:
            child.release_listener()
        if self._run is not None:
            for sock in self._run.listeners.values():
                sock.close()
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)
            self._spawner = None
        if self._head is not None:
            self._head.stop()
        close_shared_client_now()
        self._ray.stop()
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)


def _unreachable(problems: list[UpstreamProblem]) -> list[UpstreamProblem]:
    return [p for p in problems if p.reason.startswith("is unreachable")]
