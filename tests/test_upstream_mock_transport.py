"""MockTransport: the lean transport's own code over memory instead of sockets. What the handler
receives, what the client gets back, and each network behaviour a test can script (a refused
origin, a close without an answer, a stream that breaks off, a client that hangs up)."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from nemo_gym.exceptions import (
    ConnectError,
    ConnectionDropped,
    ProtocolError,
    ReadTimeout,
    StaleConnection,
    UpstreamError,
)
from nemo_gym.upstream import UpstreamConfig, UpstreamPool
from nemo_gym.upstream.config import Timeouts
from nemo_gym.upstream.transport import LeanTransport, MockRequest, MockResponse, MockTransport

URL = "http://up1:8000/v1/chat/completions"


async def lean(mock: MockTransport, **kwargs: object) -> LeanTransport:
    args: dict = {"max_connections": 8, "timeouts": Timeouts(connect=1.0, pool=None), **kwargs}
    transport = LeanTransport(**args, headers={"authorization": "Bearer sk-mock"}, network=mock)
    await transport.start()
    return transport


async def test_the_handler_sees_the_request_as_sent_and_the_connection_is_kept() -> None:
    async def handler(request: MockRequest) -> MockResponse:
        await asyncio.sleep(0)
        return MockResponse(201, json={"echo": request.json(), "method": request.method})

    mock = MockTransport(handler)
    transport = await lean(mock)
    first = await transport.post(URL, b'{"a":1}')
    second = await transport.post("http://up1:8000/tokenize", b'{"b":2}')
    await transport.aclose()
    assert first == (201, b'{"echo":{"a":1},"method":"POST"}')
    assert second.body == b'{"echo":{"b":2},"method":"POST"}'
    assert [(r.method, r.url, r.content) for r in mock.requests] == [
        ("POST", URL, b'{"a":1}'),
        ("POST", "http://up1:8000/tokenize", b'{"b":2}'),
    ]
    assert mock.requests[0].headers == {
        "host": "up1:8000",
        "content-type": "application/json",
        "authorization": "Bearer sk-mock",
        "content-length": "7",
    }
    assert mock.connections == {"up1:8000": 1}


async def test_text_gzip_and_get_answers() -> None:
    def handler(request: MockRequest) -> MockResponse:
        if request.method == "GET":
            return MockResponse(503, text="down")
        packed = gzip.compress(b'{"zipped":true}')
        return MockResponse(200, content=packed, headers={"Content-Encoding": "gzip"})

    transport = await lean(MockTransport(handler))
    assert await transport.post(URL, b"{}") == (200, b'{"zipped":true}')
    assert await transport.get_status("http://up1:8000/health", timeout_s=1.0) == 503
    await transport.aclose()


async def test_a_stream_arrives_chunk_by_chunk() -> None:
    seen: list[bytes] = []

    async def events():
        for n in range(3):
            yield b"data: %d\n\n" % n
            await asyncio.sleep(0.01)

    mock = MockTransport(lambda request: MockResponse(200, stream=events()))
    transport = await lean(mock)
    status, stream = await transport.post_stream(URL, b"{}")
    async for chunk in stream:
        seen.append(chunk)
    status_again, stream_again = await transport.post_stream(URL, b"{}")
    assert await stream_again.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    await transport.aclose()
    assert (status, status_again) == (200, 200)
    assert seen == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert mock.connections == {"up1:8000": 1}


async def test_a_refused_origin_is_a_connect_error_naming_it() -> None:
    mock = MockTransport(lambda request: MockResponse(200))
    mock.refuse("up1:8000")
    transport = await lean(mock)
    with pytest.raises(ConnectError, match="cannot connect to up1:8000: Connection refused"):
        await transport.post(URL, b"{}")
    await transport.aclose()
    assert mock.refusals == {"up1:8000": 1} and mock.requests == []


async def test_a_close_without_an_answer_is_dropped_or_stale_as_on_a_socket() -> None:
    calls = 0

    def handler(request: MockRequest) -> MockResponse:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionResetError("the server went away")
        return MockResponse(200, json={})

    transport = await lean(MockTransport(handler))
    assert (await transport.post(URL, b"{}")).status == 200
    with pytest.raises(StaleConnection):  # reused, closed at once: the keep-alive race
        await transport.post(URL, b"{}")
    with pytest.raises(ConnectionDropped, match="without answering"):  # a fresh connection
        await transport.post(URL, b"{}")
    await transport.aclose()


async def test_a_stream_that_breaks_off_raises_from_its_iteration() -> None:
    def cut():
        yield b"data: 1\n\n"
        raise ConnectionResetError

    transport = await lean(MockTransport(lambda request: MockResponse(200, stream=cut())))
    _, stream = await transport.post_stream(URL, b"{}")
    got = []
    with pytest.raises(ProtocolError, match="connection closed mid-response"):
        async for chunk in stream:
            got.append(chunk)
    assert got == [b"data: 1\n\n"]
    await transport.aclose()


async def test_a_handler_that_raises_is_a_500_naming_it() -> None:
    def broken(request: MockRequest) -> MockResponse:
        raise KeyError("model")

    mock = MockTransport(broken)
    transport = await lean(mock)
    answer = await transport.post(URL, b"{}")
    await transport.aclose()
    assert answer == (
        500,
        b'{"error":{"message":"the MockTransport handler raised KeyError: \'model\'","type":"server_error"}}',
    )
    assert [type(e) for e in mock.errors] == [KeyError]


async def test_a_client_that_gives_up_cancels_the_handler() -> None:
    started = asyncio.Event()

    async def slow(request: MockRequest) -> MockResponse:
        started.set()
        await asyncio.sleep(5)
        return MockResponse(200)

    mock = MockTransport(slow)
    transport = await lean(mock, timeouts=Timeouts(connect=1.0, read=0.1, pool=None))
    with pytest.raises(ReadTimeout):
        await transport.post(URL, b"{}")
    started.clear()
    task = asyncio.ensure_future(transport.post(URL, b"{}"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    await transport.aclose()
    assert mock.cancelled == 2 and mock.connections == {"up1:8000": 2}


async def test_connection_close_answers_are_not_reused() -> None:
    mock = MockTransport(lambda request: MockResponse(200, json={}, headers={"connection": "close"}))
    transport = await lean(mock)
    for _ in range(2):
        assert await transport.post(URL, b"{}") == (200, b"{}")
    await transport.aclose()
    assert mock.connections == {"up1:8000": 2}


async def test_the_pool_runs_its_retry_rules_over_it() -> None:
    statuses = [503, 503, 200]
    mock = MockTransport(lambda request: MockResponse(statuses.pop(0), json={"ok": True}))
    pool = UpstreamPool(
        UpstreamConfig(
            base_url=["https://up1:8000/v1"], api_key="sk-x", retry_backoff=0.0, upstream_client="aiohttp"
        ),
        network=mock,
    )
    await pool.start()
    assert type(pool.upstreams[0].transport) is LeanTransport  # a network means the lean transport
    assert (await pool.post("/chat/completions", {}))[0] == {"ok": True}
    assert pool.retries == {"status_503": 2}
    assert mock.requests[0].url == "https://up1:8000/v1/chat/completions"
    assert mock.requests[0].headers["authorization"] == "Bearer sk-x"
    await pool.aclose()
    mock.refuse("up1:8000")
    pool = UpstreamPool(
        UpstreamConfig(base_url=["http://up1:8000/v1"], api_key="", max_retries=1), network=mock
    )
    await pool.start()
    with pytest.raises(UpstreamError) as caught:
        await pool.post("/chat/completions", {})
    await pool.aclose()
    assert (caught.value.status, caught.value.message) == (
        503,
        "cannot reach upstream http://up1:8000/v1 (cannot connect to up1:8000: Connection refused) after 2 attempts",
    )
    assert pool.retries == {"connect_error": 1} and mock.refusals == {"up1:8000": 2}
