"""openai_model reaches its endpoint through the aiohttp client: the proxy variables and the
TLS keys (ca_bundle, ssl_verify) apply, and a wrong file path stops the server at start."""

from __future__ import annotations

import httpx
import orjson
import pytest

from nemo_gym.testing.raw_server import ConnectProxy, RawServer, reply, server_tls
from responses_api_models.openai_model.app import OpenAIModel, OpenAIModelConfig

pytestmark = pytest.mark.usefixtures("no_proxy_variables")


async def openai_endpoint(reader, writer, srv: RawServer) -> None:
    while await srv.read_request(reader) is not None:
        writer.write(reply(b'{"id":"resp_1","object":"response","output":[]}'))
        await writer.drain()


async def ask(server: OpenAIModel) -> httpx.Response:
    app = server.build_asgi()
    await server.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://adapter"
        ) as client:
            return await client.post("/v1/responses", json={"model": "caller", "input": "hi"})
    finally:
        await server.shutdown()


async def test_https_endpoint_through_a_proxy_with_a_ca_bundle(self_signed, monkeypatch) -> None:
    cert, key = self_signed
    upstream = RawServer(openai_endpoint)
    await upstream.start(server_tls(cert, key))
    proxy = ConnectProxy()
    await proxy.start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    server = OpenAIModel(
        config=OpenAIModelConfig(
            openai_base_url=f"https://127.0.0.1:{upstream.port}/v1",
            openai_api_key="sk-openai-xyz",
            openai_model="gpt-test",
            ca_bundle=str(cert),
        )
    )
    try:
        response = await ask(server)
    finally:
        await proxy.stop()
        await upstream.stop()
    assert response.status_code == 200
    assert response.json() == {"id": "resp_1", "object": "response", "output": []}
    assert proxy.seen == [b"CONNECT 127.0.0.1:%d HTTP/1.1" % upstream.port]
    [request] = upstream.requests
    assert request.startswith(b"POST /v1/responses HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer sk-openai-xyz\r\n" in request
    assert orjson.loads(request.split(b"\r\n\r\n", 1)[1]) == {"model": "gpt-test", "input": "hi"}


async def test_unknown_certificate_is_refused_unless_ssl_verify_is_off(self_signed) -> None:
    cert, key = self_signed
    upstream = RawServer(openai_endpoint)
    await upstream.start(server_tls(cert, key))

    def model(**tls: object) -> OpenAIModel:
        return OpenAIModel(
            config=OpenAIModelConfig(
                openai_base_url=f"https://127.0.0.1:{upstream.port}/v1",
                openai_api_key="sk-x",
                openai_model="gpt-test",
                max_retries=0,
                **tls,
            )
        )

    try:
        refused = await ask(model())
        unverified = await ask(model(ssl_verify=False))
    finally:
        await upstream.stop()
    assert refused.status_code == 503
    assert "CERTIFICATE_VERIFY_FAILED" in refused.json()["error"]["message"]
    assert unverified.status_code == 200


async def test_missing_ca_bundle_stops_the_server_at_start() -> None:
    server = OpenAIModel(
        config=OpenAIModelConfig(
            openai_base_url="https://api.example.test/v1",
            openai_api_key="sk-x",
            openai_model="gpt-test",
            ca_bundle="/nonexistent/corp-ca.pem",
        )
    )
    with pytest.raises(ValueError, match=r"ca_bundle: cannot read '/nonexistent/corp-ca.pem'"):
        await server.startup()
