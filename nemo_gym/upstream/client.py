"""The upstream client interface: POST bytes, get (status, bytes), or a transport error.

Production uses `nemo_gym.upstream.http1` for plain-HTTP upstreams (the hot path). Tests plug
in the httpx implementation below, so respx can mock upstreams. Every implementation raises
only `nemo_gym.exceptions.TransportError` kinds, which are what the retry rules read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Protocol

import httpx

from nemo_gym.exceptions import (
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
)


class BodyStreamLike(Protocol):
    """An answer's body as it arrives: iterate for chunks, `read()` the rest, `aclose()` early
    to close the connection."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def start(self) -> None: ...

    async def post(self, url: str, content: bytes) -> tuple[int, bytes]: ...

    async def post_stream(self, url: str, content: bytes) -> tuple[int, BodyStreamLike]: ...

    async def get_status(self, url: str, timeout_s: float) -> int: ...

    async def aclose(self) -> None: ...


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise ConnectTimeout(str(exc) or "connect timeout") from None
    except httpx.PoolTimeout as exc:
        raise PoolTimeout(str(exc) or "pool timeout") from None
    except httpx.ConnectError as exc:
        raise ConnectError(f"{type(exc).__name__}: {exc}") from None
    except httpx.TimeoutException as exc:
        raise ReadTimeout(str(exc) or "read timeout") from None
    except httpx.RemoteProtocolError as exc:
        if "without sending" in str(exc):
            raise ConnectionDropped(str(exc)) from None
        raise ProtocolError(f"{type(exc).__name__}: {exc}") from None
    except httpx.HTTPError as exc:
        raise ProtocolError(f"{type(exc).__name__}: {exc}") from None


class _HttpxBodyStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            with _mapped_errors():
                async for chunk in self.response.aiter_bytes():  # mocked answers arrive already read
                    yield chunk
        finally:
            await self.response.aclose()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        await self.response.aclose()


class HttpxUpstreamClient:
    """The same interface over an httpx.AsyncClient (used by tests, so respx can mock upstreams)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.headers = headers or {}

    async def post(self, url: str, content: bytes) -> tuple[int, bytes]:
        with _mapped_errors():
            response = await self.client.post(url, content=content, headers=self.headers)
        return response.status_code, response.content

    async def post_stream(self, url: str, content: bytes) -> tuple[int, BodyStreamLike]:
        request = self.client.build_request("POST", url, content=content, headers=self.headers)
        with _mapped_errors():
            response = await self.client.send(request, stream=True)
        return response.status_code, _HttpxBodyStream(response)

    async def start(self) -> None:
        """The httpx client is ready when constructed."""

    async def get_status(self, url: str, timeout_s: float) -> int:
        try:
            return (await self.client.get(url, timeout=timeout_s)).status_code
        except httpx.HTTPError as exc:
            raise ConnectError(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self.client.aclose()
