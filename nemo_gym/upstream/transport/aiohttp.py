"""The transport of https:// upstreams (and any upstream configured `upstream_client:
aiohttp`): one `aiohttp.ClientSession`, so proxies, TLS options and HTTP corner cases are
handled by a well-kept library rather than by us.

What it adds to aiohttp, and why:
- proxy variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, proxy credentials in ~/.netrc) are
  honoured, since a public endpoint is often only reachable through one. They are read once
  per URL, the way aiohttp's `trust_env` reads them, rather than by `trust_env` itself: that
  reads them again, and ~/.netrc twice, in a worker thread on every request (most of this
  client's CPU, measured), and an upstream's own ~/.netrc entry would clash with our
  authorization header;
- `ssl_verify`, `ca_bundle`, `client_cert`/`client_key` make one SSL context, checked when the
  client is built so a wrong path fails at start, naming the key;
- the same failure kinds as the lean transport (`pool.LeanTransport`), because the retry
  rules read only those. A close with no answer byte on a reused connection, moments after the
  request went out, is the keep-alive race (`StaleConnection`); any other is
  `ConnectionDropped`. Reuse is told by remembering which connection protocols were already
  handed out once: a protocol object is one TCP connection, and a connection that did not
  finish its answer is closed, never pooled again. "No answer byte" is as far as aiohttp
  tells: a close after part of a status line, or a reset (which carries no count of what
  arrived), counts as no answer;
- the pool wait is bounded by `timeouts.pool` with our own slot count in front of the
  connector (aiohttp folds pool waiting into its connect timeout), so `timeouts.connect`
  covers exactly name resolution, TCP, proxy tunnel and TLS;
- answers are bounded like the lean client's: every head line and field within
  `max_header_bytes` (aiohttp's own parser limits, with its cap on the number of headers) and
  the head as a whole checked once parsed; the body as received within `max_body_bytes`;
  decoding is ours (aiohttp's automatic decompression is off) so the decoded size is bounded
  too and only encodings we decode are asked for;
- a cancelled request closes its connection instead of pooling it, so an upstream such as vLLM
  sees the disconnect and stops the generation.

aiohttp retries a request on a reused connection that fails only for idempotent methods, so
POSTs are never sent twice behind the pool's back (a health GET may be).
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import weakref
from typing import Any

import aiohttp
from aiohttp import client_exceptions as aio_errors
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

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
)
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.transport.base import (
    KEEPALIVE,
    Answer,
    StreamAnswer,
    busy_message,
    closed_before_answer,
    request_headers,
)
from nemo_gym.upstream.transport.decoding import decode_body

# aiohttp limits the number of response header fields; each is within max_header_bytes and
# the total is checked after parsing, so this caps what a hostile head can make us hold.
MAX_HEADER_FIELDS = 128


class _Attempt:
    """What the connector learns about one request: reused connection or not, and when the
    connection was handed over (the request is written right after, with no await between)."""

    __slots__ = ("reused", "sent_at")

    def __init__(self) -> None:
        self.reused = False
        self.sent_at = 0.0


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "nemo_gym_aiohttp_attempt", default=None
)


class _Connector(aiohttp.TCPConnector):
    """Records, for the request being connected, whether its connection served one before."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 (aiohttp's signature)
        conn = await super().connect(req, traces, timeout)
        attempt = _ATTEMPT.get()
        if attempt is not None:
            proto = conn.protocol
            attempt.reused = proto in self._handed_out
            if not attempt.reused:
                self._handed_out.add(proto)
            attempt.sent_at = self._loop.time()
        return conn


def _read_pem(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path!r} ({exc.strerror or exc})") from None


