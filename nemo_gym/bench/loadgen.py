"""A bounded async load generator: N workers, each one session (its cookie), for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    connector = aiohttp.TCPConnector(limit=concurrency + 8, limit_per_host=0, force_close=False)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    counters = {"requests": 0, "errors": 0, "sent": 0}
    last_end = [0.0]
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    if on_window is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(warmup, on_window, "start")
        loop.call_later(warmup + duration, on_window, "end")
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def worker() -> None:
            cookie: str | None = None
            while True:
                now = time.perf_counter()
                if now >= stop_at or counters["sent"] >= max_requests:
                    return
                counters["sent"] += 1
                req_headers = dict(headers, cookie=cookie) if cookie else headers
                t0 = time.perf_counter()
                ok = False
                try:
                    async with session.post(url, data=body, headers=req_headers) as response:
                        await response.read()
                        ok = response.status == 200
                        if sticky and cookie is None and "set-cookie" in response.headers:
                            cookie = response.headers["set-cookie"].split(";", 1)[0]
                except aiohttp.ClientError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    last_end[0] = t1
                    counters["requests"] += 1
                    latencies.append((t1 - t0) * 1000)
                    if not ok:
                        counters["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    # A run cut short by max_requests measured less than `duration`.
    measured = min(duration, max(last_end[0] - measure_from, 1e-9))
    return LoadResult(counters["requests"], counters["errors"], measured, latencies)
