"""Ports are held from the moment they are chosen: `assign_ports` binds them, the child server
serves the socket it is handed, and a port someone else holds is a config error before start."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest

from nemo_gym.config import ConfigError, assign_ports, discover_instances, load_config
from nemo_gym.config.instances import listen_socket
from nemo_gym.runner.run_helper import RunHelper, resolve_run
from nemo_gym.server.listen_socket import LISTEN_FD_VAR, inherited_listener


def _two_servers(path: Path, fixed_port: int | None = None) -> Path:
    fixed = f"\n      port: {fixed_port}" if fixed_port else ""
    path.write_text(
        f"one:\n  resources_servers:\n    simple_weather:\n      entrypoint: app.py\n      domain: other{fixed}\n"
        "two:\n  resources_servers:\n    simple_weather:\n      entrypoint: app.py\n      domain: other\n"
    )
    return path


def _connectable(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_chosen_ports_are_listening_until_handed_over(tmp_path: Path) -> None:
    config = _two_servers(tmp_path / "servers.yaml")
    loaded = load_config([f"+config_paths=[{config}]"])
    listeners: dict[str, socket.socket] = {}
    instances = assign_ports(loaded, discover_instances(loaded), (20000, 32000), listeners=listeners)
    try:
        assert sorted(listeners) == ["one", "two"]
        for inst in instances:
            assert listeners[inst.name].getsockname() == ("127.0.0.1", inst.port)
            assert 20000 <= inst.port <= 32000
            assert _connectable(inst.port)  # held: nobody else can bind it now
            with pytest.raises(OSError):
                listen_socket("127.0.0.1", inst.port)
    finally:
        for sock in listeners.values():
            sock.close()


def test_a_configured_port_someone_holds_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with listen_socket("127.0.0.1", 0) as held:
        port = held.getsockname()[1]
        config = _two_servers(tmp_path / "servers.yaml", fixed_port=port)
        with pytest.raises(ConfigError) as raised:
            resolve_run(args=[f"+config_paths=[{config}]"])
    assert raised.value.key == "one.resources_servers.simple_weather.port"
    assert f"server 'one' cannot listen on 127.0.0.1:{port}: Address already in use" in str(raised.value)


def test_a_dry_run_holds_no_port(tmp_path: Path) -> None:
    config = _two_servers(tmp_path / "servers.yaml")
    run = resolve_run(args=[f"+config_paths=[{config}]", "+dry_run=true"])
    assert run.listeners == {}
    assert all(not _connectable(inst.port) for inst in run.instances)


def test_the_inherited_socket_is_taken_once_and_must_match_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    monkeypatch.setenv(LISTEN_FD_VAR, str(os.dup(sock.fileno())))
    sock.close()
    inherited = inherited_listener(port)
    assert inherited is not None and inherited.getsockname() == ("127.0.0.1", port)
    assert not inherited.get_inheritable()
    assert LISTEN_FD_VAR not in os.environ
    assert inherited_listener(port) is None  # consumed: a process this server starts binds by itself
    monkeypatch.setenv(LISTEN_FD_VAR, str(os.dup(inherited.fileno())))
    with pytest.raises(RuntimeError, match=f"listens on port {port}, not {port + 1}"):
        inherited_listener(port + 1)
    inherited.close()


def test_servers_serve_the_sockets_they_are_handed_and_shutdown_frees_them(tmp_path: Path) -> None:
    config = _two_servers(tmp_path / "servers.yaml")
    helper = RunHelper()
    helper.start(args=[f"+config_paths=[{config}]", "+head_server={host: 127.0.0.1, port: 0}"])
    try:
        servers = {s["name"]: s for s in helper.server_instances()}
        for name in ("one", "two"):
            url = f"http://127.0.0.1:{servers[name]['port']}/health"
            assert httpx.get(url, timeout=10).json() == {"status": "ok"}
            # the child's socket is the one the parent bound: the parent keeps no copy
            assert all(c.listener is None for c in helper._children)
    finally:
        helper.shutdown()
    for server in servers.values():
        listen_socket("127.0.0.1", server["port"]).close()  # free again
