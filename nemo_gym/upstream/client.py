"""The upstream client interface: POST bytes, get (status, bytes); and the failure kinds.

Production uses `nemo_gym.upstream.http1` (a lean pooled HTTP/1.1 client: the hot path).
Tests plug in the httpx implementation below, so respx can mock upstreams. Both map failures
to the kinds the retry logic needs: nothing was sent (safe to retry), the read timed out, or
the answer broke off.
"""

from __future__ import annotations

from typing import Protocol

import httpx


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
