"""The upstream HTTP/1.1 client against scripted raw servers on 127.0.0.1: exact bytes on the
wire, keep-alive, framing, and each failure kind the retry logic depends on."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from nemo_gym.exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    ProtocolError,
    ReadTimeout,
)
from nemo_gym.upstream.http1 import Http1UpstreamClient
from nemo_gym.upstream.pool import UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A raw TCP server whose handler decides what bytes go back; records what came in."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.requests: list[bytes] = []
        self.disconnects = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head + Content-Length body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.disconnects += 1
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def reply(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        status.encode(),
        len(body),
        extra,
        body,
    )


def echo(delay: float = 0.0) -> Handler:
    """Keep-alive server: echoes each request body back as the response body, after `delay`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while (request := await srv.read_request(reader)) is not None:
            if delay:
                await asyncio.sleep(delay)
            writer.write(reply(request.split(b"\r\n\r\n", 1)[1]))
            await writer.drain()

    return handler


answer_each = echo()


def answer_once(raw: bytes, linger: float = 0.0) -> Handler:
    """Reads one request, sends `raw` back (may be b""), stays `linger` seconds, then closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        await srv.read_request(reader)
        if raw:
            writer.write(raw)
            await writer.drain()
        if linger:
            await asyncio.sleep(linger)

    return handler


@pytest.fixture
async def server_factory() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def make(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Server:
        srv = Server(handler)
        await srv.start(ssl_context)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


async def new_client(**kwargs: object) -> Http1UpstreamClient:
    args: dict = {"max_connections": 64, "connect_timeout": 2.0, "read_timeout": None, **kwargs}
    client = Http1UpstreamClient(**args)
    await client.start()
    return client


async def test_exact_request_bytes_and_keep_alive(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = await new_client(headers={"authorization": "Bearer sk-test"})
    first = await client.post(srv.url + "/v1/chat/completions", b'{"a":1}')
    second = await client.post(srv.url + "/tokenize", b'{"b":2}')
    await client.aclose()
    assert first == (200, b'{"a":1}')
    assert second == (200, b'{"b":2}')
    assert srv.connections == 1  # the second request reused the kept-alive connection
    assert srv.requests == [
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b'authorization: Bearer sk-test\r\ncontent-length: 7\r\n\r\n{"a":1}' % srv.port,
        b"POST /tokenize HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b'authorization: Bearer sk-test\r\ncontent-length: 7\r\n\r\n{"b":2}' % srv.port,
    ]


async def test_error_status_and_body_are_returned_not_raised(server_factory) -> None:
    async def bad_request(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        writer.write(reply(b'{"error":{"message":"nope"}}', "400 Bad Request"))

    srv = await server_factory(bad_request)
    client = await new_client()
    assert await client.post(srv.url + "/v1/x", b"{}") == (400, b'{"error":{"message":"nope"}}')
    await client.aclose()


async def test_chunked_and_gzip_bodies(server_factory) -> None:
    async def chunked(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()
        await srv.read_request(reader)
        packed = gzip.compress(b'{"zipped":true}')
        writer.write(reply(packed, extra=b"content-encoding: gzip\r\n"))
        await writer.drain()
        await srv.read_request(reader)

    srv = await server_factory(chunked)
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (200, b"hello world")
    assert await client.post(srv.url + "/b", b"{}") == (200, b'{"zipped":true}')
    assert srv.connections == 1
    await client.aclose()


async def test_interim_100_continue_is_skipped(server_factory) -> None:
    srv = await server_factory(answer_once(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b'{"ok":1}')))
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"ok":1}')
    await client.aclose()


async def test_connection_close_response_is_not_reused(server_factory) -> None:
    srv = await server_factory(answer_once(reply(b"{}", extra=b"connection: close\r\n")))
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (200, b"{}")
    assert await client.post(srv.url + "/a", b"{}") == (200, b"{}")
    assert srv.connections == 2
    await client.aclose()


async def test_idle_connection_closed_by_server_is_replaced(server_factory) -> None:
    # closes while the client holds the connection idle (a server's keep-alive expiry)
    srv = await server_factory(answer_once(reply(b"{}")))
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (200, b"{}")
    await asyncio.sleep(0.1)
    assert await client.post(srv.url + "/a", b"{}") == (200, b"{}")
    assert srv.connections == 2
    await client.aclose()


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"])
async def test_body_ended_by_close_is_complete(server_factory, status_line: bytes) -> None:
    # No Content-Length, no chunking: the body is whatever comes before the server closes.
    srv = await server_factory(
        answer_once(status_line + b'\r\ncontent-type: application/json\r\n\r\n{"eof":1}')
    )
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"eof":1}')
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"eof":1}')  # on a new connection
    assert srv.connections == 2
    await client.aclose()


@pytest.mark.parametrize(
    ("answer", "linger", "error", "match"),
    [
        (b"", 0, ConnectionDropped, "closed the connection .* without answering"),
        (
            b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":',
            0,
            ProtocolError,
            "closed mid-response",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-type: appl", 0, ProtocolError, "closed mid-response"),
        (b"SMTP ready\r\n\r\n", 0.5, ProtocolError, "malformed HTTP response"),
        (
            reply(b"xx", extra=b"content-encoding: br\r\n"),
            0,
            ProtocolError,
            "unsupported content-encoding 'br'",
        ),
    ],
    ids=["closed-before-answer", "cut-mid-body", "cut-mid-headers", "not-http", "unknown-encoding"],
)
async def test_each_failure_kind(
    server_factory, answer: bytes, linger: float, error: type, match: str
) -> None:
    srv = await server_factory(answer_once(answer, linger=linger))
    client = await new_client()
    with pytest.raises(error, match=match):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


async def test_read_timeout_closes_the_connection(server_factory) -> None:
    async def stall(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        await srv.read_request(reader)  # returns None when the client gives up and closes

    srv = await server_factory(stall)
    client = await new_client(read_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReadTimeout):
        await client.post(srv.url + "/a", b"{}")
    assert 0.19 <= loop.time() - started < 1.0
    await asyncio.sleep(0.1)
    assert srv.disconnects == 1
    await client.aclose()


async def test_read_timeout_is_between_bytes_not_total(server_factory) -> None:
    async def trickle(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        body = b'{"slow":"answer"}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for i in range(len(body)):
            await writer.drain()
            await asyncio.sleep(0.03)
            writer.write(body[i : i + 1])
        await writer.drain()
        await srv.read_request(reader)

    srv = await server_factory(trickle)
    client = await new_client(read_timeout=0.15)  # total time ~0.5 s, no gap over 0.15 s
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"slow":"answer"}')
    await client.aclose()


async def test_connect_refused_names_the_address() -> None:
    srv = Server(answer_each)
    await srv.start()
    port = srv.port
    await srv.stop()
    await asyncio.sleep(0.05)
    client = await new_client()
    with pytest.raises(ConnectError, match=rf"cannot connect to 127.0.0.1:{port}"):
        await client.post(f"http://127.0.0.1:{port}/v1/x", b"{}")
    with pytest.raises(ConnectError):
        await client.get_status(f"http://127.0.0.1:{port}/health", timeout_s=1.0)
    await client.aclose()


async def test_connection_limit_queues_requests(server_factory) -> None:
    srv = await server_factory(echo(0.05))
    client = await new_client(max_connections=2)
    results = await asyncio.gather(*(client.post(srv.url + "/a", b"%d" % i) for i in range(7)))
    assert results == [(200, b"%d" % i) for i in range(7)]
    assert srv.max_open == 2 and srv.connections == 2
    await client.aclose()


async def test_cancelled_request_drops_its_connection(server_factory) -> None:
    async def first_never_answered(reader, writer, srv: Server) -> None:
        if srv.connections == 1:
            await srv.read_request(reader)
            await srv.read_request(reader)  # EOF only once the client drops the connection
            return
        await answer_each(reader, writer, srv)

    srv = await server_factory(first_never_answered)
    client = await new_client(max_connections=1)
    task = asyncio.ensure_future(client.post(srv.url + "/a", b"late"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The connection with an answer still owed is closed at once, freeing the only slot.
    assert await asyncio.wait_for(client.post(srv.url + "/a", b"next"), 2.0) == (200, b"next")
    assert srv.connections == 2 and srv.disconnects == 1
    await client.aclose()


async def test_idle_connections_older_than_keepalive_are_not_reused(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = await new_client(keepalive=0.05)
    await client.post(srv.url + "/a", b"{}")
    await asyncio.sleep(0.1)
    await client.post(srv.url + "/a", b"{}")
    assert srv.connections == 2
    await client.aclose()


async def test_get_status(server_factory) -> None:
    async def health(reader, writer, srv: Server) -> None:
        while await srv.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    async def never(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        await asyncio.sleep(2)

    srv = await server_factory(health)
    silent = await server_factory(never)
    client = await new_client()
    assert await client.get_status(srv.url + "/health", timeout_s=1.0) == 503
    assert srv.requests == [b"GET /health HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n\r\n" % srv.port]
    with pytest.raises(ConnectTimeout, match=r"no answer within 0.1s"):
        await client.get_status(silent.url + "/health", timeout_s=0.1)
    await client.aclose()


async def test_closed_client_refuses_requests(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = await new_client()
    await client.post(srv.url + "/a", b"{}")
    await client.aclose()
    with pytest.raises(ClientClosed, match="closed"):
        await client.post(srv.url + "/a", b"{}")


def test_unsupported_scheme_is_a_clear_error() -> None:
    client = Http1UpstreamClient(1, 1.0, None)
    with pytest.raises(ConnectError, match="expected http:// or https://"):
        asyncio.run(client.post("ftp://127.0.0.1/x", b"{}"))


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_upstream(server_factory, self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    srv = await server_factory(answer_each, server_ssl)
    client = await new_client()
    url = f"https://127.0.0.1:{srv.port}/v1/chat/completions"
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.post(url, b"{}")  # an unknown certificate is refused
    client._ssl = ssl.create_default_context(cafile=str(cert))
    assert await client.post(url, b'{"tls":1}') == (200, b'{"tls":1}')
    await client.aclose()


async def test_host_names_are_resolved_once_for_a_burst(server_factory) -> None:
    srv = await server_factory(echo(0.05))
    client = await new_client()
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counting(host, *args, **kwargs):
        lookups.append(host)
        return [i for i in await real(host, *args, **kwargs) if i[4][0] == "127.0.0.1"]

    loop.getaddrinfo = counting  # type: ignore[method-assign]
    try:
        url = f"http://localhost:{srv.port}/v1/x"
        results = await asyncio.gather(*(client.post(url, b"%d" % i) for i in range(5)))
        assert results == [(200, b"%d" % i) for i in range(5)]
        assert srv.connections == 5 and lookups == ["localhost"]
        assert srv.requests[0].startswith(b"POST /v1/x HTTP/1.1\r\nhost: localhost:%d\r\n" % srv.port)
    finally:
        del loop.getaddrinfo
        await client.aclose()


async def test_unresolvable_host_is_a_connect_error() -> None:
    client = await new_client()
    loop = asyncio.get_running_loop()

    async def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    loop.getaddrinfo = no_dns  # type: ignore[method-assign]
    try:
        with pytest.raises(
            ConnectError, match="cannot connect to vllm-7.internal:8000: Name or service not known"
        ):
            await client.post("http://vllm-7.internal:8000/v1/x", b"{}")
    finally:
        del loop.getaddrinfo
        await client.aclose()


async def test_cancelled_waiter_does_not_stall_the_queue(server_factory) -> None:
    srv = await server_factory(echo(0.1))
    client = await new_client(max_connections=1)
    first = asyncio.ensure_future(client.post(srv.url + "/a", b"1"))
    await asyncio.sleep(0.02)
    waiting = [asyncio.ensure_future(client.post(srv.url + "/a", b"%d" % i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.02)
    waiting[0].cancel()
    assert await asyncio.wait_for(first, 2) == (200, b"1")
    assert await asyncio.wait_for(asyncio.gather(*waiting[1:]), 2) == [(200, b"3"), (200, b"4")]
    assert srv.connections == 1
    await client.aclose()


async def test_post_nowait_uses_an_idle_connection_or_declines(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = await new_client()
    url = srv.url + "/tokenize"
    assert client.post_nowait(url, b"{}") is None  # nothing idle yet: the caller uses post()
    assert await client.post(url, b"warm") == (200, b"warm")
    future = client.post_nowait(url, b'{"now":1}')
    assert future is not None
    assert client.post_nowait(url, b"{}") is None  # the only connection is busy
    assert await future == (200, b'{"now":1}')
    assert srv.connections == 1
    await client.aclose()


async def test_abandoned_nowait_answer_is_read_and_the_connection_reused(server_factory) -> None:
    srv = await server_factory(echo(0.05))
    client = await new_client(max_connections=1)
    await client.post(srv.url + "/a", b"warm")
    future = client.post_nowait(srv.url + "/a", b"abandoned")
    assert future is not None
    UpstreamPool.abandon(future)
    # The next request waits for the abandoned answer to be read, then gets its own answer.
    assert await asyncio.wait_for(client.post(srv.url + "/a", b"mine"), 2) == (200, b"mine")
    assert srv.connections == 1
    await client.aclose()


async def test_nowait_result_is_none_for_anything_but_a_clean_answer() -> None:
    loop = asyncio.get_running_loop()

    def done(result=None, exc=None) -> asyncio.Future:
        future = loop.create_future()
        future.set_exception(exc) if exc else future.set_result(result)
        return future

    assert await UpstreamPool.nowait_result(done((200, b'{"tokens":[1,2]}'))) == {"tokens": [1, 2]}
    assert await UpstreamPool.nowait_result(done((500, b'{"error":{}}'))) is None
    assert await UpstreamPool.nowait_result(done((200, b"not json"))) is None
    assert await UpstreamPool.nowait_result(done(exc=ProtocolError("cut"))) is None
    assert await UpstreamPool.nowait_result(done(exc=ConnectionDropped("gone"))) is None
    failed = done(exc=ReadTimeout("x"))
    UpstreamPool.abandon(failed)  # retrieves the exception: nothing logged at GC
    assert failed._log_traceback is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (
            b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 5000 + b"\r\ncontent-length: 2\r\n\r\n{}",
            r"response head is larger than max_header_bytes \(2048\)",
        ),
        (reply(b"x" * 5000), r"response body is larger than max_body_bytes \(4096\)"),
        (
            reply(gzip.compress(b" " * 100_000), extra=b"content-encoding: gzip\r\n"),
            r"decompressed response body is larger than max_decompressed_bytes \(8192\)",
        ),
    ],
    ids=["head", "body", "gzip-bomb"],
)
async def test_answers_over_a_limit_are_refused(server_factory, answer: bytes, match: str) -> None:
    from nemo_gym.exceptions import ResponseTooLarge
    from nemo_gym.upstream.http1 import Limits

    srv = await server_factory(answer_once(answer, linger=0.2))
    client = await new_client(
        limits=Limits(max_header_bytes=2048, max_body_bytes=4096, max_decompressed_bytes=8192)
    )
    with pytest.raises(ResponseTooLarge, match=match):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


def test_header_values_with_line_breaks_are_refused_without_echoing_them() -> None:
    from nemo_gym.exceptions import HeaderValueError

    with pytest.raises(HeaderValueError) as caught:
        Http1UpstreamClient(1, 1.0, None, headers={"authorization": "Bearer sk-SECRET\r\nx-evil: 1"})
    assert str(caught.value) == (
        "header 'authorization' contains a line break or NUL character (check how the value was pasted)"
    )


async def test_post_without_start_binds_to_the_running_loop(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = Http1UpstreamClient(4, 2.0, None)  # no start()
    assert client.post_nowait(srv.url + "/a", b"{}") is None
    assert await client.post(srv.url + "/a", b"hello") == (200, b"hello")
    await client.aclose()
