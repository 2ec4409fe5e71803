"""The pool's retry rules against scripted raw upstreams on 127.0.0.1, with exact request counts:
the keep-alive race is re-sent at once and only once, any other close before an answer is an
upstream failure (suspected, backed off, bounded by max_retries), and what may have run is never
re-sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from nemo_gym.exceptions import UpstreamError
from nemo_gym.testing.raw_server import RawServer, reply
from nemo_gym.upstream import UpstreamConfig, UpstreamPool


def scripted(plan: Callable[[int, int], str]) -> Callable:
    """A keep-alive upstream: for the n-th request overall on the c-th connection, `plan(n, c)`
    says what to do: "ok", "close" (close at once, no answer), "late-close" (close after
    0.3 s), "503", "stall" (never answer) or "cut" (half an answer, then close)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        connection = srv.connections
        while (await srv.read_request(reader)) is not None:
            action = plan(len(srv.requests), connection)
            if action == "ok":
                writer.write(reply(b'{"ok":%d}' % len(srv.requests)))
            elif action == "503":
                writer.write(reply(b'{"error":{"message":"busy"}}', status="503 Service Unavailable"))
            elif action == "close":
                return
            elif action == "late-close":
                await asyncio.sleep(0.3)
                return
            elif action == "stall":
                await asyncio.sleep(30)
                return
            elif action == "cut":
                writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{"half":')
                await writer.drain()
                return
            await writer.drain()

    return handler


def pool_for(*servers: RawServer, max_retries: int = 3, read: float | None = None) -> UpstreamPool:
    config = UpstreamConfig(
        base_url=[f"{s.url}/v1" for s in servers],
        api_key="EMPTY",
        max_retries=max_retries,
        retry_backoff=0.01,
        timeouts={"connect": 2.0, "read": read},
    )
    return UpstreamPool(config, probe_interval=30.0)


async def test_reused_connection_closed_at_once_is_resent_once_on_the_same_upstream(server_factory) -> None:
    srv = await server_factory(scripted(lambda n, c: "close" if n == 2 else "ok"))
    pool = pool_for(srv)
    await pool.start()
    assert (await pool.post("/x", {}))[0] == {"ok": 1}
    assert (await pool.post("/x", {}))[0] == {"ok": 3}  # request 2 dropped, re-sent as request 3
    assert len(srv.requests) == 3 and srv.connections == 2
    assert pool.retries == {"stale_connection": 1}
    assert pool.router.down == set()  # the race is not a sign the upstream is failing
    await pool.aclose()


async def test_fresh_connection_closed_without_answer_is_an_upstream_failure(server_factory) -> None:
    srv = await server_factory(scripted(lambda n, c: "close"))
    pool = pool_for(srv, max_retries=2)
    await pool.start()
    with pytest.raises(UpstreamError) as caught:
        await pool.post("/x", {})
    assert caught.value.status == 502
    assert caught.value.message.startswith(f"upstream {srv.url}/v1 closed the connection without answering (")
    assert caught.value.message.endswith(" after 3 attempts")
    assert len(srv.requests) == 3  # 1 + max_retries, never more
    assert pool.retries == {"connection_dropped": 2}
    assert pool.router.down == {0}  # suspect: the health prober decides when it gets traffic again
    await pool.aclose()


async def test_reused_connection_closed_after_working_on_it_is_not_the_race(server_factory) -> None:
    srv = await server_factory(scripted(lambda n, c: "late-close" if n == 2 else "ok"))
    pool = pool_for(srv)
    await pool.start()
    await pool.post("/x", {})
    assert (await pool.post("/x", {}))[0] == {"ok": 3}
    assert len(srv.requests) == 3
    assert pool.retries == {"connection_dropped": 1}
    assert pool.router.down == {0}
    await pool.aclose()


async def test_the_race_twice_in_a_row_counts_as_a_failure(server_factory) -> None:
    # Request 2 hits the race on the reused connection; its re-send (request 3, on a new
    # connection) is closed too: that is no longer the race.
    srv = await server_factory(scripted(lambda n, c: "close" if n in (2, 3) else "ok"))
    pool = pool_for(srv)
    await pool.start()
    await pool.post("/x", {})
    assert (await pool.post("/x", {}))[0] == {"ok": 4}
    assert len(srv.requests) == 4
    assert pool.retries == {"stale_connection": 1, "connection_dropped": 1}
    await pool.aclose()


async def test_a_dropped_session_moves_to_another_upstream_as_a_new_pin(server_factory) -> None:
    bad = await server_factory(scripted(lambda n, c: "close"))
    good = await server_factory(scripted(lambda n, c: "ok"))
    pool = pool_for(bad, good)
    await pool.start()
    assert pool.router.route("s1") == 0
    data, used = await pool.post("/x", {}, session_id="s1")
    assert data == {"ok": 1} and used.index == 1
    assert len(bad.requests) == 1 and len(good.requests) == 1
    assert pool.router.route("s1") == 1  # pinned to the survivor from now on
    assert pool.retries == {"connection_dropped": 1}
    await pool.aclose()


async def test_connect_refused_goes_to_another_upstream(server_factory) -> None:
    dead = RawServer(scripted(lambda n, c: "ok"))
    await dead.start()
    await dead.stop()
    await asyncio.sleep(0.05)
    good = await server_factory(scripted(lambda n, c: "ok"))
    pool = pool_for(dead, good)
    await pool.start()
    data, used = await pool.post("/x", {}, session_id="s1")
    assert data == {"ok": 1} and used.index == 1
    assert pool.retries == {"connect_error": 1}
    await pool.aclose()


async def test_503_is_retried_on_the_same_upstream_with_a_count(server_factory) -> None:
    srv = await server_factory(scripted(lambda n, c: "503" if n <= 2 else "ok"))
    pool = pool_for(srv)
    await pool.start()
    assert (await pool.post("/x", {}))[0] == {"ok": 3}
    assert len(srv.requests) == 3 and srv.connections == 1
    assert pool.retries == {"status_503": 2}
    assert pool.router.down == set()
    await pool.aclose()


@pytest.mark.parametrize(
    ("action", "status", "message"),
    [
        ("stall", 504, "did not answer within the read timeout (0.3s)"),
        ("cut", 502, "failed mid-response (connection closed mid-response)"),
    ],
)
async def test_what_may_have_run_is_never_resent(
    server_factory, action: str, status: int, message: str
) -> None:
    srv = await server_factory(scripted(lambda n, c: action))
    pool = pool_for(srv, read=0.3)
    await pool.start()
    with pytest.raises(UpstreamError) as caught:
        await pool.post("/x", {})
    assert caught.value.status == status
    assert caught.value.message == f"upstream {srv.url}/v1 {message}"
    assert len(srv.requests) == 1 and pool.retries == {}
    await pool.aclose()


async def test_pool_wait_timeout_is_a_503_naming_the_keys(server_factory) -> None:
    srv = await server_factory(scripted(lambda n, c: "stall"))
    config = UpstreamConfig(
        base_url=[f"{srv.url}/v1"], api_key="EMPTY", max_connections=1, timeouts={"pool": 0.2}
    )
    pool = UpstreamPool(config)
    await pool.start()
    first = asyncio.ensure_future(pool.post("/x", {}))
    await asyncio.sleep(0.05)
    with pytest.raises(UpstreamError) as caught:
        await pool.post("/x", {})
    assert caught.value.status == 503
    assert caught.value.message == (
        f"cannot reach upstream {srv.url}/v1 (no free connection within timeouts.pool (0.2s); "
        "all 1 (max_connections) are busy)"
    )
    assert len(srv.requests) == 1 and pool.retries == {}
    first.cancel()
    await pool.aclose()
