"""What every upstream transport must do, run against both (the lean HTTP/1.1 transport and
aiohttp's), each built from the same config as the pool builds it, against scripted raw servers
on 127.0.0.1: framing, keep-alive, limits, and each failure kind the retry rules depend on."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from nemo_gym.exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    HeaderValueError,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    StaleConnection,
)
from nemo_gym.testing.raw_server import RawServer, answer_each, answer_once, echo, reply
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.pool import transport_for
from nemo_gym.upstream.transport import UpstreamTransport

Make = Callable[..., Awaitable[UpstreamTransport]]


def config(kind: str, **keys: object) -> UpstreamConfig:
    args: dict = {"base_url": ["http://127.0.0.1:1/v1"], "api_key": "EMPTY", "upstream_client": kind, **keys}
    return UpstreamConfig(**args)


@pytest.fixture(params=["lean", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make(kind: str, no_proxy_variables: None) -> AsyncIterator[Make]:
    """`await make(headers=None, **config keys)`: a started transport of `kind`, closed after."""
    made: list[UpstreamTransport] = []

    async def new(
        headers: dict[str, str] | None = None, start: bool = True, **keys: object
    ) -> UpstreamTransport:
        transport = transport_for(config(kind, **keys), "http://127.0.0.1:1/v1", headers or {})
        if start:
            await transport.start()
        made.append(transport)
        return transport

    yield new
    for transport in made:
        await transport.aclose()


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> bool:
    """Polls (bounded) for something the other side of a socket will see shortly."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


# ---- answers ---------------------------------------------------------------------------


async def test_status_and_framings_keep_the_connection(server_factory, make: Make) -> None:
    async def answers(reader, writer, srv: RawServer) -> None:
        await srv.read_request(reader)
        writer.write(reply(b'{"error":{"message":"nope"}}', "400 Bad Request"))
        await srv.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await srv.read_request(reader)
        writer.write(reply(gzip.compress(b'{"zipped":true}'), extra=b"content-encoding: gzip\r\n"))
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b'{"ok":1}'))
        await srv.read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"eof":1}')

    srv = await server_factory(answers)
    transport = await make()
    assert await transport.post(srv.url + "/a", b"{}") == (400, b'{"error":{"message":"nope"}}')
    assert await transport.post(srv.url + "/a", b"{}") == (200, b"hello world")
    assert await transport.post(srv.url + "/a", b"{}") == (200, b'{"zipped":true}')
    assert await transport.post(srv.url + "/a", b"{}") == (200, b'{"ok":1}')
    assert await transport.post(srv.url + "/a", b"{}") == (200, b'{"eof":1}')  # ended by the close
    assert srv.connections == 1


async def test_a_connection_close_answer_or_an_idle_close_means_a_new_connection(
    server_factory, make: Make
) -> None:
    srv = await server_factory(answer_once(reply(b"{}", extra=b"connection: close\r\n")))
    transport = await make()
    assert await transport.post(srv.url + "/a", b"{}") == (200, b"{}")
    assert await transport.post(srv.url + "/a", b"{}") == (200, b"{}")
    idle = await server_factory(answer_once(reply(b"{}")))  # closes while the client holds it idle
    assert await transport.post(idle.url + "/a", b"{}") == (200, b"{}")
    await asyncio.sleep(0.1)
    assert await transport.post(idle.url + "/a", b"{}") == (200, b"{}")
    assert (srv.connections, idle.connections) == (2, 2)


async def test_get_status(server_factory, make: Make) -> None:
    async def health(reader, writer, srv: RawServer) -> None:
        while await srv.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    async def never(reader, writer, srv: RawServer) -> None:
        await srv.read_request(reader)
        await asyncio.sleep(2)

    srv = await server_factory(health)
    silent = await server_factory(never)
    transport = await make()
    assert await transport.get_status(srv.url + "/health", timeout_s=1.0) == 503
    assert srv.requests[0].startswith(b"GET /health HTTP/1.1\r\n")
    with pytest.raises(ConnectTimeout, match=r"no answer within 0.1s"):
        await transport.get_status(silent.url + "/health", timeout_s=0.1)


async def test_used_before_start_binds_on_first_use_and_refuses_once_closed(
    server_factory, make: Make
) -> None:
    srv = await server_factory(answer_each)
    transport = await make(start=False)
    assert await transport.post(srv.url + "/a", b"hello") == (200, b"hello")
    await transport.aclose()
    with pytest.raises(ClientClosed, match="client is closed"):
        await transport.post(srv.url + "/a", b"{}")


