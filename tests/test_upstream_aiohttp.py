# ruff: noqa: F811  (the raw-server fixtures are imported from the lean client's tests)
"""The aiohttp upstream client (https:// upstreams, or `upstream_client: aiohttp`) against
scripted raw servers on 127.0.0.1: the bytes that matter on the wire, keep-alive, the same
failure kinds and limits as the lean client, TLS options and proxy variables."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from nemo_gym.exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    HeaderValueError,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    StaleConnection,
)
from nemo_gym.upstream.aiohttp_client import AiohttpUpstreamClient
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.http1 import Http1UpstreamClient
from nemo_gym.upstream.pool import UpstreamPool
from tests.test_upstream_http1 import (  # noqa: F401  (fixtures are used by name)
    Server,
    answer_each,
    answer_once,
    echo,
    reply,
    self_signed,
    server_factory,
)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client honours proxy variables: the machine's own must not reroute these tests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def config(**kwargs: object) -> UpstreamConfig:
    args: dict = {"base_url": ["http://127.0.0.1:1/v1"], "api_key": "EMPTY", **kwargs}
    return UpstreamConfig(**args)


async def new_client(headers: dict[str, str] | None = None, **kwargs: object) -> AiohttpUpstreamClient:
    client = AiohttpUpstreamClient(config(**kwargs), headers=headers or {})
    await client.start()
    return client


def head_lines(request: bytes) -> list[bytes]:
    """The request head's lines, without aiohttp's user-agent (it names aiohttp's version)."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return [line for line in head if not line.lower().startswith(b"user-agent:")]


async def eventually(predicate, within: float = 2.0) -> bool:
    """Polls (bounded) for something the other side of a socket will see shortly."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def make_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


# ---- requests and keep-alive ------------------------------------------------------------


async def test_exact_request_bytes_and_keep_alive(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = await new_client({"content-type": "application/json", "authorization": "Bearer sk-test"})
    first = await client.post(srv.url + "/v1/chat/completions", b'{"a":1}')
    second = await client.post(srv.url + "/tokenize", b'{"b":2}')
    await client.aclose()
    assert first == (200, b'{"a":1}')
    assert second == (200, b'{"b":2}')
    assert srv.connections == 1  # the second request reused the kept-alive connection
    for request, path, body in zip(
        srv.requests, ["/v1/chat/completions", "/tokenize"], [b'{"a":1}', b'{"b":2}'], strict=True
    ):
        assert sorted(head_lines(request)) == sorted(
            [
                b"POST %b HTTP/1.1" % path.encode(),
                b"Host: 127.0.0.1:%d" % srv.port,
                b"content-type: application/json",
                b"accept-encoding: gzip, deflate",
                b"authorization: Bearer sk-test",
                b"Accept: */*",
                b"Content-Length: 7",
            ]
        )
        assert request.endswith(b"\r\n\r\n" + body)


async def test_post_before_start_binds_on_first_use(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = AiohttpUpstreamClient(config(), headers={})
    assert await client.post(srv.url + "/a", b"{}") == (200, b"{}")
    await client.aclose()
    with pytest.raises(ClientClosed, match="client is closed"):
        await client.post(srv.url + "/a", b"{}")
    with pytest.raises(ClientClosed, match="client is closed"):
        await client.start()


async def test_error_status_chunked_gzip_and_eof_bodies(server_factory) -> None:
    async def answers(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        writer.write(reply(b'{"error":{"message":"nope"}}', "400 Bad Request"))
        await srv.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await srv.read_request(reader)
        writer.write(reply(gzip.compress(b'{"zipped":true}'), extra=b"content-encoding: gzip\r\n"))
        await srv.read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"eof":1}')

    srv = await server_factory(answers)
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (400, b'{"error":{"message":"nope"}}')
    assert await client.post(srv.url + "/a", b"{}") == (200, b"hello world")
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"zipped":true}')
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"eof":1}')
    assert srv.connections == 1
    await client.aclose()


async def test_header_values_are_checked() -> None:
    with pytest.raises(HeaderValueError, match="'authorization' contains a line break"):
        AiohttpUpstreamClient(config(), headers={"authorization": "Bearer sk\r\nx-evil: 1"})


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
    assert srv.requests[0].startswith(b"GET /health HTTP/1.1\r\n")
    with pytest.raises(ConnectTimeout, match=r"no answer within 0.1s"):
        await client.get_status(silent.url + "/health", timeout_s=0.1)
    await client.aclose()


# ---- failure kinds --------------------------------------------------------------------


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
        (
            reply(b"not gzip", extra=b"content-encoding: gzip\r\n"),
            0,
            ProtocolError,
            "cannot decode gzip body",
        ),
    ],
    ids=[
        "closed-before-answer",
        "cut-mid-body",
        "cut-mid-headers",
        "not-http",
        "unknown-encoding",
        "bad-gzip",
    ],
)
async def test_each_failure_kind(
    server_factory, answer: bytes, linger: float, error: type, match: str
) -> None:
    srv = await server_factory(answer_once(answer, linger=linger))
    client = await new_client()
    with pytest.raises(error, match=match):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


@pytest.mark.parametrize(("delay", "error"), [(0.0, StaleConnection), (0.2, ConnectionDropped)])
async def test_reused_connection_closed_without_answer(server_factory, delay: float, error: type) -> None:
    # The server answers once, then takes the next request and closes: at once that is the
    # keep-alive race; after a while it is an upstream that dropped the request.
    async def once_then_close(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        writer.write(reply(b"{}"))
        await writer.drain()
        await srv.read_request(reader)
        if delay:
            await asyncio.sleep(delay)

    srv = await server_factory(once_then_close)
    client = await new_client()
    assert await client.post(srv.url + "/a", b"{}") == (200, b"{}")
    with pytest.raises(error):
        await client.post(srv.url + "/a", b"{}")
    assert srv.connections == 1
    await client.aclose()


async def test_first_request_on_a_new_connection_is_never_stale(server_factory) -> None:
    srv = await server_factory(answer_once(b""))
    client = await new_client()
    with pytest.raises(ConnectionDropped):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


async def test_connect_refused_names_the_address() -> None:
    srv = Server(answer_each)
    await srv.start()
    port = srv.port
    await srv.stop()
    await asyncio.sleep(0.05)
    client = await new_client()
    with pytest.raises(ConnectError, match=rf"cannot connect to 127.0.0.1:{port}: "):
        await client.post(f"http://127.0.0.1:{port}/v1/x", b"{}")
    await client.aclose()


async def test_connect_timeout_covers_the_tls_handshake(server_factory) -> None:
    async def silent(reader, writer, srv: Server) -> None:
        await asyncio.sleep(1.0)

    srv = await server_factory(silent)
    client = await new_client(timeouts={"connect": 0.2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectTimeout, match=rf"no connection to 127.0.0.1:{srv.port} within 0.2s"):
        await client.post(f"https://127.0.0.1:{srv.port}/v1/x", b"{}")
    assert 0.19 <= loop.time() - started < 0.8
    await client.aclose()


async def test_unsupported_scheme_is_a_clear_error() -> None:
    client = await new_client()
    with pytest.raises(ConnectError, match="expected http:// or https://"):
        await client.post("ftp://127.0.0.1/x", b"{}")
    await client.aclose()


async def test_read_timeout_closes_the_connection(server_factory) -> None:
    async def stall(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        await srv.read_request(reader)  # returns None when the client gives up and closes

    srv = await server_factory(stall)
    client = await new_client(timeouts={"read": 0.2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReadTimeout, match="0.2s"):
        await client.post(srv.url + "/a", b"{}")
    assert 0.19 <= loop.time() - started < 1.0
    assert await eventually(lambda: srv.disconnects == 1)
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
    client = await new_client(timeouts={"read": 0.15})  # total ~0.5 s, no gap over 0.15 s
    assert await client.post(srv.url + "/a", b"{}") == (200, b'{"slow":"answer"}')
    await client.aclose()


async def test_read_timeout_mid_body(server_factory) -> None:
    srv = await server_factory(answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{", linger=1.0))
    client = await new_client(timeouts={"read": 0.2})
    with pytest.raises(ReadTimeout):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


# ---- limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 2000 + b"\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"x-h%d: %b\r\n" % (i, b"v" * 40) for i in range(40))
        + reply(b"{}")[17:],
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"x-%d: 1\r\n" % i for i in range(200))
        + b"content-length: 2\r\n\r\n{}",
    ],
    ids=["one-long-line", "head-over-the-total", "too-many-fields"],
)
async def test_oversized_head(server_factory, answer: bytes) -> None:
    srv = await server_factory(answer_once(answer, linger=0.2))
    client = await new_client(limits={"max_header_bytes": 1024})
    with pytest.raises(ResponseTooLarge, match=r"response head is larger than max_header_bytes \(1024\)"):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_oversized_body(server_factory, framing: str) -> None:
    body = b"x" * 5000
    if framing == "chunked":
        answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (
            len(body),
            body,
        )
    else:
        answer = reply(body)
    srv = await server_factory(answer_once(answer, linger=0.2))
    client = await new_client(limits={"max_body_bytes": 4096})
    with pytest.raises(ResponseTooLarge, match=r"response body is larger than max_body_bytes \(4096\)"):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


async def test_gzip_bomb_is_refused(server_factory) -> None:
    bomb = gzip.compress(b"0" * 1_000_000)
    srv = await server_factory(answer_once(reply(bomb, extra=b"content-encoding: gzip\r\n"), linger=0.2))
    client = await new_client(limits={"max_decompressed_bytes": 65536})
    with pytest.raises(
        ResponseTooLarge, match=r"decompressed response body is larger than max_decompressed_bytes \(65536\)"
    ):
        await client.post(srv.url + "/a", b"{}")
    await client.aclose()


# ---- the pool ----------------------------------------------------------------------------


async def test_connection_limit_queues_requests(server_factory) -> None:
    srv = await server_factory(echo(0.05))
    client = await new_client(max_connections=2)
    results = await asyncio.gather(*(client.post(srv.url + "/a", b"%d" % i) for i in range(7)))
    assert results == [(200, b"%d" % i) for i in range(7)]
    assert srv.max_open == 2 and srv.connections == 2
    await client.aclose()


async def test_pool_timeout(server_factory) -> None:
    srv = await server_factory(echo(0.5))
    client = await new_client(max_connections=1, timeouts={"pool": 0.1})
    first = asyncio.ensure_future(client.post(srv.url + "/a", b"1"))
    await asyncio.sleep(0.02)
    with pytest.raises(
        PoolTimeout,
        match=r"no free connection within timeouts.pool \(0.1s\); all 1 \(max_connections\) are busy",
    ):
        await client.post(srv.url + "/a", b"2")
    assert await first == (200, b"1")
    assert srv.connections == 1
    await client.aclose()


async def test_cancelled_request_closes_its_connection(server_factory) -> None:
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
    assert await eventually(
        lambda: srv.disconnects == 1
    )  # the upstream saw the disconnect (vLLM aborts the generation)
    assert await asyncio.wait_for(client.post(srv.url + "/a", b"next"), 2.0) == (200, b"next")
    assert srv.connections == 2
    await client.aclose()


async def test_cancelled_mid_body_closes_its_connection(server_factory) -> None:
    async def half_then_wait(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
        await writer.drain()
        await srv.read_request(reader)

    srv = await server_factory(half_then_wait)
    client = await new_client()
    task = asyncio.ensure_future(client.post(srv.url + "/a", b"{}"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await eventually(lambda: srv.disconnects == 1)
    await client.aclose()


async def test_pool_picks_the_client_by_url_and_key(server_factory) -> None:
    cases = [
        ("http://127.0.0.1:1/v1", "auto"),
        ("https://127.0.0.1:1/v1", "auto"),
        ("http://127.0.0.1:1/v1", "aiohttp"),
    ]
    kinds = []
    for url, key in cases:
        pool = UpstreamPool(UpstreamConfig(base_url=[url], api_key="EMPTY", upstream_client=key))
        await pool.start()
        kinds.append(type(pool.upstreams[0].client))
        await pool.aclose()
    assert kinds == [Http1UpstreamClient, AiohttpUpstreamClient, AiohttpUpstreamClient]


async def test_pool_resends_a_stale_connection_once(server_factory) -> None:
    async def once_per_connection(reader, writer, srv: Server) -> None:
        await srv.read_request(reader)
        writer.write(reply(b'{"n":%d}' % srv.connections))
        await writer.drain()
        await srv.read_request(reader)  # the second request on this connection: closed at once

    srv = await server_factory(once_per_connection)
    pool = UpstreamPool(UpstreamConfig(base_url=[srv.url + "/v1"], api_key="sk-p", upstream_client="aiohttp"))
    await pool.start()
    assert (await pool.post("/x", {}))[0] == {"n": 1}
    assert (await pool.post("/x", {}))[0] == {"n": 2}
    assert pool.retries == {"stale_connection": 1}
    assert [b"authorization: Bearer sk-p" in r for r in srv.requests] == [True, True, True]
    await pool.aclose()


# ---- TLS and proxies --------------------------------------------------------------------


async def test_https_with_ca_bundle_or_without_verification(server_factory, self_signed) -> None:
    cert, key = self_signed
    srv = await server_factory(answer_each, server_tls(cert, key))
    url = f"https://127.0.0.1:{srv.port}/v1/chat/completions"
    unknown = await new_client()
    with pytest.raises(
        ConnectError, match=rf"TLS handshake with 127.0.0.1:{srv.port} failed: .*CERTIFICATE_VERIFY_FAILED"
    ):
        await unknown.post(url, b"{}")
    await unknown.aclose()
    trusted = await new_client(ca_bundle=str(cert))
    assert await trusted.post(url, b'{"tls":1}') == (200, b'{"tls":1}')
    await trusted.aclose()
    unverified = await new_client(ssl_verify=False)
    assert await unverified.post(url, b'{"tls":2}') == (200, b'{"tls":2}')
    await unverified.aclose()


async def test_client_certificate_required_by_the_server(server_factory, self_signed, tmp_path: Path) -> None:
    cert, key = self_signed
    client_cert, client_key = make_cert(tmp_path, "nemo-gym-client")
    srv = await server_factory(answer_each, server_tls(cert, key, client_ca=client_cert))
    url = f"https://127.0.0.1:{srv.port}/v1/x"
    anonymous = await new_client(ca_bundle=str(cert))
    # TLS 1.3: the client's handshake is done before the server checks the certificate, and
    # Python's server resets the connection rather than sending an alert, so all the client
    # can tell is that the request went out and nothing came back.
    with pytest.raises(ConnectionDropped, match="without answering"):
        await anonymous.post(url, b"{}")
    await anonymous.aclose()
    identified = await new_client(
        ca_bundle=str(cert), client_cert=str(client_cert), client_key=str(client_key)
    )
    assert await identified.post(url, b'{"mtls":1}') == (200, b'{"mtls":1}')
    await identified.aclose()
    combined = tmp_path / "combined.pem"
    combined.write_bytes(client_cert.read_bytes() + client_key.read_bytes())
    one_file = await new_client(ca_bundle=str(cert), client_cert=str(combined))
    assert await one_file.post(url, b'{"mtls":2}') == (200, b'{"mtls":2}')
    await one_file.aclose()


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        (
            {"ca_bundle": "/nonexistent/ca.pem"},
            r"ca_bundle: cannot read '/nonexistent/ca.pem' \(No such file",
        ),
        ({"client_cert": "/nonexistent/c.pem"}, r"client_cert: cannot read '/nonexistent/c.pem'"),
        ({"client_key": "/nonexistent/k.pem"}, r"client_key is set but client_cert is not"),
        ({"ca_bundle": "EMPTY_FILE"}, r"ca_bundle: '.*empty.pem' holds no usable PEM certificate"),
        ({"client_cert": "EMPTY_FILE"}, r"client_cert: cannot load the client certificate and its key"),
    ],
    ids=["ca-missing", "cert-missing", "key-without-cert", "ca-not-pem", "cert-not-pem"],
)
def test_bad_tls_files_name_the_key(tmp_path: Path, keys: dict[str, str], match: str) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    keys = {k: str(empty) if v == "EMPTY_FILE" else v for k, v in keys.items()}
    with pytest.raises(ValueError, match=match):
        AiohttpUpstreamClient(config(**keys), headers={})


class ConnectProxy:
    """A minimal forward proxy: CONNECT tunnels, and absolute-form plain-HTTP requests relayed
    on a new connection. Records the request line of each."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            self.seen.append(line)
            method, target, _ = line.split(b" ", 2)
            if method == b"CONNECT":
                host, port = target.rsplit(b":", 1)
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # http://host:port/path: pass the request on as it is
                authority = target.split(b"/")[2]
                host, port = authority.rsplit(b":", 1)
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def proxy() -> ConnectProxy:
    p = ConnectProxy()
    await p.start()
    yield p
    await p.stop()


async def test_https_proxy_variable_is_honoured(server_factory, self_signed, proxy, monkeypatch) -> None:
    cert, key = self_signed
    srv = await server_factory(answer_each, server_tls(cert, key))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    client = await new_client({"authorization": "Bearer sk-proxied"}, ca_bundle=str(cert))
    url = f"https://127.0.0.1:{srv.port}/v1/responses"
    assert await client.post(url, b'{"via":"proxy"}') == (200, b'{"via":"proxy"}')
    assert await client.post(url, b'{"again":1}') == (200, b'{"again":1}')
    await client.aclose()
    assert proxy.seen == [b"CONNECT 127.0.0.1:%d HTTP/1.1" % srv.port]  # one tunnel, kept alive
    assert [b"authorization: Bearer sk-proxied" in r for r in srv.requests] == [True, True]


async def test_http_proxy_and_no_proxy(server_factory, proxy, monkeypatch) -> None:
    srv = await server_factory(answer_each)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    client = await new_client()
    assert await client.post(srv.url + "/v1/x", b"1") == (200, b"1")
    await client.aclose()
    assert proxy.seen == [b"POST http://127.0.0.1:%d/v1/x HTTP/1.1" % srv.port]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = await new_client()
    assert await direct.post(srv.url + "/v1/x", b"2") == (200, b"2")
    await direct.aclose()
    assert len(proxy.seen) == 1


async def test_unreachable_proxy_is_a_connect_error(server_factory, monkeypatch) -> None:
    srv = await server_factory(answer_each)
    dead = Server(answer_each)
    await dead.start()
    await dead.stop()
    await asyncio.sleep(0.05)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.port}")
    client = await new_client()
    with pytest.raises(ConnectError, match=rf"cannot connect to the proxy for 127.0.0.1:{srv.port}"):
        await client.post(srv.url + "/v1/x", b"{}")
    await client.aclose()
