"""Streamed (SSE) answers through both transports and the pool: chunks as they arrive, the
connection reused after a complete stream and closed after an abandoned one, failures raised from
the iteration, retries only before the answer starts, error answers read whole."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from nemo_gym.exceptions import ContextLengthExceeded, ProtocolError, ReadTimeout
from nemo_gym.testing.raw_server import RawServer, reply
from nemo_gym.upstream import UpstreamConfig, UpstreamPool
from nemo_gym.upstream.pool import transport_for
from nemo_gym.upstream.transport import UpstreamTransport

EVENTS = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def sse_server(
    gap: float = 0.05, cut_after: int | None = None, statuses: list[int] | None = None
) -> Callable:
    """Streams EVENTS one chunk per `gap` seconds (keep-alive); `cut_after`: close after that many;
    `statuses`: the status of the n-th request (non-200 ones get a JSON error body)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        while (await srv.read_request(reader)) is not None:
            status = (
                (statuses or [])[len(srv.requests) - 1]
                if statuses and len(srv.requests) <= len(statuses)
                else 200
            )
            if status != 200:
                body = (
                    b'{"error":{"message":"This model\'s maximum context length is 16 tokens. However, your '
                    b'prompt contains at least 20 input tokens.","type":"BadRequestError","code":400}}'
                    if status == 400
                    else b'{"error":{"message":"busy"}}'
                )
                writer.write(reply(body, status=f"{status} X"))
                await writer.drain()
                continue
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for i, event in enumerate(EVENTS):
                if cut_after is not None and i == cut_after:
                    return
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(gap)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return handler


@pytest.fixture(params=["lean", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def new_client(kind: str, read: float | None = None) -> UpstreamTransport:
    config = UpstreamConfig(
        base_url=["http://127.0.0.1:1/v1"], api_key="EMPTY", timeouts={"read": read}, upstream_client=kind
    )
    return transport_for(config, config.base_url[0], {})


async def test_chunks_arrive_as_sent_and_the_connection_is_reused(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.1))
    client = new_client(kind)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, stream = await client.post_stream(srv.url + "/v1/chat/completions", b"{}")
    assert status == 200
    got, times = [], []
    async for chunk in stream:
        got.append(chunk)
        times.append(loop.time() - started)
    assert got == EVENTS
    assert times[0] < 0.09 and times[-1] >= 0.19  # the first event before the rest were written
    status, stream = await client.post_stream(srv.url + "/v1/chat/completions", b"{}")
    assert await stream.read() == b"".join(EVENTS)
    assert srv.connections == 1  # kept alive across streams
    await client.aclose()


async def test_abandoning_a_stream_closes_its_connection(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.2))
    client = new_client(kind)
    _, stream = await client.post_stream(srv.url + "/x", b"{}")
    assert await stream.__anext__() == EVENTS[0]
    await stream.aclose()
    await asyncio.sleep(0.7)  # the upstream's next writes fail: it sees its peer gone (vLLM aborts)
    assert srv.open_now == 0
    status, stream = await client.post_stream(srv.url + "/x", b"{}")
    assert await stream.read() == b"".join(EVENTS) and srv.connections == 2
    await client.aclose()


async def test_a_cancelled_reader_closes_the_connection(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.5))
    client = new_client(kind)
    _, stream = await client.post_stream(srv.url + "/x", b"{}")

    async def read_all() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.3)  # two of the upstream's writes later, it has seen the reset
    assert srv.open_now == 0
    await client.aclose()


async def test_a_stream_cut_midway_raises_from_the_iteration(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.01, cut_after=2))
    client = new_client(kind)
    _, stream = await client.post_stream(srv.url + "/x", b"{}")
    got = []
    with pytest.raises(ProtocolError, match="connection closed mid-response"):
        async for chunk in stream:
            got.append(chunk)
    assert got == EVENTS[:2]
    await client.aclose()


async def test_read_timeout_applies_between_chunks(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.5))
    client = new_client(kind, 0.2)
    _, stream = await client.post_stream(srv.url + "/x", b"{}")
    assert await stream.__anext__() == EVENTS[0]
    with pytest.raises(ReadTimeout):
        await stream.__anext__()
    await client.aclose()


def pool_for(srv: RawServer, kind: str) -> UpstreamPool:
    return UpstreamPool(
        UpstreamConfig(base_url=[f"{srv.url}/v1"], api_key="EMPTY", retry_backoff=0.01, upstream_client=kind),
        probe_interval=30.0,
    )


async def test_pool_retries_a_503_before_the_stream_starts(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.01, statuses=[503, 200]))
    pool = pool_for(srv, kind)
    await pool.start()
    stream, used = await pool.post_stream("/chat/completions", {"stream": True})
    assert await stream.read() == b"".join(EVENTS)
    assert len(srv.requests) == 2 and pool.retries == {"status_503": 1}
    await pool.aclose()


async def test_pool_raises_error_answers_whole_including_context_length(server_factory, kind) -> None:
    srv = await server_factory(sse_server(statuses=[400]))
    pool = pool_for(srv, kind)
    await pool.start()
    with pytest.raises(ContextLengthExceeded):
        await pool.post_stream("/chat/completions", {"stream": True})
    await pool.aclose()


async def test_pool_never_resends_a_stream_that_broke_off(server_factory, kind) -> None:
    srv = await server_factory(sse_server(gap=0.01, cut_after=1))
    pool = pool_for(srv, kind)
    await pool.start()
    stream, _ = await pool.post_stream("/chat/completions", {"stream": True})
    with pytest.raises(ProtocolError):
        await stream.read()
    assert len(srv.requests) == 1 and pool.retries == {}
    await pool.aclose()


async def test_pool_stream_over_the_body_limit(server_factory, kind) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        await srv.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(b"x" * 3000, b"y" * 3000)
        )
        await writer.drain()
        await asyncio.sleep(0.2)

    srv = await server_factory(big)
    pool = UpstreamPool(
        UpstreamConfig(
            base_url=[f"{srv.url}/v1"], api_key="EMPTY", limits={"max_body_bytes": 4096}, upstream_client=kind
        )
    )
    await pool.start()
    stream, _ = await pool.post_stream("/chat/completions", {})
    with pytest.raises(ProtocolError, match="max_body_bytes"):
        await stream.read()
    await pool.aclose()
