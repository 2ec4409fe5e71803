"""`MockTransport(handler)`: upstreams answered in memory by a function, for tests.

As with httpx's MockTransport, the handler turns each request into a response. Unlike a mock of
the client, it stands in for the sockets only (it is the `Network` of the lean transport): the
pool, the connections, the request heads, HTTP parsing, keep-alive, streaming, decoding and the
failure kinds all run the production code, so a test of the adapter tests the client it ships
with. Give it to `UpstreamPool(config, network=...)`.

Besides answering, a test can script the network: `refuse("host:port")` refuses connections
to an origin; a handler that raises `ConnectionError` closes the connection without an answer;
a response `stream` that raises it breaks off mid-answer; a handler still running when the
client closes the connection is cancelled, as a server sees a disconnect (`cancelled` counts it).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import socket
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

import httptools
import orjson

from nemo_gym.upstream.transport.base import Dial, ProtocolFactory

_UNSET: Any = object()


class MockRequest:
    """One request as the upstream received it."""

    __slots__ = ("content", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str], content: bytes) -> None:
        self.method = method
        self.url = url
        self.headers = headers  # names in lower case
        self.content = content

    def json(self) -> Any:
        return orjson.loads(self.content)

    def __repr__(self) -> str:
        return f"<MockRequest {self.method} {self.url}>"


class MockResponse:
    """What the upstream answers: a status and a body (`json`, `text` or `content`), or a
    `stream` of chunks sent with chunked encoding, one write each."""

    __slots__ = ("content", "headers", "status_code", "stream")

    def __init__(
        self,
        status_code: int = 200,
        *,
        json: Any = _UNSET,
        text: str | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: Iterable[bytes] | AsyncIterable[bytes] | None = None,
    ) -> None:
        self.status_code = status_code
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.stream = stream
        if json is not _UNSET:
            self.content = orjson.dumps(json)
            self.headers.setdefault("content-type", "application/json")
        elif text is not None:
            self.content = text.encode()
            self.headers.setdefault("content-type", "text/plain; charset=utf-8")
        else:
            self.content = content or b""

    def head(self) -> bytes:
        try:
            reason = HTTPStatus(self.status_code).phrase
        except ValueError:  # a status the standard does not name (vLLM never sends one; a test may)
            reason = "Unknown"
        framing = ("transfer-encoding", "chunked") if self.stream is not None else ("content-length", "")
        headers = {**self.headers, framing[0]: framing[1] or str(len(self.content))}
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"HTTP/1.1 {self.status_code} {reason}\r\n{lines}\r\n".encode("latin-1")


Handler = Callable[[MockRequest], MockResponse | Awaitable[MockResponse]]


class MockTransport:
    """The network of a lean transport, served in memory by `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []
        self.connections: Counter[str] = Counter()  # connections opened, by "host:port"
        self.refused: set[str] = set()
        self.refusals: Counter[str] = Counter()  # connections refused, by "host:port"
        self.cancelled = 0  # handlers cancelled because the client closed their connection
        self.errors: list[Exception] = []  # what handlers raised (each answered as a 500)

    def refuse(self, origin: str) -> None:
        """Refuse connections to `origin` ("host:port") from now on."""
        self.refused.add(origin)

    # ---- the Network protocol -------------------------------------------------------------
    async def resolve(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        return [(socket.AF_INET, (host, port))]

    async def connect(self, protocol_factory: ProtocolFactory, dial: Dial) -> asyncio.Protocol:
        host, port = dial.address[0], dial.address[1]
        if f"{host}:{port}" in self.refused:
            self.refusals[f"{host}:{port}"] += 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        self.connections[f"{host}:{port}"] += 1
        protocol = protocol_factory()
        protocol.connection_made(_MockSocket(self, protocol, "https" if dial.ssl_context else "http"))
        return protocol


class _MockSocket(asyncio.Transport):
    """One connection's server side: parses what the client writes, answers through the handler."""

    def __init__(self, mock: MockTransport, protocol: asyncio.Protocol, scheme: str) -> None:
        super().__init__()
        self._mock = mock
        self._protocol = protocol
        self._scheme = scheme
        self._parser = httptools.HttpRequestParser(self)
        self._closing = False
        self._readable = asyncio.Event()
        self._readable.set()
        self._task: asyncio.Task[None] | None = None
        self._handling = False  # the handler is working on a request
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # ---- what the client calls ----------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(bytes(data))
        except httptools.HttpParserError:
            self._lost()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()
            if self._handling:
                self._mock.cancelled += 1
        self._lost()

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def is_reading(self) -> bool:
        return self._readable.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    # ---- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode()
        url = f"{self._scheme}://{self._headers.get('host', '')}{self._url.decode('latin-1')}"
        request = MockRequest(method, url, self._headers, b"".join(self._body))
        self._mock.requests.append(request)
        self._task = asyncio.get_running_loop().create_task(self._answer(request))

    # ---- the server side ----------------------------------------------------------------
    async def _answer(self, request: MockRequest) -> None:
        self._handling = True
        try:
            response = self._mock.handler(request)
            if inspect.isawaitable(response):
                response = await response
        except ConnectionError:
            self._lost()  # closed without an answer
            return
        except Exception as exc:
            self._mock.errors.append(exc)
            message = f"the MockTransport handler raised {type(exc).__name__}: {exc}"
            response = MockResponse(500, json={"error": {"message": message, "type": "server_error"}})
        finally:
            self._handling = False
        try:
            await self._send(response)
        except ConnectionError:
            self._lost()  # broke off mid-answer
            return
        if response.headers.get("connection", "").lower() == "close":
            self._lost()

    async def _send(self, response: MockResponse) -> None:
        if response.stream is None:
            self._deliver(response.head() + response.content)
            return
        self._deliver(response.head())
        if isinstance(response.stream, AsyncIterable):
            async for chunk in response.stream:
                await self._deliver_chunk(chunk)
        else:
            for chunk in response.stream:
                await self._deliver_chunk(chunk)
        self._deliver(b"0\r\n\r\n")

    async def _deliver_chunk(self, chunk: bytes) -> None:
        await self._readable.wait()
        self._deliver(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        await asyncio.sleep(0)  # the reader sees each chunk as it comes

    def _deliver(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)

    def _lost(self) -> None:
        """The connection is gone: the client's protocol hears it on the next loop turn."""
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)
