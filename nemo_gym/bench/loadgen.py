"""A bounded load generator: N workers, each with its own keep-alive connection and session
cookie, for a fixed time.

Each worker is a raw asyncio protocol parsed by httptools on uvloop, not an HTTP client
library: with aiohttp as the caller, the caller itself topped out near 8k req/s at 1,024
connections on this 2-core machine, below what the adapter serves, so the benchmark measured
the load generator. The "direct upstream" row of `make bench` reports this generator's ceiling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httptools
import uvloop

T = TypeVar("T")


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    # Time from sending a request to its first body byte (what a streaming caller waits for).
    first_byte_ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float, of: list[float] | None = None) -> float:
        values = self.latencies_ms if of is None else of
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a load on uvloop (the default loop costs the caller more than the adapter)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class _Connection(asyncio.Protocol):
    """One worker's connection: one request in flight; remembers the session cookie."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.status = 0
        self.set_cookie: bytes | None = None
        self.closed = False
        self.first_byte = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"set-cookie":
            self.set_cookie = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if not self.parser.should_keep_alive():
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, data: bytes) -> asyncio.Future[int]:
        self.first_byte = 0.0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiter


@dataclass(slots=True)
class _Tally:
    """What the workers did: requests sent, and those that started and ended in the measured window."""

    measure_from: float
    stop_at: float
    sent: int = 0
    requests: int = 0
    errors: int = 0
    last_end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)

    def record(self, t0: float, t1: float, ok: bool, first_byte: float) -> None:
        if t0 >= self.measure_from and t1 <= self.stop_at:
            self.last_end = t1
            self.requests += 1
            self.latencies.append((t1 - t0) * 1000)
            if first_byte:
                self.first_bytes.append((first_byte - t0) * 1000)
            if not ok:
                self.errors += 1

    def result(self, duration: float) -> LoadResult:
        # A run cut short by max_requests measured less than `duration`.
        measured = min(duration, max(self.last_end - self.measure_from, 1e-9))
        return LoadResult(self.requests, self.errors, measured, self.latencies, self.first_bytes)


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    head: bytes  # request line and headers up to the cookie
    tail: bytes  # content-length, blank line and body

    @classmethod
    def of(cls, url: str, body: bytes) -> _Target:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n".encode()
        return cls(host, port, head, b"content-length: %d\r\n\r\n%b" % (len(body), body))


async def _worker(target: _Target, tally: _Tally, max_requests: int, sticky: bool) -> None:
    """One connection posting back to back until the window ends; keeps the first session cookie."""
    loop = asyncio.get_running_loop()
    conn: _Connection | None = None
    request = target.head + target.tail
    have_cookie = False
    try:
        while time.perf_counter() < tally.stop_at and tally.sent < max_requests:
            tally.sent += 1
            t0 = time.perf_counter()
            ok = False
            try:
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(_Connection, target.host, target.port)
                ok = await conn.send(request) == 200
                if sticky and not have_cookie and conn.set_cookie:
                    have_cookie = True
                    cookie = b"cookie: " + conn.set_cookie.split(b";", 1)[0] + b"\r\n"
                    request = target.head + cookie + target.tail
            except OSError:
                conn = None
            tally.record(t0, time.perf_counter(), ok, conn.first_byte if conn is not None else 0.0)
    finally:
        if conn is not None and conn.transport is not None:
            conn.transport.close()


async def run_load(
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    warmup: float = 0.5,
    max_requests: int = 2_000_000,
    on_window: Callable[[str], None] | None = None,
    sticky: bool = True,
) -> LoadResult:
    """POST `body` to `url` from `concurrency` workers for `warmup + duration` seconds; only the
    measured window counts. Bounded by time and by `max_requests`. `on_window("start"|"end")`
    is called at the window's edges (to read the adapter's CPU time over exactly that span).
    `sticky=False` sends no cookie, so every request is a new session."""
    target = _Target.of(url, body)
    start = time.perf_counter()
    tally = _Tally(start + warmup, start + warmup + duration)
    if on_window is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(warmup, on_window, "start")
        loop.call_later(warmup + duration, on_window, "end")
    await asyncio.gather(*(_worker(target, tally, max_requests, sticky) for _ in range(concurrency)))
    return tally.result(duration)