async def test_header_values_with_line_breaks_are_refused_without_echoing_them(make: Make) -> None:
    with pytest.raises(HeaderValueError) as caught:
        await make({"authorization": "Bearer sk-SECRET\r\nx-evil: 1"})
    assert str(caught.value) == (
        "header 'authorization' contains a line break or NUL character (check how the value was pasted)"
    )


# ---- failure kinds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "linger", "error", "match"),
    [
        (b"", 0, ConnectionDropped, "closed the connection .* without answering"),
        (
            b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":',
            0,
            ProtocolError,
            "closed mid-response",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-type: appl", 0, ProtocolError, "closed mid-response"),
        (b"SMTP ready\r\n\r\n", 0.5, ProtocolError, "malformed HTTP response"),
        (
            reply(b"xx", extra=b"content-encoding: br\r\n"),
            0,
            ProtocolError,
            "unsupported content-encoding 'br'",
        ),
        (
            reply(b"not gzip", extra=b"content-encoding: gzip\r\n"),
            0,
            ProtocolError,
            "cannot decode gzip body",
        ),
    ],
    ids=[
        "closed-before-answer",
        "cut-mid-body",
        "cut-mid-headers",
        "not-http",
        "unknown-encoding",
        "bad-gzip",
    ],
)
async def test_each_failure_kind(
    server_factory, make: Make, answer: bytes, linger: float, error: type, match: str
) -> None:
    srv = await server_factory(answer_once(answer, linger=linger))
    transport = await make()
    with pytest.raises(error, match=match):
        await transport.post(srv.url + "/a", b"{}")


@pytest.mark.parametrize(("delay", "error"), [(0.0, StaleConnection), (0.2, ConnectionDropped)])
async def test_reused_connection_closed_without_answer(
    server_factory, make: Make, delay: float, error: type
) -> None:
    # The server answers once, then takes the next request and closes: at once that is the
    # keep-alive race; after a while it is an upstream that dropped the request.
    async def once_then_close(reader, writer, srv: RawServer) -> None:
        await srv.read_request(reader)
        writer.write(reply(b"{}"))
        await writer.drain()
        await srv.read_request(reader)
        if delay:
            await asyncio.sleep(delay)

    srv = await server_factory(once_then_close)
    transport = await make()
    assert await transport.post(srv.url + "/a", b"{}") == (200, b"{}")
    with pytest.raises(error):
        await transport.post(srv.url + "/a", b"{}")
    assert srv.connections == 1


async def test_connect_refused_names_the_address(make: Make) -> None:
    srv = RawServer(answer_each)
    await srv.start()
    port = srv.port
    await srv.stop()
    await asyncio.sleep(0.05)
    transport = await make()
    with pytest.raises(ConnectError, match=rf"cannot connect to 127.0.0.1:{port}: "):
        await transport.post(f"http://127.0.0.1:{port}/v1/x", b"{}")
    with pytest.raises(ConnectError):
        await transport.get_status(f"http://127.0.0.1:{port}/health", timeout_s=1.0)


async def test_unsupported_scheme_is_a_clear_error(make: Make) -> None:
    transport = await make()
    with pytest.raises(ConnectError, match="expected http:// or https://"):
        await transport.post("ftp://127.0.0.1/x", b"{}")


async def test_read_timeout_closes_the_connection(server_factory, make: Make) -> None:
    async def stall(reader, writer, srv: RawServer) -> None:
        await srv.read_request(reader)
        await srv.read_request(reader)  # returns None when the client gives up and closes

    srv = await server_factory(stall)
    transport = await make(timeouts={"read": 0.2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReadTimeout, match="0.2s"):
        await transport.post(srv.url + "/a", b"{}")
    assert 0.19 <= loop.time() - started < 1.0
    assert await eventually(lambda: srv.disconnects == 1)


async def test_read_timeout_is_between_bytes_not_total(server_factory, make: Make) -> None:
    async def trickle(reader, writer, srv: RawServer) -> None:
        await srv.read_request(reader)
        body = b'{"slow":"answer"}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for i in range(len(body)):
            await writer.drain()
            await asyncio.sleep(0.03)
            writer.write(body[i : i + 1])
        await writer.drain()
        await srv.read_request(reader)

    srv = await server_factory(trickle)
    transport = await make(timeouts={"read": 0.15})  # total ~0.5 s, no gap over 0.15 s
    assert await transport.post(srv.url + "/a", b"{}") == (200, b'{"slow":"answer"}')


async def test_read_timeout_mid_body(server_factory, make: Make) -> None:
    srv = await server_factory(answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{", linger=1.0))
    transport = await make(timeouts={"read": 0.2})
    with pytest.raises(ReadTimeout):
        await transport.post(srv.url + "/a", b"{}")


# ---- limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 2000 + b"\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"x-h%d: %b\r\n" % (i, b"v" * 40) for i in range(40))
        + reply(b"{}")[17:],
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"x-%d: 1\r\n" % i for i in range(200))
        + b"content-length: 2\r\n\r\n{}",
    ],
    ids=["one-long-line", "head-over-the-total", "too-many-fields"],
)
async def test_oversized_head(server_factory, make: Make, answer: bytes) -> None:
    srv = await server_factory(answer_once(answer, linger=0.2))
    transport = await make(limits={"max_header_bytes": 1024})
    with pytest.raises(ResponseTooLarge, match=r"response head is larger than max_header_bytes \(1024\)"):
        await transport.post(srv.url + "/a", b"{}")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_oversized_body(server_factory, make: Make, framing: str) -> None:
    body = b"x" * 5000
    if framing == "chunked":
        answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (
            len(body),
            body,
        )
    else:
        answer = reply(body)
    srv = await server_factory(answer_once(answer, linger=0.2))
    transport = await make(limits={"max_body_bytes": 4096})
    with pytest.raises(ResponseTooLarge, match=r"response body is larger than max_body_bytes \(4096\)"):
        await transport.post(srv.url + "/a", b"{}")


