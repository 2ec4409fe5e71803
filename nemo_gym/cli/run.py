"""`ng_run`: start the head server and every configured server, then supervise them."""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from omegaconf import OmegaConf
from pydantic import Field

from nemo_gym.cli.common import format_table, run_cli
from nemo_gym.cli.keys import ConfigCommandKeys, check_command_line, validate_keys
from nemo_gym.config import assign_ports, discover_instances, load_config
from nemo_gym.config.redact import SecretScrubber, secret_values
from nemo_gym.runner.head_server import HeadServerThread, build_head_app
from nemo_gym.runner.processes import ChildProcess, stop_all
from nemo_gym.runner.ray_cluster import RAY_ADDRESS_KEY, RayCluster, server_needs_ray
from nemo_gym.runner.upstream_check import check_upstreams
from nemo_gym.server.context import write_runtime_file

COMMAND = "ng_run"
SUMMARY = "start the head server and every configured server instance, then supervise them."


class RunKeys(ConfigCommandKeys):
    """ng_run's own keys; server instances and env.yaml values are config, not flags."""

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


class _Stop(Exception):
    pass


def _wait_ready(children: list[ChildProcess], timeout: float) -> ChildProcess | None:
    """Poll every child's /health; return the child that failed (died or timed out), else None."""
    deadline = time.monotonic() + timeout
    pending = list(children)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for child in list(pending):
                if child.poll() is not None:
                    child.status = f"exited ({child.poll()})"
                    return child
                try:
                    if client.get(child.instance.url + "/health").status_code == 200:
                        child.status = "ready"
                        pending.remove(child)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                for child in pending:
                    child.status = "timed out"
                return pending[0]
            if pending:
                time.sleep(0.1)
    return None


def main(args: list[str]) -> int:
    check_command_line(COMMAND, RunKeys, args)
    loaded = load_config(args)
    keys = validate_keys(RunKeys, OmegaConf.to_container(loaded.config, resolve=True))  # type: ignore[arg-type]
    assert isinstance(keys, RunKeys)
    startup_timeout = keys.startup_timeout
    grace = keys.shutdown_grace
    log_dir = Path(keys.log_dir) if keys.log_dir else None
    instances = assign_ports(loaded, discover_instances(loaded))
    if not instances:
        print('config error: no server instances found; pass "+config_paths=[...]"', file=sys.stderr)
        return 2

    ray_cluster = RayCluster()
    needing_ray = [inst.name for inst in instances if server_needs_ray(inst.entrypoint)]
    if needing_ray:
        configured = loaded.config.get(RAY_ADDRESS_KEY)
        try:
            address = ray_cluster.ensure(str(configured) if configured else None)
        except RuntimeError as exc:
            print(f"error: {exc} (needed by: {', '.join(needing_ray)})", file=sys.stderr)
            return 2
        verb = "Joined" if configured else "Started"
        print(f"{verb} the Ray cluster at {address} for: {', '.join(needing_ray)}", flush=True)
        OmegaConf.update(loaded.config, RAY_ADDRESS_KEY, address, force_add=True)

    session_secret = keys.session_secret or secrets.token_hex(32)
    config_file = write_runtime_file(loaded, session_secret)
    plain: dict[str, Any] = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    scrubber = SecretScrubber(secret_values(plain))
    children = [ChildProcess(inst, config_file, log_dir=log_dir) for inst in instances]

    def instance_rows() -> list[dict[str, Any]]:
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
            for c in children
        ]

    head_cfg = loaded.config.head_server
    head = HeadServerThread(build_head_app(plain, instance_rows), str(head_cfg.host), int(head_cfg.port))

    def on_signal(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        try:
            head.start()
        except RuntimeError as exc:
            print(f"error: {exc} at {head_cfg.host}:{head_cfg.port}", file=sys.stderr)
            return 1
        print(f"Head server at http://{head_cfg.host}:{head_cfg.port}", flush=True)
        for child in children:
            child.start()
            if child.log_path:
                print(f"{child.name}: logging to {child.log_path}", flush=True)
        failed = _wait_ready(children, startup_timeout)
        if failed is not None:
            reason = (
                "did not become healthy in time"
                if failed.status == "timed out"
                else f"exited with code {failed.poll()}"
            )
            print(
                f"\nerror: server '{failed.name}' ({failed.instance.implementation}) {reason} during startup. "
                f"Last log lines:\n{scrubber.scrub(failed.log_tail())}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        rows = [
            [c.name, c.instance.server_type, c.instance.impl_name, c.instance.url, str(c.pid)]
            for c in children
        ]
        print(format_table(["name", "type", "implementation", "url", "pid"], rows), flush=True)
        print(f"All {len(children)} servers ready", flush=True)
        problems = check_upstreams(plain, instances)
        for problem in problems:
            label = "error" if keys.require_upstreams else "WARNING"
            print(f"{label}: {scrubber.scrub(problem.line())}", file=sys.stderr, flush=True)
        if problems and keys.require_upstreams:
            print(
                f"error: {len(problems)} upstream(s) not usable and +require_upstreams=true; shutting down.",
                file=sys.stderr,
                flush=True,
            )
            return 1
        while True:
            for child in children:
                code = child.poll()
                if code is not None:
                    child.status = f"exited ({code})"
                    print(
                        f"\nerror: server '{child.name}' ({child.instance.implementation}, pid {child.pid}) exited "
                        f"with code {code}. Last log lines:\n{scrubber.scrub(child.log_tail())}\nShutting down.",
                        file=sys.stderr,
                        flush=True,
                    )
                    exit_code = 1
                    raise _Stop("child exited")
            time.sleep(0.2)
    except _Stop as stop:
        if exit_code == 0:
            print(f"\nReceived {stop}; stopping {len(children)} servers...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(children, grace=grace)
        head.stop()
        ray_cluster.stop()
        config_file.unlink(missing_ok=True)
    print("All servers stopped.", flush=True)
    return exit_code


def cli() -> None:
    run_cli(main, command=COMMAND, summary=SUMMARY, keys=RunKeys)


if __name__ == "__main__":
    cli()