def ssl_context_for(config: UpstreamConfig) -> ssl.SSLContext:
    """The TLS settings of `config` as one context; a bad file names the key that points at it."""
    if config.ca_bundle is not None:
        _read_pem("ca_bundle", config.ca_bundle)
    if config.client_cert is not None:
        _read_pem("client_cert", config.client_cert)
    if config.client_key is not None:
        if config.client_cert is None:
            raise ValueError("client_key is set but client_cert is not (client_key belongs to client_cert)")
        _read_pem("client_key", config.client_key)
    try:
        context = ssl.create_default_context(cafile=config.ca_bundle)
    except ssl.SSLError as exc:
        raise ValueError(f"ca_bundle: {config.ca_bundle!r} holds no usable PEM certificate ({exc})") from None
    if not config.ssl_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert is not None:
        try:
            context.load_cert_chain(config.client_cert, config.client_key)
        except ssl.SSLError as exc:
            keys = "client_cert/client_key" if config.client_key else "client_cert"
            raise ValueError(
                f"{keys}: cannot load the client certificate and its key ({exc}); "
                "a key kept in a separate file goes in client_key"
            ) from None
    return context


def _too_large(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.http_exceptions.LineTooLong):
            return True
        text = str(cause)
        if "Too many headers" in text or "Got more than" in text or "too long" in text.lower():
            return True
        cause = cause.__cause__
    return False


class _AiohttpBodyStream:
    """A streamed answer's body, with the lean transport's `StreamedBody` behaviour: chunks as they
    arrive, the body limit, our failure kinds, and the connection closed if left unfinished."""

    def __init__(
        self, client: AiohttpTransport, response: aiohttp.ClientResponse, attempt: _Attempt, url: str
    ) -> None:
        self._client = client
        self._response = response
        self._attempt = attempt
        self._url = url
        self._size = 0
        self._finished = False

    def _finish(self, close: bool) -> None:
        if self._finished:
            return
        self._finished = True
        if close:
            self._response.close()
        else:
            self._response.release()
        self._client._slots.release()  # type: ignore[union-attr]

    def __aiter__(self) -> _AiohttpBodyStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        limit = self._client.config.limits.max_body_bytes
        try:
            chunk = await self._response.content.readany()
        except BaseException as exc:
            self._finish(close=True)
            if isinstance(exc, (aio_errors.ClientError, OSError, RuntimeError, ValueError)):
                kind = self._client._kind(exc, self._attempt, self._url)
                if isinstance(kind, ConnectionDropped | StaleConnection):
                    kind = ProtocolError("connection closed mid-response")  # the head had arrived
                raise kind from None
            raise
        if not chunk:
            self._finish(close=False)
            raise StopAsyncIteration
        self._size += len(chunk)
        if self._size > limit:
            self._finish(close=True)
            raise ResponseTooLarge(f"response body is larger than max_body_bytes ({limit})")
        return chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        self._finish(close=True)