async def test_gzip_bomb_is_refused(server_factory, make: Make) -> None:
    bomb = gzip.compress(b"0" * 1_000_000)
    srv = await server_factory(answer_once(reply(bomb, extra=b"content-encoding: gzip\r\n"), linger=0.2))
    transport = await make(limits={"max_decompressed_bytes": 65536})
    with pytest.raises(
        ResponseTooLarge, match=r"decompressed response body is larger than max_decompressed_bytes \(65536\)"
    ):
        await transport.post(srv.url + "/a", b"{}")


# ---- the connection pool ---------------------------------------------------------------


async def test_connection_limit_queues_requests(server_factory, make: Make) -> None:
    srv = await server_factory(echo(0.05))
    transport = await make(max_connections=2)
    results = await asyncio.gather(*(transport.post(srv.url + "/a", b"%d" % i) for i in range(7)))
    assert results == [(200, b"%d" % i) for i in range(7)]
    assert srv.max_open == 2 and srv.connections == 2


async def test_pool_timeout(server_factory, make: Make) -> None:
    srv = await server_factory(echo(0.5))
    transport = await make(max_connections=1, timeouts={"pool": 0.1})
    first = asyncio.ensure_future(transport.post(srv.url + "/a", b"1"))
    await asyncio.sleep(0.02)
    with pytest.raises(
        PoolTimeout,
        match=r"no free connection within timeouts.pool \(0.1s\); all 1 \(max_connections\) are busy",
    ):
        await transport.post(srv.url + "/a", b"2")
    assert await first == (200, b"1")
    assert srv.connections == 1


async def test_cancelled_waiter_does_not_stall_the_queue(server_factory, make: Make) -> None:
    srv = await server_factory(echo(0.1))
    transport = await make(max_connections=1)
    first = asyncio.ensure_future(transport.post(srv.url + "/a", b"1"))
    await asyncio.sleep(0.02)
    waiting = [asyncio.ensure_future(transport.post(srv.url + "/a", b"%d" % i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.02)
    waiting[0].cancel()
    assert await asyncio.wait_for(first, 2) == (200, b"1")
    assert await asyncio.wait_for(asyncio.gather(*waiting[1:]), 2) == [(200, b"3"), (200, b"4")]
    assert srv.connections == 1


async def test_cancelled_request_closes_its_connection(server_factory, make: Make) -> None:
    async def first_never_answered(reader, writer, srv: RawServer) -> None:
        if srv.connections == 1:
            await srv.read_request(reader)
            await srv.read_request(reader)  # EOF only once the client drops the connection
            return
        await answer_each(reader, writer, srv)

    srv = await server_factory(first_never_answered)
    transport = await make(max_connections=1)
    task = asyncio.ensure_future(transport.post(srv.url + "/a", b"late"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The upstream sees the disconnect (vLLM aborts the generation), and the only slot is free.
    assert await eventually(lambda: srv.disconnects == 1)
    assert await asyncio.wait_for(transport.post(srv.url + "/a", b"next"), 2.0) == (200, b"next")
    assert srv.connections == 2


async def test_cancelled_mid_body_closes_its_connection(server_factory, make: Make) -> None:
    async def half_then_wait(reader, writer, srv: RawServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
        await writer.drain()
        await srv.read_request(reader)

    srv = await server_factory(half_then_wait)
    transport = await make()
    task = asyncio.ensure_future(transport.post(srv.url + "/a", b"{}"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await eventually(lambda: srv.disconnects == 1)
