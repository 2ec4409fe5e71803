"""The upstream hot path's HTTP/1.1 client: an asyncio protocol per pooled connection, parsed by
httptools (the parser uvicorn uses).

Why not aiohttp: per request it builds a request object, merges headers, resolves a payload
type, starts a writer task and feeds a stream reader; profiled under load that was a third of
the adapter's CPU and the reason a /tokenize round trip cost 0.09 ms (docs/performance.md).
We only ever POST a finished JSON body and read a whole JSON answer, so a request here is one
`transport.write` and one future. What it does not do, on purpose: proxies, cookies,
redirects, streaming bodies, HTTP/2.

Failure kinds are `nemo_gym.exceptions`' transport errors: nothing was sent (connect errors,
pool wait), a reused connection the server had just closed (the keep-alive race), any other
close before an answer byte, no answer within the read timeout, and an answer that broke off,
was not HTTP or was over a limit (head, body, decompressed body).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from nemo_gym.exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    StaleConnection,
    TransportError,
    check_header_value,
)

Origin = tuple[str, str, int]  # (scheme, host, port)
DNS_TTL = 300.0  # seconds a resolved upstream address is reused for new connections
# A reused connection closed this soon after our write, with no answer byte, is the keep-alive
# race (the server closed it as idle while the request was on its way), not a failing upstream.
STALE_CLOSE_WINDOW = 0.05


@dataclass(frozen=True, slots=True)
class Limits:
    """What one answer may be: bigger means a broken or hostile upstream, not a generation."""

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 256 * 1024 * 1024
    max_decompressed_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Target:
    """One URL, parsed once: where to connect and the request head up to Content-Length."""

    origin: Origin
    post_head: bytes  # "POST <path> HTTP/1.1\r\nHost…\r\n<fixed headers>content-length: "
    get_request: bytes  # a complete GET request for the same URL

    def post_request(self, content: bytes) -> bytes:
        return b"%b%d\r\n\r\n%b" % (self.post_head, len(content), content)


def _parse_target(url: str, headers: dict[str, str]) -> _Target:
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
    return _Target(
        origin=(scheme, parts.hostname, port),
        post_head=f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\n{fixed}content-length: ".encode("latin-1"),
        get_request=f"GET {path} HTTP/1.1\r\nhost: {host_header}\r\n\r\n".encode("latin-1"),
    )


class BodyStream:
    """An answer's body as it arrives, for streamed (SSE) answers. Iterate it for chunks, or
    `read()` the rest; `aclose()` before the end closes the connection (vLLM then aborts the
    generation). Reading pauses the socket while more than `_HIGH_WATER` bytes wait unread."""

    _HIGH_WATER = 1 << 20
    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_paused", "_waiter")

    def __init__(self, conn: _Connection) -> None:
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
    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._waiter = self._conn.client.loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                await self.aclose()
                raise
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= self._HIGH_WATER // 2:
            self._paused = False
            self._conn._last_data = self._conn.client.loop.time()  # the pause was ours, not the server's
            if self._conn.transport is not None and not self._conn.closed:
                self._conn.transport.resume_reading()
        return chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    @property
    def complete(self) -> bool:
        return self._done and self._error is None and not self._chunks

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._error = ProtocolError("stream closed by the reader")
            self._conn._waiter = None
            self._conn._close()
        self._chunks.clear()


class _Connection(asyncio.Protocol):
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
        "client",
        "closed",
        "idle_since",
        "origin",
        "served",
        "transport",
    )

    def __init__(self, client: Http1UpstreamClient, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
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
        self._stream: BodyStream | None = None  # set while a streamed answer is being read
        self.served = 0  # answers completed on this connection: > 0 means it was reused

    # ---- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self._close()
            return
        self._received = True
        if self._timer is not None:
            self._last_data = self.client.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"))
            self._close()
            return
        if not self._status and self._waiter is not None:
            self._fed += len(data)
            limit = self.client.limits.max_header_bytes
            if self._fed > limit:
                self._fail(ResponseTooLarge(f"response head is larger than max_header_bytes ({limit})"))
                self._close()

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
                self._fail(self._closed_before_answer())
        self.client._forget(self)

    def _closed_before_answer(self) -> TransportError:
        waited = self.client.loop.time() - self._sent_at
        if self.served and waited < STALE_CLOSE_WINDOW:
            return StaleConnection(
                f"kept-alive connection closed by the server {waited * 1000:.1f} ms after the request was written"
            )
        return ConnectionDropped(
            f"server closed the connection {waited:.3f} s after the request, without answering"
        )

    # ---- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        size = len(name)
        if size == 14 or size == 17:  # content-length, transfer-encoding
            self._framed = self._framed or name.lower() in (b"content-length", b"transfer-encoding")
        elif size == 16 and name.lower() == b"content-encoding":
            self._encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        limit = self.client.limits.max_header_bytes
        if self._head_size > limit and self._waiter is not None:
            self._fail(ResponseTooLarge(f"response head is larger than max_header_bytes ({limit})"))
            self._close()
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
                self._close()
                return
            waiter.set_result((status, stream))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:
            return
        self._body_size += len(body)
        limit = self.client.limits.max_body_bytes
        if self._body_size > limit:
            self._fail(ResponseTooLarge(f"response body is larger than max_body_bytes ({limit})"))
            self._close()
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
                waiter.set_result((self._status, stream))  # type: ignore[arg-type]
            stream._end()
            if self._parser.should_keep_alive() and not self.closed:
                self.served += 1
                self.client._release(self)
            else:
                self._close()
            return
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        if self._encoding not in (None, b"identity"):
            body = _decode(body, self._encoding, self.client.limits.max_decompressed_bytes)
        if not waiter.done():
            if isinstance(body, Exception):
                waiter.set_exception(body)
            else:
                waiter.set_result((self._status, body))
        if self._parser.should_keep_alive() and not self.closed:
            self.served += 1
            self.client._release(self)
        else:
            self._close()

    # ---- requests -----------------------------------------------------------------------
    def send(self, data: bytes, stream: bool = False) -> asyncio.Future[tuple[int, bytes]]:
        """Write a request; the future gets (status, body) or a failure kind. If nobody
        awaits it (cancelled), the answer is still read and the connection reused. With
        `stream`, it gets (status, BodyStream) as soon as the head has arrived."""
        loop = self.client.loop
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        self._stream = BodyStream(self) if stream else None
        self._chunks = []
        self._encoding = None
        self._received = False
        self._status = 0
        self._framed = False
        self._fed = self._head_size = self._body_size = 0
        self._sent_at = now = loop.time()
        timeout = self.client.read_timeout
        if timeout is not None:
            self._last_data = now
            self._timer = loop.call_at(now + timeout, self._check_timeout)
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    async def request(self, data: bytes, stream: bool = False) -> tuple[int, Any]:
        waiter = self.send(data, stream)
        try:
            return await waiter
        except asyncio.CancelledError:
            # The caller is gone and may never come back for the answer: don't keep the
            # connection busy waiting for it.
            self._waiter = None
            self._close()
            raise

    def _check_timeout(self) -> None:
        timeout = self.client.read_timeout
        assert timeout is not None
        remaining = self._last_data + timeout - self.client.loop.time()
        if remaining > 0:  # data arrived since the timer was set: wait for the rest
            self._timer = self.client.loop.call_later(remaining, self._check_timeout)
            return
        self._timer = None
        self._fail(ReadTimeout(f"{timeout}s"))
        self._close()

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

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.client._forget(self)


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise ResponseTooLarge(f"decompressed response body is larger than max_decompressed_bytes ({limit})")
    return out


def _decode(body: bytes, encoding: bytes, limit: int) -> bytes | Exception:
    """We never ask for compression; decode it anyway if a proxy in between adds it, bounded so
    that a small compressed answer cannot expand into gigabytes."""
    try:
        if encoding in (b"gzip", b"x-gzip"):
            return _inflate(body, 16 + zlib.MAX_WBITS, limit)
        if encoding == b"deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:
                return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        return ProtocolError(f"cannot decode {encoding.decode('latin-1')} body: {exc}")
    except ResponseTooLarge as exc:
        return exc
    return ProtocolError(f"unsupported content-encoding {encoding.decode('latin-1')!r}")


class Http1UpstreamClient:
    """Pooled keep-alive connections per origin, most recently used first, at most
    `max_connections` open at once (further requests wait for one to free up)."""

    def __init__(
        self,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float | None,
        # Below uvicorn's (hence vLLM's) 5 s keep-alive, so we rarely reuse a connection the
        # server is closing at the same moment.
        keepalive: float = 4.0,
        headers: dict[str, str] | None = None,
        pool_timeout: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_timeout = pool_timeout
        self.keepalive = keepalive
        self.limits = limits or Limits()
        self._headers = {"content-type": "application/json", **(headers or {})}
        for name, value in self._headers.items():
            check_header_value(name, value)
        self._targets: dict[str, _Target] = {}
        self._idle: dict[Origin, dict[_Connection, None]] = {}
        self._all: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, tuple[Any, ...]]]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Task[list[tuple[int, tuple[Any, ...]]]]] = {}
        self._closed = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """Used without `start()`: bind to the running loop on first use instead of failing."""
        self.loop = asyncio.get_running_loop()
        return self.loop

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:  # a handful of distinct URLs: parse each once, not per request
            target = self._targets[url] = _parse_target(url, self._headers)
        return target

    async def post(self, url: str, content: bytes) -> tuple[int, bytes]:
        if self.loop is None:
            self._bind_loop()
        target = self._target(url)
        conn = self._pop_idle(target.origin) or await self._open(target.origin)
        return await conn.request(target.post_request(content))

    async def post_stream(self, url: str, content: bytes) -> tuple[int, BodyStream]:
        """POST and return as soon as the answer's head is in: (status, its body as a stream)."""
        if self.loop is None:
            self._bind_loop()
        target = self._target(url)
        conn = self._pop_idle(target.origin) or await self._open(target.origin)
        return await conn.request(target.post_request(content), stream=True)

    def post_nowait(self, url: str, content: bytes) -> asyncio.Future[tuple[int, bytes]] | None:
        """Send at once on an idle connection and return the answer's future, or None when no
        connection is idle (then use `post`). No coroutine or task per request: a /tokenize
        call can go out beside the generation for the cost of one write."""
        if self.loop is None or self._closed:
            return None
        target = self._target(url)
        conn = self._pop_idle(target.origin)
        if conn is None:
            return None
        return conn.send(target.post_request(content))

    async def get_status(self, url: str, timeout_s: float) -> int:
        if self.loop is None:
            self._bind_loop()
        try:
            async with asyncio.timeout(timeout_s):
                target = self._target(url)
                conn = self._pop_idle(target.origin) or await self._open(target.origin)
                return (await conn.request(target.get_request))[0]
        except (TimeoutError, ReadTimeout):
            raise ConnectTimeout(f"no answer within {timeout_s}s") from None

    # ---- the pool -------------------------------------------------------------------------
    def _pop_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = self.loop.time()
        while idle:
            conn = idle.popitem()[0]
            if conn.closed or conn.transport.is_closing():  # type: ignore[union-attr]
                continue  # the server closed it; connection_lost will forget it
            if now - conn.idle_since < self.keepalive:
                return conn
            # The most recently used is already too old, so every other one is too.
            conn._close()
            for stale in list(idle):
                stale._close()
        return None

    async def _open(self, origin: Origin) -> _Connection:
        if self._closed:
            raise ClientClosed("client is closed")
        deadline = None if self.pool_timeout is None else self.loop.time() + self.pool_timeout
        while len(self._all) + self._opening >= self.max_connections:
            if self._evict_idle():
                break
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    async with asyncio.timeout_at(deadline):
                        await waiter
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise PoolTimeout(
                    f"no free connection within timeouts.pool ({self.pool_timeout}s); "
                    f"all {self.max_connections} (max_connections) are busy"
                ) from None
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were handed a free slot: pass it on
                raise
            if self._closed:
                raise ClientClosed("client is closed")
            conn = self._pop_idle(origin)
            if conn is not None:
                return conn
        self._opening += 1
        try:
            conn = await self._connect(origin)
        finally:
            self._opening -= 1
        self._all.add(conn)
        return conn

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        ssl_context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ssl_context = self._ssl
        error: Exception | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                for family, address in await self._resolve(host, port):
                    try:
                        _, conn = await self.loop.create_connection(
                            lambda: _Connection(self, origin),
                            address[0],
                            address[1],
                            family=family,
                            ssl=ssl_context,
                            server_hostname=host if ssl_context else None,
                        )
                        return conn
                    except OSError as exc:  # refused on this address: try the next one
                        error = exc
        except TimeoutError:
            self._wake_one()
            raise ConnectTimeout(f"no connection to {host}:{port} within {self.connect_timeout}s") from None
        except OSError as exc:
            error = exc
        except BaseException:
            self._wake_one()
            raise
        self._wake_one()
        detail = getattr(error, "strerror", None) or error
        raise ConnectError(f"cannot connect to {host}:{port}: {detail}") from None

    async def _resolve(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        """Addresses of `host`, cached for DNS_TTL seconds and shared by concurrent lookups: a
        burst of new connections (1,024 rollouts starting at once) asks the resolver once."""
        key = (host, port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > self.loop.time():
            return cached[1]
        pending = self._resolving.get(key)
        if pending is None:
            pending = self._resolving[key] = self.loop.create_task(self._lookup(host, port))
            pending.add_done_callback(lambda _: self._resolving.pop(key, None))
        return await asyncio.shield(pending)

    async def _lookup(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
        if not addresses:
            raise OSError(f"no address for {host}")
        self._dns[(host, port)] = (self.loop.time() + DNS_TTL, addresses)
        return addresses

    def _evict_idle(self) -> bool:
        """At the connection limit, an idle connection to another origin gives up its slot."""
        for idle in self._idle.values():
            if idle:
                next(iter(idle))._close()
                return True
        return False

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn._close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, {})[conn] = None
        self._wake_one()

    def _forget(self, conn: _Connection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            idle = self._idle.get(conn.origin)
            if idle:
                idle.pop(conn, None)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()  # cancelled waiters are skipped here
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn._close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ClientClosed("client is closed"))
        self._waiters.clear()
