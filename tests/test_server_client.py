"""ServerClient: addressing by name, pydantic bodies, cookies per call, aiohttp-style answers,
errors with bodies — against a scripted server on 127.0.0.1."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import BaseModel

from nemo_gym.config import free_port
from nemo_gym.http.server_client import (
    HeadServerUnreachable,
    ServerClient,
    ServerResponseError,
    close_shared_client,
)
from nemo_gym.server_utils import get_response_json, raise_for_status, request
from nemo_gym.testing.scripted_server import Answer, ScriptedServer


class Params(BaseModel):
    input: str
    temperature: float | None = None
    max_output_tokens: int | None = None


def config_for(server: ScriptedServer) -> dict:
    return {
        "agent": {"responses_api_agents": {"simple_agent": server.address}},
        "no_port_yet": {"resources_servers": {"x": {"entrypoint": "app.py"}}},
        "policy_base_url": "http://ignored",
    }


async def test_post_by_name_with_pydantic_body_and_cookies() -> None:
    server = ScriptedServer()
    server.on("/run", Answer(200, {"ok": True}, {"set-cookie": "S=abc; path=/"}))
    async with server.running():
        client = ServerClient(config_for(server))
        try:
            response = await client.post(
                server_name="agent",
                url_path="/run",
                json=Params(input="hi", temperature=0.5),
                cookies={"A": "1", "B": "2"},
            )
            assert response.status == 200 and response.ok
            assert await response.json() == {"ok": True} and response.cookies["S"].value == "abc"
            again = await client.post("agent", "/run", json={"x": 1}, cookies=response.cookies)
            assert await get_response_json(again) == {"ok": True}
            plain = await client.post("agent", "/run", json={"x": 1})
            await plain.read()
        finally:
            await close_shared_client()
    first, second, third = server.calls_to("/run")
    assert first.json == {"input": "hi", "temperature": 0.5}  # unset fields left out
    assert first.headers["cookie"] == "A=1; B=2" and first.headers["content-type"] == "application/json"
    assert second.headers["cookie"] == "S=abc"  # a response's cookies can be passed straight on
    assert "cookie" not in third.headers  # the shared session remembers no cookies
    assert client.server_names() == ["agent"]
    assert client.global_config_dict.agent.responses_api_agents.simple_agent.port == server.port
    with pytest.raises(KeyError, match="no server instance named 'nope' \\(known: agent\\)"):
        client.url_for("nope")


async def test_raise_for_status_is_awaited_and_keeps_the_body() -> None:
    server = ScriptedServer()
    server.on("/run", Answer(400, '{"error": "bad"}'))
    server.on("/fine", Answer(200, {}))
    async with server.running():
        try:
            bad = await request("POST", f"http://127.0.0.1:{server.port}/run", json={})
            with pytest.raises(ServerResponseError) as caught:
                await raise_for_status(bad)
            ok = await request("GET", f"http://127.0.0.1:{server.port}/fine")
            assert await raise_for_status(ok) is None
            await ok.read()
        finally:
            await close_shared_client()
    error = caught.value
    assert isinstance(error, aiohttp.ClientResponseError) and error.status == 400
    assert error.response_content == b'{"error": "bad"}'
    assert str(error) == f'POST http://127.0.0.1:{server.port}/run returned 400: {{"error": "bad"}}'


def test_nemo_gym_constructor_keywords() -> None:
    client = ServerClient(
        head_server_config={"host": "127.0.0.1", "port": 11000},
        global_config_dict={"m": {"responses_api_models": {"vllm_model": {"host": "h", "port": 5}}}},
    )
    assert client.url_for("m") == "http://h:5"


def test_unreachable_head_server_names_the_url() -> None:
    port = free_port()
    with pytest.raises(
        HeadServerUnreachable, match=f"cannot reach the NeMo Gym head server at http://127.0.0.1:{port}"
    ):
        ServerClient.load_from_global_config({"host": "127.0.0.1", "port": port})


def test_head_server_address_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("NEMO_GYM_HEAD_SERVER", f"127.0.0.1:{port}")
    with pytest.raises(HeadServerUnreachable, match=f"http://127.0.0.1:{port}"):
        ServerClient.load_from_global_config()


def test_head_server_config_is_the_address_this_process_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_GYM_HEAD_SERVER", "10.1.2.3:11555")
    head = ServerClient.load_head_server_config()
    assert (head.host, head.port) == ("10.1.2.3", 11555)
