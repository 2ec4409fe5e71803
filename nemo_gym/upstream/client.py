"""The upstream HTTP client behind one small interface: POST bytes, get (status, bytes).

Production uses aiohttp directly: on this machine the httpx layer alone cost more CPU per
request than all of our conversion work (see docs/benchmarks.md). Tests plug in the httpx
implementation, so respx can mock upstreams. Both map failures to the three kinds the retry
logic needs: nothing was sent (safe to retry), the read timed out, or the answer broke off.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
import httpx
from yarl import URL


class UpstreamConnectError(Exception):
    """The request never reached a server (refused, reset before any answer): safe to retry."""


class UpstreamConnectionLost(UpstreamConnectError):
    """The server closed the connection before answering: usually a kept-alive connection the
    server had just closed as idle. Retried on the same upstream; not a sign it is down."""


class UpstreamReadTimeout(Exception):
    """No answer within the read timeout: the generation may still run, so never retried."""


class UpstreamBrokenResponse(Exception):
    """The answer started but broke off: never retried (the generation happened)."""


class UpstreamClient(Protocol):
    async def start(self) -> None: ...

    async def post(self, url: str, content: bytes) -> tuple[int, bytes]: ...

    async def get_status(self, url: str, timeout_s: float) -> int: ...

    async def aclose(self) -> None: ...


class AiohttpUpstreamClient:
    """One pooled aiohttp session per upstream, created inside the running loop."""

    def __init__(
        self,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float | None,
        # Below uvicorn's (hence vLLM's) 5 s keep-alive, so we rarely reuse a connection the
        # server is closing at the same moment.
        keepalive: float = 4.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._headers = headers or {}
        self._urls: dict[str, URL] = {}
        self._connector_args = {
            "limit": max_connections,
            "limit_per_host": 0,
            "keepalive_timeout": keepalive,
            "ttl_dns_cache": 300,
        }
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, connect=None, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**self._connector_args),  # type: ignore[arg-type]
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                trust_env=False,
                headers=self._headers,  # session-level: not merged again on every request
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def post(self, url: str, content: bytes) -> tuple[int, bytes]:
        try:
            target = self._urls.get(url)
            if target is None:  # a handful of distinct URLs: parse each once, not per request
                target = self._urls[url] = URL(url)
            response = await self.session.post(target, data=content)
        except aiohttp.ServerDisconnectedError as exc:
            raise UpstreamConnectionLost(f"{type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamReadTimeout() from None
        except aiohttp.ClientError as exc:
            raise UpstreamBrokenResponse(f"{type(exc).__name__}: {exc}") from None
        try:
            async with response:
                return response.status, await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamReadTimeout() from None
        except aiohttp.ClientError as exc:
            raise UpstreamBrokenResponse(f"{type(exc).__name__}: {exc}") from None

    async def start(self) -> None:
        """Open the pooled session at server startup (inside the running event loop)."""
        _ = self.session

    async def get_status(self, url: str, timeout_s: float) -> int:
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamConnectError(type(exc).__name__) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxUpstreamClient:
    """The same interface over an httpx.AsyncClient (used by tests, so respx can mock upstreams)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.headers = headers or {}

    async def post(self, url: str, content: bytes) -> tuple[int, bytes]:
        try:
            response = await self.client.post(url, content=content, headers=self.headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from None
        except httpx.TimeoutException:
            raise UpstreamReadTimeout() from None
        except httpx.HTTPError as exc:
            raise UpstreamBrokenResponse(f"{type(exc).__name__}: {exc}") from None
        return response.status_code, response.content

    async def start(self) -> None:
        """The httpx client is ready when constructed."""

    async def get_status(self, url: str, timeout_s: float) -> int:
        try:
            return (await self.client.get(url, timeout=timeout_s)).status_code
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self.client.aclose()