class AiohttpTransport:
    """The `UpstreamTransport` protocol over one aiohttp session, at most `max_connections`
    requests in flight (further ones wait up to `timeouts.pool`)."""

    def __init__(self, config: UpstreamConfig, headers: dict[str, str] | None = None) -> None:
        self.config = config
        # We decode the body ourselves (bounded); ask only for what we can decode.
        self._headers = request_headers(headers, **{"accept-encoding": "gzip, deflate"})
        self._ssl = ssl_context_for(config)
        self._session: aiohttp.ClientSession | None = None
        self._connector: _Connector | None = None
        self._slots: asyncio.Semaphore | None = None
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}
        self._closed = False

    async def start(self) -> None:
        self._open()

    def _open(self) -> aiohttp.ClientSession:
        """The session, made in the running loop on first use if `start()` was not called."""
        if self._closed:
            raise ClientClosed("client is closed")
        if self._session is None:
            config = self.config
            self._connector = _Connector(
                limit=config.max_connections, ssl=self._ssl, keepalive_timeout=KEEPALIVE
            )
            self._slots = asyncio.Semaphore(config.max_connections)
            self._session = aiohttp.ClientSession(
                connector=self._connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=config.timeouts.connect, sock_read=config.timeouts.read
                ),
                auto_decompress=False,
                max_line_size=config.limits.max_header_bytes,
                max_field_size=config.limits.max_header_bytes,
                max_headers=MAX_HEADER_FIELDS,
            )
        return self._session

    async def _acquire(self) -> None:
        slots = self._slots
        assert slots is not None
        if not slots.locked():
            await slots.acquire()  # returns at once: a slot is free
        else:
            pool = self.config.timeouts.pool
            try:
                async with asyncio.timeout(pool):
                    await slots.acquire()
            except TimeoutError:
                raise PoolTimeout(busy_message(pool, self.config.max_connections)) from None
        if self._closed:
            slots.release()
            raise ClientClosed("client is closed")

    async def post(self, url: str, content: bytes) -> Answer:
        session = self._session or self._open()
        await self._acquire()
        try:
            return await self._request(session, "POST", url, content)
        finally:
            self._slots.release()  # type: ignore[union-attr]

    async def post_stream(self, url: str, content: bytes) -> StreamAnswer:
        """POST and return once the head is in; the connection slot is held until the stream ends."""
        session = self._session or self._open()
        await self._acquire()
        try:
            response, attempt = await self._send(session, "POST", url, content)
        except BaseException:
            self._slots.release()  # type: ignore[union-attr]
            raise
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            response.close()
            self._slots.release()  # type: ignore[union-attr]
            raise ProtocolError(f"a streamed answer may not be {encoding}-encoded")
        return StreamAnswer(response.status, _AiohttpBodyStream(self, response, attempt, url))

    async def get_status(self, url: str, timeout_s: float) -> int:
        session = self._session or self._open()
        try:
            async with asyncio.timeout(timeout_s):
                await self._acquire()
                try:
                    return (await self._request(session, "GET", url, None)).status
                finally:
                    self._slots.release()  # type: ignore[union-attr]
        except (TimeoutError, ReadTimeout, PoolTimeout):
            raise ConnectTimeout(f"no answer within {timeout_s}s") from None

    def _proxy_for(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy the environment names for `url` (NO_PROXY applied), looked up once."""
        proxy = self._proxies.get(url)
        if proxy is None:
            try:
                proxy = get_env_proxy_for_url(URL(url))
            except (LookupError, ValueError):
                proxy = (None, None)
            self._proxies[url] = proxy
        return proxy

    async def _send(
        self, session: aiohttp.ClientSession, method: str, url: str, content: bytes | None
    ) -> tuple[aiohttp.ClientResponse, _Attempt]:
        """Send and wait for the answer's head; failures become our kinds."""
        attempt = _Attempt()
        token = _ATTEMPT.set(attempt)
        try:
            proxy, proxy_auth = self._proxy_for(url)
            response = await session.request(
                method, url, data=content, allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth
            )
        except (aio_errors.ClientError, OSError, RuntimeError, ValueError) as exc:
            raise self._kind(exc, attempt, url) from None
        finally:
            _ATTEMPT.reset(token)
        return response, attempt

    async def _request(
        self, session: aiohttp.ClientSession, method: str, url: str, content: bytes | None
    ) -> Answer:
        response, attempt = await self._send(session, method, url, content)
        try:
            body = await self._read_body(response)
        except BaseException as exc:
            # Failed, over a limit or cancelled: never pool a connection with an answer
            # still owed (and let the upstream see that nobody waits for it).
            response.close()
            if isinstance(exc, (aio_errors.ClientError, OSError, RuntimeError, ValueError)):
                raise self._kind(exc, attempt, url) from None
            raise
        response.release()
        return Answer(response.status, body)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limits = self.config.limits
        head = sum(len(k) + len(v) + 4 for k, v in response.raw_headers)
        if head > limits.max_header_bytes:
            raise ResponseTooLarge(
                f"response head is larger than max_header_bytes ({limits.max_header_bytes})"
            )
        limit = limits.max_body_bytes
        length = response.content_length
        if length is not None and length > limit:
            raise ResponseTooLarge(f"response body is larger than max_body_bytes ({limit})")
        stream = response.content
        if length is not None:
            body = await stream.read()  # framed by Content-Length, already checked
        else:
            chunks: list[bytes] = []
            size = 0
            while chunk := await stream.readany():
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLarge(f"response body is larger than max_body_bytes ({limit})")
                chunks.append(chunk)
            body = b"".join(chunks)
        encoding = response.headers.get("content-encoding")
        if encoding is not None:
            encoded = encoding.strip().lower().encode("latin-1")
            body = decode_body(body, encoded, limits.max_decompressed_bytes)
        return body

    def _kind(self, exc: BaseException, attempt: _Attempt, url: str) -> TransportError:
        """One aiohttp failure as our failure kind (the order matters: aiohttp's classes nest)."""
        if self._closed or (isinstance(exc, RuntimeError) and "closed" in str(exc).lower()):
            return ClientClosed("client is closed")
        if isinstance(exc, aio_errors.ConnectionTimeoutError):
            return ConnectTimeout(f"no connection to {_origin(url)} within {self.config.timeouts.connect}s")
        if isinstance(exc, aio_errors.ServerTimeoutError | asyncio.TimeoutError):
            return ReadTimeout(f"{self.config.timeouts.read}s")
        for kinds, said in _NOT_CONNECTED:
            if isinstance(exc, kinds):
                status, message = getattr(exc, "status", ""), getattr(exc, "message", "")
                return ConnectError(
                    said.format(
                        origin=_origin(url), url=url, detail=_detail(exc), status=status, message=message
                    )
                )
        if isinstance(exc, aio_errors.ServerDisconnectedError) and not isinstance(exc.message, str):
            return ProtocolError("connection closed mid-response")  # the head had begun
        if isinstance(exc.__cause__, ssl.SSLError):  # a TLS alert after the handshake (TLS 1.3)
            return ConnectError(f"TLS session with {_origin(url)} refused: {_detail(exc.__cause__)}")
        if isinstance(exc, _CLOSED_BEFORE_ANSWER):
            return self._closed_before_answer(attempt)
        return self._broken_answer(exc)

    def _broken_answer(self, exc: BaseException) -> TransportError:
        if isinstance(exc, aio_errors.ClientPayloadError):
            return ProtocolError(f"connection closed mid-response ({_detail(exc)})")
        if isinstance(exc, aio_errors.ClientResponseError):
            if _too_large(exc):
                return ResponseTooLarge(
                    f"response head is larger than max_header_bytes ({self.config.limits.max_header_bytes}) "
                    f"or has more than {MAX_HEADER_FIELDS} fields"
                )
            return ProtocolError(f"malformed HTTP response: {exc.message}")
        return ProtocolError(f"{type(exc).__name__}: {_detail(exc)}")

    @staticmethod
    def _closed_before_answer(attempt: _Attempt) -> TransportError:
        return closed_before_answer(attempt.reused, asyncio.get_running_loop().time() - attempt.sent_at)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


# aiohttp's failures to connect, most specific first, and what we say of each (all ConnectError).
_NOT_CONNECTED: tuple[tuple[Any, str], ...] = (
    (aio_errors.ClientHttpProxyError, "proxy refused the tunnel to {origin}: {status} {message}"),
    (aio_errors.ClientProxyConnectionError, "cannot connect to the proxy for {origin}: {detail}"),
    (aio_errors.ClientSSLError | ssl.SSLError, "TLS handshake with {origin} failed: {detail}"),
    (aio_errors.ClientConnectorError, "cannot connect to {origin}: {detail}"),
    (
        aio_errors.InvalidURL | aio_errors.NonHttpUrlClientError,
        "unsupported upstream URL {url!r} (expected http:// or https://)",
    ),
)
# Closed with no answer byte (a reset too: the write failed).
_CLOSED_BEFORE_ANSWER = (
    aio_errors.ServerDisconnectedError | aio_errors.ClientOSError | aio_errors.ClientConnectionResetError
)


def _origin(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def _detail(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if os_error is not None:
        return getattr(os_error, "strerror", None) or str(os_error)
    return str(exc) or type(exc).__name__
