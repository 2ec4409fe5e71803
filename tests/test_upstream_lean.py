"""The lean HTTP/1.1 transport beyond the contract both transports meet
(tests/test_upstream_transport_contract.py): the exact bytes it writes, its keep-alive window,
its DNS cache, TLS with its own context."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from nemo_gym.exceptions import ConnectError
from nemo_gym.testing.raw_server import answer_each, echo
from nemo_gym.upstream.config import Timeouts
from nemo_gym.upstream.transport import LeanTransport


async def new_client(**kwargs: object) -> LeanTransport:
    args: dict = {"max_connections": 64, "timeouts": Timeouts(connect=2.0, pool=None), **kwargs}
    client = LeanTransport(**args)
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


async def test_idle_connections_older_than_keepalive_are_not_reused(server_factory) -> None:
    srv = await server_factory(answer_each)
    client = await new_client(keepalive=0.05)
    await client.post(srv.url + "/a", b"{}")
    await asyncio.sleep(0.1)
    await client.post(srv.url + "/a", b"{}")
    assert srv.connections == 2
    await client.aclose()


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
