"""The upstream pool: one transport (`nemo_gym.upstream.transport`) per vLLM server, retries,
failover and health probes.

Retry rules (each retry is counted by reason and logged):
- a reused keep-alive connection the server had just closed (`StaleConnection`): sent again at
  once on the same upstream, once per request; the upstream is not suspected;
- nothing was sent (connect refused, unreachable, connect timeout) or the connection was closed
  with no answer in any other case (`ConnectionDropped`): an upstream failure. It is marked
  suspect (no new traffic until its health probe answers), and the request is retried with
  backoff, at most `max_retries` times, on whichever upstream the session is re-pinned to;
- 502/503/504 (`nemo_gym.http.retry.GATEWAY_STATUSES`): retried on the same upstream with
  backoff, at most `max_retries` times;
- never retried: a read timeout or an answer that broke off (the generation ran, and sending it
  twice would double GPU work), a full connection pool, a closed client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, Unpack

import orjson

from nemo_gym.exceptions import (
    ClientClosed,
    ConnectionDropped,
    NotSent,
    PoolTimeout,
    StaleConnection,
    TransportError,
    UpstreamError,
    api_error_for,
)
from nemo_gym.http.retry import GATEWAY_STATUSES, RetryPolicy
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.errors import lacks_v1, missing_v1_message, upstream_http_error
from nemo_gym.upstream.router import SessionRouter
from nemo_gym.upstream.transport.base import BodyStream, Limits, Network, UpstreamTransport
from nemo_gym.upstream.transport.pool import LeanTransport

logger = logging.getLogger("nemo_gym.upstream")
_JSON = {"content-type": "application/json"}


@dataclass
class Upstream:
    index: int
    base_url: str  # ends with /v1
    root_url: str  # /tokenize and /health live here
    transport: UpstreamTransport
    probe: asyncio.Task[None] | None = field(default=None, repr=False)
    in_flight: int = 0
    # A prometheus histogram child (the adapter's /metrics), or None when nobody collects.
    latency: Any = field(default=None, repr=False)

    def url(self, path: str, at_root: bool) -> str:
        return (self.root_url if at_root else self.base_url) + path


class Answered(NamedTuple):
    data: dict[str, Any]  # the answer's JSON
    upstream: Upstream  # who answered


class AnsweredRaw(NamedTuple):
    body: bytes
    upstream: Upstream


class Opened(NamedTuple):
    stream: BodyStream  # the answer's body, as it arrives
    upstream: Upstream


class Where(TypedDict, total=False):
    """Where a request goes: `upstream` itself, else the one `session_id` is pinned to; with
    `at_root`, under the server's root (/tokenize, /health) rather than its /v1."""

    session_id: str | None
    upstream: Upstream | None
    at_root: bool


# (status, body as bytes or as a BodyStream, the upstream that answered, the URL asked): a
# plain tuple, as it is made on every request.
_Exchanged = tuple[int, Any, Upstream, str]


