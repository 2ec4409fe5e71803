"""The upstream pool: one pooled client per vLLM server, retries, failover and health probes."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from nemo_gym.upstream.client import (
    HttpxUpstreamClient,
    UpstreamBrokenResponse,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamConnectionLost,
    UpstreamReadTimeout,
)
from nemo_gym.upstream.errors import UpstreamError, lacks_v1, missing_v1_message, upstream_http_error
from nemo_gym.upstream.http1 import Http1UpstreamClient
from nemo_gym.upstream.router import SessionRouter

logger = logging.getLogger("nemo_gym.upstream")
_RETRY_STATUSES = (502, 503, 504)
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class UpstreamSettings:
    base_urls: tuple[str, ...]
    api_key: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float | None = None
    max_connections: int = 4096
    max_retries: int = 3
    retry_backoff: float = 0.1
    routing: str = "round_robin"
    max_sessions: int = 100_000
    probe_interval: float = 1.0


@dataclass
class Upstream:
    index: int
    base_url: str  # ends with /v1
    root_url: str  # /tokenize and /health live here
    client: UpstreamClient
    probe: asyncio.Task[None] | None = field(default=None, repr=False)

    def url(self, path: str, at_root: bool) -> str:
        return (self.root_url if at_root else self.base_url) + path


def root_of(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


class UpstreamPool:
    """`client_factory` (tests) returns an httpx.AsyncClient per upstream; default: `Http1UpstreamClient`."""

    def __init__(self, settings: UpstreamSettings, client_factory: Any = None) -> None:
        if not settings.base_urls:
            raise ValueError("at least one upstream base_url is required")
        self.settings = settings
        self.router = SessionRouter(len(settings.base_urls), settings.routing, settings.max_sessions)
        self._client_factory = client_factory or self._make_client
        self.upstreams: list[Upstream] = []
        headers = dict(_JSON)
        if settings.api_key and settings.api_key != "EMPTY":
            headers["authorization"] = f"Bearer {settings.api_key}"
        self._headers = headers

    def _make_client(self) -> UpstreamClient:
        s = self.settings
        # The client carries the fixed headers itself; per-request headers stay empty.
        return Http1UpstreamClient(
            s.max_connections, s.connect_timeout, s.read_timeout, headers=self._headers
        )

    async def start(self) -> None:
        self.upstreams = []
        for i, url in enumerate(self.settings.base_urls):
            client = self._client_factory()
            if isinstance(client, httpx.AsyncClient):
                client = HttpxUpstreamClient(client, self._headers)
            await client.start()
            self.upstreams.append(Upstream(i, url.rstrip("/"), root_of(url), client))

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            if upstream.probe:
                upstream.probe.cancel()
            await upstream.client.aclose()

    def route(self, session_id: str | None) -> Upstream:
        return self.upstreams[self.router.route(session_id)]

    # ---- health ---------------------------------------------------------------------
    def _mark_down(self, upstream: Upstream) -> None:
        if upstream.index in self.router.down:
            return
        logger.warning(
            "upstream %s is unreachable; routing its sessions elsewhere until it is healthy",
            upstream.base_url,
        )
        self.router.down.add(upstream.index)
        upstream.probe = asyncio.get_running_loop().create_task(self._probe_until_healthy(upstream))

    async def _probe_until_healthy(self, upstream: Upstream) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            if await self.check_health(upstream) is None:
                self.router.down.discard(upstream.index)
                logger.warning("upstream %s is healthy again", upstream.base_url)
                upstream.probe = None
                return

    async def check_health(self, upstream: Upstream) -> str | None:
        """None when healthy, else a short reason.

        vLLM's `/health` sits at the root and answers 200 whatever the base_url's path, so a
        base_url without `/v1` would look healthy while every request 404s; ask its `/models` too.
        """
        try:
            if lacks_v1(upstream.base_url):
                models_url = upstream.base_url.rstrip("/") + "/models"
                if await upstream.client.get_status(models_url, timeout_s=5.0) == 404:
                    return missing_v1_message(models_url)
            status = await upstream.client.get_status(upstream.root_url + "/health", timeout_s=5.0)
        except UpstreamConnectError as exc:
            return str(exc)
        return None if status == 200 else f"HTTP {status}"

    async def health_report(self) -> list[dict[str, Any]]:
        reasons = await asyncio.gather(*(self.check_health(u) for u in self.upstreams))
        report = []
        for upstream, reason in zip(self.upstreams, reasons, strict=True):
            entry: dict[str, Any] = {
                "url": upstream.base_url,
                "status": "healthy" if reason is None else "unhealthy",
            }
            if reason is not None:
                entry["error"] = reason
            entry["routed"] = upstream.index not in self.router.down
            report.append(entry)
        return report

    # ---- requests -------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        base = self.settings.retry_backoff * (2**attempt)
        return base + random.uniform(0, base)

    def post_nowait(
        self, path: str, body: dict[str, Any], upstream: Upstream, *, at_root: bool = False
    ) -> asyncio.Future[tuple[int, bytes]] | None:
        """Send now without retries if the upstream's client has an idle connection (see
        `Http1UpstreamClient.post_nowait`); None otherwise. Pair with `nowait_result`."""
        send = getattr(upstream.client, "post_nowait", None)
        if send is None:
            return None
        return send(upstream.url(path, at_root), orjson.dumps(body))

    @staticmethod
    async def nowait_result(future: asyncio.Future[tuple[int, bytes]]) -> dict[str, Any] | None:
        """The parsed answer of a `post_nowait`, or None if it failed in any way: the caller
        then asks again through `post`, which retries and reports errors properly."""
        try:
            status, payload = await future
        except (UpstreamConnectError, UpstreamReadTimeout, UpstreamBrokenResponse):
            return None
        if status != 200:
            return None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None

    @staticmethod
    def abandon(future: asyncio.Future[tuple[int, bytes]]) -> None:
        """Drop a `post_nowait` answer nobody will read (its connection still finishes it)."""
        if not future.cancel() and not future.cancelled():
            future.exception()  # retrieved: no "exception was never retrieved" at GC

    async def post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        session_id: str | None = None,
        upstream: Upstream | None = None,
        at_root: bool = False,
    ) -> tuple[dict[str, Any], Upstream]:
        """POST JSON, retrying what is safe to retry; returns (parsed body, the upstream that answered).

        Safe to retry: failures before the request reached a server (connection refused/reset
        on connect, pool timeout) — then the session moves to another upstream — and 502/503/504.
        A read timeout or a connection lost mid-response is NOT retried: the generation may be
        running, and sending it twice would double GPU work and could duplicate rollouts.
        """
        upstream = upstream or self.route(session_id)
        content = orjson.dumps(body)
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            url = upstream.url(path, at_root)
            last = attempt == attempts - 1
            try:
                status, payload = await upstream.client.post(url, content)
            except UpstreamConnectError as exc:
                if not isinstance(exc, UpstreamConnectionLost):
                    self._mark_down(upstream)
                if last:
                    raise UpstreamError(
                        503,
                        f"cannot connect to upstream {upstream.base_url} ({exc}) after {attempts} attempts",
                    ) from None
                await asyncio.sleep(self._backoff(attempt))
                upstream = self.route(session_id)  # skips upstreams marked down
                continue
            except UpstreamReadTimeout:
                raise UpstreamError(
                    504,
                    f"upstream {upstream.base_url} did not answer within the read timeout ({self.settings.read_timeout}s)",
                ) from None
            except UpstreamBrokenResponse as exc:
                raise UpstreamError(
                    502, f"upstream {upstream.base_url} failed mid-response ({exc})"
                ) from None
            if status in _RETRY_STATUSES and not last:
                await asyncio.sleep(self._backoff(attempt))
                continue
            if status >= 400:
                error = upstream_http_error(status, payload, body)
                if status == 404 and lacks_v1(upstream.base_url):
                    error.message = missing_v1_message(url)
                elif status >= 500:
                    error.message = f"upstream {upstream.base_url} returned {status}: {error.message}"
                raise error
            try:
                return orjson.loads(payload), upstream
            except orjson.JSONDecodeError:
                raise UpstreamError(
                    502, f"upstream {upstream.base_url} returned malformed JSON (HTTP {status})"
                ) from None
        raise AssertionError("unreachable")
