"""What the upstream pool needs of a transport, and what both transports share.

A transport POSTs a finished JSON body and gives back the status and the body, whole or as a
stream; or it raises one of `nemo_gym.exceptions`' transport errors, which are all the retry
rules read. Two implement it: the lean HTTP/1.1 client (`pool.LeanTransport`, the hot path for
http:// upstreams) and aiohttp (`aiohttp.AiohttpTransport`, for https:// and proxies).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from nemo_gym.exceptions import ConnectionDropped, StaleConnection, TransportError, check_header_value

# Idle connections older than this are not reused: below uvicorn's (hence vLLM's) 5 s
# keep-alive, so we rarely pick a connection the server is closing at the same moment.
KEEPALIVE = 4.0
# A reused connection closed this soon after our write, with no answer byte, is the keep-alive
# race (the server closed it as idle while the request was on its way), not a failing upstream.
STALE_CLOSE_WINDOW = 0.05


class BodyStream(Protocol):
    """An answer's body as it arrives: iterate for chunks, `read()` the rest, `aclose()` early
    to close the connection (an upstream such as vLLM then stops the generation)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Answer(NamedTuple):
    status: int
    body: bytes


class StreamAnswer(NamedTuple):
    status: int
    stream: BodyStream


class UpstreamTransport(Protocol):
    async def start(self) -> None: ...

    async def post(self, url: str, content: bytes) -> Answer: ...

    async def post_stream(self, url: str, content: bytes) -> StreamAnswer:
        """Returns once the answer's head is in; the body follows as a stream."""
        ...

    async def get_status(self, url: str, timeout_s: float) -> int: ...

    async def aclose(self) -> None: ...


class Dial(NamedTuple):
    """One connection attempt: an address the name resolved to, and TLS for it (or None)."""

    family: int
    address: tuple[Any, ...]
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None


ProtocolFactory = Callable[[], asyncio.Protocol]


class Network(Protocol):
    """Where the lean transport's connections come from: sockets (`pool.SocketNetwork`), or
    memory (`mock.MockTransport`), so its connection code runs unchanged in tests."""

    async def resolve(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        """(address family, socket address) pairs to try, in order."""
        ...

    async def connect(self, protocol_factory: ProtocolFactory, dial: Dial) -> asyncio.Protocol:
        """The protocol, connected (raises OSError when refused or unreachable)."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What one answer may be: bigger means a broken or hostile upstream, not a generation."""

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 256 * 1024 * 1024
    max_decompressed_bytes: int = 256 * 1024 * 1024


def request_headers(headers: dict[str, str] | None, **defaults: str) -> dict[str, str]:
    """The fixed headers of every request (JSON, then `defaults`, then the configured ones),
    each refused if it could split the request head."""
    merged = {"content-type": "application/json", **defaults, **(headers or {})}
    for name, value in merged.items():
        check_header_value(name, value)
    return merged


def closed_before_answer(reused: bool, waited: float) -> TransportError:
    """A connection closed with no answer byte, `waited` seconds after the request was written:
    the keep-alive race on a reused connection within moments, an upstream failure otherwise."""
    if reused and waited < STALE_CLOSE_WINDOW:
        return StaleConnection(
            f"kept-alive connection closed by the server {waited * 1000:.1f} ms after the request was written"
        )
    return ConnectionDropped(
        f"server closed the connection {waited:.3f} s after the request, without answering"
    )


def busy_message(pool_timeout: float | None, max_connections: int) -> str:
    return (
        f"no free connection within timeouts.pool ({pool_timeout}s); "
        f"all {max_connections} (max_connections) are busy"
    )
