"""The aiohttp transport (https:// upstreams, or `upstream_client: aiohttp`) beyond the contract
both transports meet (tests/test_upstream_transport_contract.py): the head it writes, TLS
options, client certificates and proxy variables, against scripted raw servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nemo_gym.exceptions import ConnectError, ConnectionDropped, ConnectTimeout
from nemo_gym.testing.raw_server import RawServer, answer_each, make_cert, reply, server_tls
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.pool import UpstreamPool
from nemo_gym.upstream.transport import LeanTransport
from nemo_gym.upstream.transport.aiohttp import AiohttpTransport

pytestmark = pytest.mark.usefixtures("no_proxy_variables")


def config(**kwargs: object) -> UpstreamConfig:
    args: dict = {"base_url": ["http://127.0.0.1:1/v1"], "api_key": "EMPTY", **kwargs}
    return UpstreamConfig(**args)


async def new_client(headers: dict[str, str] | None = None, **kwargs: object) -> AiohttpTransport:
    client = AiohttpTransport(config(**kwargs), headers=headers or {})
    await client.start()
    return client


def head_lines(request: bytes) -> list[bytes]:
    """The request head's lines, without aiohttp's user-agent (it names aiohttp's version)."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return [line for line in head if not line.lower().startswith(b"user-agent:")]


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


# ---- connecting ------------------------------------------------------------------------


async def test_connect_timeout_covers_the_tls_handshake(server_factory) -> None:
    async def silent(reader, writer, srv: RawServer) -> None:
        await asyncio.sleep(1.0)

    srv = await server_factory(silent)
    client = await new_client(timeouts={"connect": 0.2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectTimeout, match=rf"no connection to 127.0.0.1:{srv.port} within 0.2s"):
        await client.post(f"https://127.0.0.1:{srv.port}/v1/x", b"{}")
    assert 0.19 <= loop.time() - started < 0.8
    await client.aclose()


# ---- the pool ----------------------------------------------------------------------------


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
        kinds.append(type(pool.upstreams[0].transport))
        await pool.aclose()
    assert kinds == [LeanTransport, AiohttpTransport, AiohttpTransport]


async def test_pool_resends_a_stale_connection_once(server_factory) -> None:
    async def once_per_connection(reader, writer, srv: RawServer) -> None:
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
        AiohttpTransport(config(**keys), headers={})


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
    dead = RawServer(answer_each)
    await dead.start()
    await dead.stop()
    await asyncio.sleep(0.05)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.port}")
    client = await new_client()
    with pytest.raises(ConnectError, match=rf"cannot connect to the proxy for 127.0.0.1:{srv.port}"):
        await client.post(srv.url + "/v1/x", b"{}")
    await client.aclose()
