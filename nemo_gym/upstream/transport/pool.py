"""The lean transport: pooled keep-alive HTTP/1.1 connections (`connection.Connection`) per
origin, most recently used first, at most `max_connections` open at once, and a DNS cache.

Why not aiohttp on the hot path: per request it builds a request object, merges headers,
resolves a payload type, starts a writer task and feeds a stream reader; profiled under load
that was a third of the adapter's CPU and the reason a /tokenize round trip cost 0.09 ms
(docs/performance.md). We only ever POST a finished JSON body and read a whole JSON answer (or
an SSE stream). What it does not do, on purpose: proxies, cookies, redirects, HTTP/2.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from typing import Any

from nemo_gym.exceptions import ClientClosed, ConnectError, ConnectTimeout, PoolTimeout, ReadTimeout
from nemo_gym.upstream.config import Timeouts
from nemo_gym.upstream.transport.base import (
    KEEPALIVE,
    Answer,
    Dial,
    Limits,
    Network,
    ProtocolFactory,
    StreamAnswer,
    busy_message,
    request_headers,
)
from nemo_gym.upstream.transport.connection import Connection, Origin, Target, parse_target

DNS_TTL = 300.0  # seconds a resolved upstream address is reused for new connections
Addresses = list[tuple[int, tuple[Any, ...]]]


class SocketNetwork:
    """The real network: the running loop's resolver and sockets."""

    async def resolve(self, host: str, port: int) -> Addresses:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(family, sockaddr) for family, _, _, _, sockaddr in infos]

    async def connect(self, protocol_factory: ProtocolFactory, dial: Dial) -> asyncio.Protocol:
        _, protocol = await asyncio.get_running_loop().create_connection(
            protocol_factory,
            dial.address[0],
            dial.address[1],
            family=dial.family,
            ssl=dial.ssl_context,
            server_hostname=dial.server_hostname,
        )
        return protocol


class LeanTransport:
    """The `UpstreamTransport` of plain-HTTP upstreams: further requests wait for a connection
    to free up (at most `timeouts.pool` seconds)."""

    def __init__(
        self,
        max_connections: int,
        timeouts: Timeouts,
        keepalive: float = KEEPALIVE,
        headers: dict[str, str] | None = None,
        limits: Limits | None = None,
        network: Network | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.timeouts = timeouts
        self.read_timeout = timeouts.read  # read by every connection on every request
        self.keepalive = keepalive
        self.limits = limits or Limits()
        self.network: Network = network or SocketNetwork()
        self._headers = request_headers(headers)
        self._targets: dict[str, Target] = {}
        self._idle: dict[Origin, dict[Connection, None]] = {}
        self._all: set[Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._dns: dict[tuple[str, int], tuple[float, Addresses]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Task[Addresses]] = {}
        self._closed = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    def _target(self, url: str) -> Target:
        if self.loop is None:  # used without `start()`: bind to the running loop on first use
            self.loop = asyncio.get_running_loop()
        target = self._targets.get(url)
        if target is None:  # a handful of distinct URLs: parse each once, not per request
            target = self._targets[url] = parse_target(url, self._headers)
        return target

    async def post(self, url: str, content: bytes) -> Answer:
        target = self._target(url)
        conn = self._pop_idle(target.origin) or await self._open(target.origin)
        return await conn.request(target.post_request(content))

    async def post_stream(self, url: str, content: bytes) -> StreamAnswer:
        """POST and return as soon as the answer's head is in: (status, its body as a stream)."""
        target = self._target(url)
        conn = self._pop_idle(target.origin) or await self._open(target.origin)
        return await conn.request(target.post_request(content), stream=True)

    async def get_status(self, url: str, timeout_s: float) -> int:
        target = self._target(url)
        try:
            async with asyncio.timeout(timeout_s):
                conn = self._pop_idle(target.origin) or await self._open(target.origin)
                return (await conn.request(target.get_request)).status
        except (TimeoutError, ReadTimeout):
            raise ConnectTimeout(f"no answer within {timeout_s}s") from None

    # ---- the pool -------------------------------------------------------------------------
    def _pop_idle(self, origin: Origin) -> Connection | None:
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
            conn.close()
            for stale in list(idle):
                stale.close()
        return None

    async def _open(self, origin: Origin) -> Connection:
        if self._closed:
            raise ClientClosed("client is closed")
        pool_timeout = self.timeouts.pool
        deadline = None if pool_timeout is None else self.loop.time() + pool_timeout
        while len(self._all) + self._opening >= self.max_connections:
            if self._evict_idle():
                break
            await self._wait_for_slot(deadline)
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

    async def _wait_for_slot(self, deadline: float | None) -> None:
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
            raise PoolTimeout(busy_message(self.timeouts.pool, self.max_connections)) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # we were handed a free slot: pass it on
            raise
        if self._closed:
            raise ClientClosed("client is closed")

    async def _connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        ssl_context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ssl_context = self._ssl
        error: Exception | None = None
        try:
            async with asyncio.timeout(self.timeouts.connect):
                for family, address in await self._resolve(host, port):
                    try:
                        dial = Dial(family, address, ssl_context, host if ssl_context else None)
                        return await self.network.connect(lambda: Connection(self, origin), dial)  # type: ignore[return-value]
                    except OSError as exc:  # refused on this address: try the next one
                        error = exc
        except TimeoutError:
            self._wake_one()
            raise ConnectTimeout(f"no connection to {host}:{port} within {self.timeouts.connect}s") from None
        except OSError as exc:
            error = exc
        except BaseException:
            self._wake_one()
            raise
        self._wake_one()
        detail = getattr(error, "strerror", None) or error
        raise ConnectError(f"cannot connect to {host}:{port}: {detail}") from None

    async def _resolve(self, host: str, port: int) -> Addresses:
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

    async def _lookup(self, host: str, port: int) -> Addresses:
        addresses = await self.network.resolve(host, port)
        if not addresses:
            raise OSError(f"no address for {host}")
        self._dns[(host, port)] = (self.loop.time() + DNS_TTL, addresses)
        return addresses

    def _evict_idle(self) -> bool:
        """At the connection limit, an idle connection to another origin gives up its slot."""
        for idle in self._idle.values():
            if idle:
                next(iter(idle)).close()
                return True
        return False

    def release(self, conn: Connection) -> None:
        """`conn` finished its answer and may serve the next request."""
        if self._closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, {})[conn] = None
        self._wake_one()

    def forget(self, conn: Connection) -> None:
        """`conn` is closed: its slot is free."""
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
            conn.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ClientClosed("client is closed"))
        self._waiters.clear()