def root_of(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def transport_for(
    config: UpstreamConfig, url: str, headers: dict[str, str], network: Network | None = None
) -> UpstreamTransport:
    """The transport `config.upstream_client` picks for `url` (with `network`, always the lean
    one: aiohttp opens its own sockets). It carries the fixed `headers` itself."""
    kind = config.upstream_client
    if network is None and (kind == "aiohttp" or (kind == "auto" and url.startswith("https://"))):
        from nemo_gym.upstream.transport.aiohttp import AiohttpTransport

        return AiohttpTransport(config, headers=headers)
    limits = config.limits
    return LeanTransport(
        config.max_connections,
        config.timeouts,
        headers=headers,
        limits=Limits(limits.max_header_bytes, limits.max_body_bytes, limits.max_decompressed_bytes),
        network=network,
    )


class UpstreamPool:
    """One transport per upstream, picked by `config.upstream_client` (the lean transport for
    http://, aiohttp for https://). `network` replaces the sockets under the lean transport
    (tests give a `MockTransport`; every upstream then uses the lean transport); set it before
    `start()`."""

    def __init__(
        self, config: UpstreamConfig, *, network: Network | None = None, probe_interval: float = 1.0
    ) -> None:
        if not config.base_url:
            raise ValueError("at least one upstream base_url is required")
        self.config = config
        self.network = network
        self.probe_interval = probe_interval
        self.router = SessionRouter(len(config.base_url), config.routing, config.max_sessions)
        self.upstreams: list[Upstream] = []
        self._headers = {**_JSON, **config.auth_headers()}
        self.retry = RetryPolicy(
            frozenset(GATEWAY_STATUSES), config.max_retries, config.retry_backoff, logger=logger
        )
        self.retries = self.retry.counts  # reason -> retries made

    async def start(self) -> None:
        self.upstreams = []
        for i, url in enumerate(self.config.base_url):
            transport = transport_for(self.config, url, self._headers, self.network)
            await transport.start()
            self.upstreams.append(Upstream(i, url.rstrip("/"), root_of(url), transport))

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            if upstream.probe:
                upstream.probe.cancel()
            await upstream.transport.aclose()

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
            await asyncio.sleep(self.probe_interval)
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
                if await upstream.transport.get_status(models_url, timeout_s=5.0) == 404:
                    return missing_v1_message(models_url)
            status = await upstream.transport.get_status(upstream.root_url + "/health", timeout_s=5.0)
        except TransportError as exc:
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
    async def post(self, path: str, body: dict[str, Any], **where: Unpack[Where]) -> Answered:
        """POST JSON under the retry rules above; returns the parsed body and who answered."""
        exchanged = await self._exchange(path, body, where, False)
        return Answered(self._answer(exchanged, body), exchanged[2])  # (…, upstream, url)

    async def post_raw(self, path: str, body: dict[str, Any], **where: Unpack[Where]) -> AnsweredRaw:
        """As `post`, but the answer's body as received: for a caller that reads only part of a
        large answer (the adapter's splice compares /tokenize answers byte for byte)."""
        status, payload, upstream, url = exchanged = await self._exchange(path, body, where, False)
        if status >= 400:
            self._answer(exchanged, body)  # raises what `post` would
        return AnsweredRaw(payload, upstream)

    async def post_stream(self, path: str, body: dict[str, Any], **where: Unpack[Where]) -> Opened:
        """POST JSON and return the answer's body as a stream of chunks once a 2xx head is in.

        The retry rules are the same, and apply only before the answer starts: a stream that
        breaks off later raises from its iteration and is never re-sent. Error answers are read
        whole and raised as for `post` (so a context-length error is still recognised)."""
        status, stream, upstream, url = await self._exchange(path, body, where, True)
        if status >= 300:
            try:
                payload = await stream.read()
            except TransportError as exc:
                raise api_error_for(exc, upstream.base_url) from None
            self._answer((status, payload, upstream, url), body)
        return Opened(stream, upstream)

    async def _exchange(self, path: str, body: dict[str, Any], where: Where, stream: bool) -> _Exchanged:
        session_id = where.get("session_id")
        at_root = where.get("at_root", False)
        upstream = where.get("upstream") or self.route(session_id)
        content = orjson.dumps(body)
        retry = self.retry
        max_retries = retry.max_retries
        retries = 0
        stale_resent = False
        while True:
            url = upstream.url(path, at_root)
            upstream.in_flight += 1
            latency = upstream.latency
            started = asyncio.get_running_loop().time() if latency is not None else 0.0
            try:
                if stream:
                    status, payload = await upstream.transport.post_stream(url, content)
                else:
                    status, payload = await upstream.transport.post(url, content)
            except StaleConnection as exc:
                if not stale_resent:
                    stale_resent = True
                    retry.record(exc.reason, f"POST {url}", retries, exc)
                    continue
                failure: TransportError = ConnectionDropped(f"{exc} (again, on a new connection)")
            except (PoolTimeout, ClientClosed) as exc:
                raise api_error_for(exc, upstream.base_url) from None
            except (NotSent, ConnectionDropped) as exc:
                failure = exc
            except TransportError as exc:  # read timeout, broken or oversized answer: never re-sent
                raise api_error_for(exc, upstream.base_url) from None
            else:
                if latency is not None:  # for a stream: the time to its head
                    latency.observe(asyncio.get_running_loop().time() - started)
                if status not in retry.statuses or retries >= max_retries:
                    return status, payload, upstream, url
                if stream:
                    await payload.aclose()
                retries += 1
                retry.record(f"status_{status}", f"POST {url}", retries, f"HTTP {status}")
                await asyncio.sleep(retry.delay(retries))
                continue
            finally:
                upstream.in_flight -= 1
            retries = self._upstream_failed(upstream, url, failure, retries)
            await asyncio.sleep(retry.delay(retries))
            upstream = self.route(session_id)

    def _upstream_failed(self, upstream: Upstream, url: str, failure: TransportError, retries: int) -> int:
        """A failure before any answer: suspect the upstream (the session moves), then raise
        if no retry is left; else count the next retry and return its number."""
        self._mark_down(upstream)
        if retries >= self.retry.max_retries:
            error = api_error_for(failure, upstream.base_url)
            error.message += f" after {retries + 1} attempts"
            raise error from None
        retries += 1
        self.retry.record(failure.reason, f"POST {url}", retries, failure)
        return retries

    @staticmethod
    def _answer(exchanged: _Exchanged, body: dict[str, Any]) -> dict[str, Any]:
        status, payload, upstream, url = exchanged
        if status >= 400:
            error = upstream_http_error(status, payload, body)
            if status == 404 and lacks_v1(upstream.base_url):
                error.message = missing_v1_message(url)
            elif status >= 500:
                error.message = f"upstream {upstream.base_url} returned {status}: {error.message}"
            raise error
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                502, f"upstream {upstream.base_url} returned malformed JSON (HTTP {status})"
            ) from None
