"""One HTTP/1.1 connection of the lean transport: an asyncio protocol parsed by httptools (the
parser uvicorn uses), at most one request in flight, kept alive between requests.

A request is one `transport.write` of a head built once per URL (`Target`) and one future.
The answer completes the future whole, or, for a streamed request, as soon as its head is in,
with the body following through `StreamedBody`. Failures are `nemo_gym.exceptions`' transport
kinds: a close before any answer byte (`base.closed_before_answer` tells the keep-alive race
from an upstream failure), no byte within the read timeout, an answer that broke off, was not
HTTP, or was over a limit (head, body, decoded body).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httptools

from nemo_gym.exceptions import ConnectError, ProtocolError, ReadTimeout, ResponseTooLarge, TransportError
from nemo_gym.upstream.transport.base import Answer, StreamAnswer, closed_before_answer
from nemo_gym.upstream.transport.decoding import decode_body

if TYPE_CHECKING:
    from nemo_gym.upstream.transport.pool import LeanTransport

Origin = tuple[str, str, int]  # (scheme, host, port)
# `Answer(status, body)` without its Python-level __new__: this runs once per request.
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class Target:
    """One URL, parsed once: where to connect and the request head up to Content-Length."""

    origin: Origin
    post_head: bytes  # "POST <path> HTTP/1.1\r\nHost…\r\n<fixed headers>content-length: "
    get_request: bytes  # a complete GET request for the same URL

    def post_request(self, content: bytes) -> bytes:
        return b"%b%d\r\n\r\n%b" % (self.post_head, len(content), content)


def parse_target(url: str, headers: dict[str, str]) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"unsupported upstream URL {url!r} (expected http:// or https://)")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host_header = parts.hostname if port == default_port else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port == default_port else f":{port}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return Target(
        origin=(scheme, parts.hostname, port),
        post_head=f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\n{fixed}content-length: ".encode("latin-1"),
        get_request=f"GET {path} HTTP/1.1\r\nhost: {host_header}\r\n\r\n".encode("latin-1"),
    )


class StreamedBody:
    """A streamed answer's body as it arrives. Iterate it for chunks, or `read()` the rest;
    `aclose()` before the end closes the connection (vLLM then aborts the generation). Reading
    pauses the socket while more than `_HIGH_WATER` bytes wait unread."""

    _HIGH_WATER = 1 << 20
    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_paused", "_waiter")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ---- fed by the connection ----------------------------------------------------------
    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _end(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._done:
            self._error = exc
            self._done = True
        self._wake()

    # ---- the consumer -------------------------------------------------------------------
    def __aiter__(self) -> StreamedBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._waiter = self._conn.owner.loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                await self.aclose()
                raise
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= self._HIGH_WATER // 2:
            self._paused = False
            conn = self._conn
            conn._last_data = conn.owner.loop.time()  # the pause was ours, not the server's
            if conn.transport is not None and not conn.closed:
                conn.transport.resume_reading()
        return chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._error = ProtocolError("stream closed by the reader")
            self._conn._waiter = None
            self._conn.close()
        self._chunks.clear()


class Connection(asyncio.Protocol):
    """One kept-alive connection; at most one request in flight (no pipelining)."""

    __slots__ = (
        "_body_size",
        "_chunks",
        "_encoding",
        "_fed",
        "_framed",
        "_head_size",
        "_last_data",
        "_parser",
        "_received",
        "_sent_at",
        "_status",
        "_stream",
        "_timer",
        "_waiter",
        "closed",
        "idle_since",
        "origin",
        "owner",
        "served",
        "transport",
    )

    def __init__(self, owner: LeanTransport, origin: Origin) -> None:
        self.owner = owner
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Any] | None = None
        self._chunks: list[bytes] = []
        self._status = 0
        self._encoding: bytes | None = None
        self._framed = False  # the answer says where its body ends (length or chunked)
        self._received = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._sent_at = 0.0
        self._fed = 0  # raw bytes fed while the current answer's head is incomplete
        self._head_size = 0  # bytes of its header lines
        self._body_size = 0
        self._stream: StreamedBody | None = None  # set while a streamed answer is being read
        self.served = 0  # answers completed on this connection: > 0 means it was reused

    # ---- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self._received = True
        if self._timer is not None:
            self._last_data = self.owner.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"))
            self.close()
            return
        if not self._status and self._waiter is not None:
            self._fed += len(data)
            limit = self.owner.limits.max_header_bytes
            if self._fed > limit:
                self._fail(ResponseTooLarge(f"response head is larger than max_header_bytes ({limit})"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and self._status >= 200 and not self._framed:
            # An answer with neither Content-Length nor chunked encoding ends where the
            # connection does (HTTP/1.0 style, from some proxies): this EOF completes it.
            self._complete()
        if self._waiter is not None:
            if self._received:
                self._fail(ProtocolError("connection closed mid-response"))
            else:
                waited = self.owner.loop.time() - self._sent_at
                self._fail(closed_before_answer(self.served > 0, waited))
        self.owner.forget(self)

    # ---- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        size = len(name)
        if size == 14 or size == 17:  # content-length, transfer-encoding
            self._framed = self._framed or name.lower() in (b"content-length", b"transfer-encoding")
        elif size == 16 and name.lower() == b"content-encoding":
            self._encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        limit = self.owner.limits.max_header_bytes
        if self._head_size > limit and self._waiter is not None:
            self._fail(ResponseTooLarge(f"response head is larger than max_header_bytes ({limit})"))
            self.close()
        status = self._parser.get_status_code()
        if status in (204, 304) or status < 200:
            self._framed = True  # no body by definition
        self._status = status
        stream, waiter = self._stream, self._waiter
        if stream is not None and status >= 200 and waiter is not None and not waiter.done():
            if self._encoding not in (None, b"identity"):
                self._fail(
                    ProtocolError(f"a streamed answer may not be {self._encoding.decode('latin-1')}-encoded")
                )
                self.close()
                return
            waiter.set_result(StreamAnswer(status, stream))

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:
            return
        self._body_size += len(body)
        limit = self.owner.limits.max_body_bytes
        if self._body_size > limit:
            self._fail(ResponseTooLarge(f"response body is larger than max_body_bytes ({limit})"))
            self.close()
            return
        if self._stream is not None:
            self._stream._feed(body)
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        if self._status < 200:  # an interim 1xx answer: the real one follows
            self._chunks, self._encoding, self._status, self._framed = [], None, 0, False
            self._fed = self._head_size = self._body_size = 0
            return
        self._complete()

    def _complete(self) -> None:
        waiter = self._waiter
        assert waiter is not None
        self._waiter = None
        self._stop_timer()
        stream, self._stream = self._stream, None
        if stream is not None:
            if not waiter.done():  # an answer without a body (204): an empty stream
                waiter.set_result(StreamAnswer(self._status, stream))
            stream._end()
        elif not waiter.done():
            body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            if self._encoding is None:
                waiter.set_result(_new_tuple(Answer, (self._status, body)))
            else:
                try:
                    waiter.set_result(
                        Answer(
                            self._status,
                            decode_body(body, self._encoding, self.owner.limits.max_decompressed_bytes),
                        )
                    )
                except TransportError as exc:
                    waiter.set_exception(exc)
        if self._parser.should_keep_alive() and not self.closed:
            self.served += 1
            self.owner.release(self)
        else:
            self.close()

    # ---- requests -----------------------------------------------------------------------
    async def request(self, data: bytes, stream: bool = False) -> Any:
        """Write a request and wait for its `Answer`, or, with `stream`, for a `StreamAnswer`
        as soon as the head has arrived; or for a failure kind."""
        loop = self.owner.loop
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiter = waiter
        self._stream = StreamedBody(self) if stream else None
        self._chunks = []
        self._encoding = None
        self._received = False
        self._status = 0
        self._framed = False
        self._fed = self._head_size = self._body_size = 0
        self._sent_at = now = loop.time()
        timeout = self.owner.read_timeout
        if timeout is not None:
            self._last_data = now
            self._timer = loop.call_at(now + timeout, self._check_timeout)
        self.transport.write(data)  # type: ignore[union-attr]
        try:
            return await waiter
        except asyncio.CancelledError:
            # The caller is gone and will never come back for the answer: don't keep the
            # connection busy waiting for it (and let the upstream see nobody waits).
            self._waiter = None
            self.close()
            raise

    def _check_timeout(self) -> None:
        timeout = self.owner.read_timeout
        assert timeout is not None
        remaining = self._last_data + timeout - self.owner.loop.time()
        if remaining > 0:  # data arrived since the timer was set: wait for the rest
            self._timer = self.owner.loop.call_later(remaining, self._check_timeout)
            return
        self._timer = None
        self._fail(ReadTimeout(f"{timeout}s"))
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        stream, self._stream = self._stream, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        elif stream is not None:  # the answer had started streaming: its reader gets the failure
            stream._fail(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.owner.forget(self)
