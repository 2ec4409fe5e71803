"""Root conftest: hermetic config, a guard that no test module leaves a process behind, and the
fixtures of the upstream transports' tests."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["NEMO_GYM_ENV_YAML"] = "none"
# Every process this test run starts inherits this marker, so the guard can tell our orphans
# (re-parented to init) from another checkout's servers or a user's own ng_run on the machine.
RUN_MARKER = f"NEMO_GYM_TEST_RUN={os.getpid()}-{uuid.uuid4().hex}"
os.environ["NEMO_GYM_TEST_RUN"] = RUN_MARKER.split("=", 1)[1]
_MARKER_BYTES = RUN_MARKER.encode()


def _ours() -> set[int]:
    """This run's descendants, plus orphans that carry this run's marker in their environment."""
    from nemo_gym.testing.processes import children_of, pid_alive

    pids = children_of(os.getpid())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if _MARKER_BYTES in environ.split(b"\0"):
                pids.add(int(entry.name))
    return {p for p in pids if pid_alive(p)}


@pytest.fixture(scope="module", autouse=True)
def no_leftover_processes() -> Iterator[None]:
    before = _ours()
    yield
    deadline = time.monotonic() + 10
    while True:
        left = _ours() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind by this module: {sorted(left)}"


# ---- scripted raw servers for the upstream transports' tests (nemo_gym.testing.raw_server) ----


@pytest.fixture
async def server_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await server_factory(handler[, ssl_context])`: a started RawServer, stopped after the test."""
    from nemo_gym.testing.raw_server import RawServer

    servers: list[RawServer] = []

    async def make(handler: Any, ssl_context: Any = None) -> RawServer:
        srv = RawServer(handler)
        await srv.start(ssl_context)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    from nemo_gym.testing.raw_server import make_cert

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    return make_cert(tmp_path, "127.0.0.1", ip_san=True)


@pytest.fixture
async def proxy() -> AsyncIterator[Any]:
    """A started forward proxy (CONNECT and plain HTTP)."""
    from nemo_gym.testing.raw_server import ConnectProxy

    p = ConnectProxy()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aiohttp transport honours proxy variables: the machine's own must not reroute tests."""
    from nemo_gym.testing.raw_server import PROXY_VARIABLES

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
