"""ServerClient: addressing by name, pydantic bodies, cookies per call, errors with bodies."""

from __future__ import annotations

import httpx
import orjson
import pytest
import respx
from pydantic import BaseModel

from nemo_gym.config import free_port
from nemo_gym.http.server_client import (
    HeadServerUnreachable,
    ServerClient,
    ServerResponseError,
    close_shared_client,
    raise_for_status,
)

CONFIG = {
    "agent": {"responses_api_agents": {"simple_agent": {"host": "127.0.0.1", "port": 4001}}},
    "no_port_yet": {"resources_servers": {"x": {"entrypoint": "app.py"}}},
    "policy_base_url": "http://ignored",
}


class Params(BaseModel):
    input: str
    temperature: float | None = None
    max_output_tokens: int | None = None


async def test_post_by_name_with_pydantic_body_and_cookies() -> None:
    client = ServerClient(CONFIG)
    try:
        with respx.mock(using="httpx") as router:
            route = router.post("http://127.0.0.1:4001/run").respond(
                200, json={"ok": True}, headers={"set-cookie": "S=abc; path=/"}
            )
            response = await client.post(
                server_name="agent",
                url_path="/run",
                json=Params(input="hi", temperature=0.5),
                cookies={"A": "1", "B": "2"},
            )
            assert response.json() == {"ok": True} and response.cookies["S"] == "abc"
            request = route.calls[0].request
            assert orjson.loads(request.content) == {
                "input": "hi",
                "temperature": 0.5,
            }  # unset fields left out
            assert request.headers["cookie"] == "A=1; B=2"
            await client.post("agent", "/run", json={"x": 1})
            assert "cookie" not in route.calls[1].request.headers  # the shared client remembers no cookies
    finally:
        await close_shared_client()
    assert client.server_names() == ["agent"]
    with pytest.raises(KeyError, match="no server instance named 'nope' \\(known: agent\\)"):
        client.url_for("nope")


def test_raise_for_status_includes_the_body() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:4001/run")
    with pytest.raises(
        ServerResponseError, match=r"POST http://127.0.0.1:4001/run returned 400: \{\"error\": \"bad\"\}"
    ):
        raise_for_status(httpx.Response(400, text='{"error": "bad"}', request=request))
    ok = httpx.Response(200, request=request)
    assert raise_for_status(ok) is ok


def test_unreachable_head_server_names_the_url() -> None:
    port = free_port()
    with pytest.raises(
        HeadServerUnreachable, match=f"cannot reach the NeMo Gym head server at http://127.0.0.1:{port}"
    ):
        ServerClient.load_from_global_config({"host": "127.0.0.1", "port": port})
