"""Server runtime in-process: sessions, OpenAI-style errors, the head server's redaction."""

from __future__ import annotations

import httpx
import yaml
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from nemo_gym.runner.head_server import build_head_app
from nemo_gym.server.base import BaseServerConfig, ServerApp, SimpleServer
from nemo_gym.server.context import RuntimeContext
from nemo_gym.server.sessions import SessionCookieMiddleware
from nemo_gym.server_utils import SESSION_ID_KEY
from tests.servers.echo_app import EchoConfig, EchoServer


def echo_app(secret: str = "s3cret") -> httpx.AsyncClient:
    context = RuntimeContext(global_config={}, origins={}, instance_name="echo_a", session_secret=secret)
    app = EchoServer(config=EchoConfig()).bind_context(context).build_asgi()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://echo")


async def test_session_cookie_persists_and_new_client_gets_new_session() -> None:
    async with echo_app() as a, echo_app() as b:
        first = (await a.post("/echo", json={"text": "x"})).json()["session_id"]
        assert "EchoServer___echo_a" in a.cookies
        second = (await a.post("/echo", json={"text": "x"})).json()["session_id"]
        other = (await b.post("/echo", json={"text": "x"})).json()["session_id"]
    assert first == second and other != first and len(first) == 36


async def test_tampered_or_foreign_cookie_starts_new_session() -> None:
    async with echo_app() as a, echo_app(secret="another-run") as other_run:
        sid = (await a.post("/echo", json={"text": "x"})).json()["session_id"]
        cookie = a.cookies["EchoServer___echo_a"]
        forged = cookie.replace(sid, "00000000-0000-4000-8000-000000000000")
        r = await a.post("/echo", json={"text": "x"}, headers={"cookie": f"EchoServer___echo_a={forged}"})
        assert r.json()["session_id"] not in (sid, "00000000-0000-4000-8000-000000000000")
        r = await other_run.post(
            "/echo", json={"text": "x"}, headers={"cookie": f"EchoServer___echo_a={cookie}"}
        )
        assert r.json()["session_id"] != sid


async def test_openai_style_errors() -> None:
    async with echo_app() as client:
        r = await client.post("/echo", json={"times": 2})
        assert r.status_code == 400
        assert r.json() == {
            "error": {
                "message": "Invalid 'text': Field required",
                "type": "invalid_request_error",
                "param": "text",
                "code": None,
            }
        }
        r = await client.post("/echo", content=b"{oops", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["message"] == "Request body is not valid JSON"
        r = await client.get("/nope")
        assert r.status_code == 404 and r.json() == {
            "error": {"message": "Not Found", "type": "not_found_error", "param": None, "code": None}
        }
        r = await client.get("/teapot")
        assert r.status_code == 418 and r.json()["error"] == {
            "message": "I am a teapot",
            "type": "invalid_request_error",
            "param": "pot",
            "code": None,
        }
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/")).json() == {"status": "ok"}


async def test_unhandled_error_is_one_line_500() -> None:
    context = RuntimeContext(global_config={}, origins={}, instance_name="e", session_secret="s")
    app = EchoServer(config=EchoConfig()).bind_context(context).build_asgi()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        r = await client.get("/fail")
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "message": "Internal server error: RuntimeError: boom",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


async def test_head_server_redacts_secrets() -> None:
    config = {
        "policy_api_key": "sk-live-ABCDEF",
        "policy_base_url": "http://x/v1",
        "m": {"responses_api_models": {"v": {"api_key": "sk-live-ABCDEF", "port": 1}}},
    }
    app = build_head_app(config, lambda: [{"name": "m"}])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://head") as client:
        text = (await client.get("/global_config_dict_yaml")).text
        assert "sk-live-ABCDEF" not in text
        assert yaml.safe_load(text) == {
            "policy_api_key": "<redacted>",
            "policy_base_url": "http://x/v1",
            "m": {"responses_api_models": {"v": {"api_key": "<redacted>", "port": 1}}},
        }
        assert (await client.get("/server_instances")).json() == [{"name": "m"}]
        assert (await client.post("/global_config_dict_yaml")).status_code == 405


async def test_oversized_bodies_get_413_on_plain_and_fast_routes() -> None:
    from responses_api_models.vllm_model.app import VLLMModel
    from responses_api_models.vllm_model.config import VLLMModelConfig

    context = RuntimeContext(global_config={}, origins={}, instance_name="e", session_secret="s")
    echo = EchoServer(config=EchoConfig(max_body_bytes=100)).bind_context(context).build_asgi()
    config = VLLMModelConfig(base_url=["http://up:1/v1"], api_key="k", model="m", max_body_bytes=100)
    adapter = VLLMModel(config=config).bind_context(context).build_asgi()
    big = {"text": "x" * 200}
    expected = {
        "message": "request body is larger than the limit of 100 bytes",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    for app, path in ((echo, "/echo"), (adapter, "/v1/responses"), (adapter, "/v1/chat/completions")):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            r = await client.post(path, json=big)
            assert r.status_code == 413 and r.json() == {"error": expected}

            async def chunks():  # no content-length: the limit is enforced while reading
                for _ in range(5):
                    yield b"x" * 50

            r = await client.post(path, content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json() == {"error": expected}


class OwnAppServer(SimpleServer):
    """Builds its own FastAPI() instead of extending ours, as some NeMo Gym servers do."""

    started: int = 0

    def setup_webserver(self) -> FastAPI:
        app = FastAPI()
        self.setup_session_middleware(app)

        @app.post("/echo")
        async def echo(request: Request) -> dict:
            return {"session_id": request.session[SESSION_ID_KEY], "started": self.started}

        return app

    async def startup(self) -> None:
        self.started += 1


def _routes(app: FastAPI, path: str) -> int:
    return sum(1 for route in app.routes if getattr(route, "path", None) == path)


def test_an_app_the_server_built_itself_gets_the_shared_behaviour_once() -> None:
    context = RuntimeContext(global_config={}, origins={}, instance_name="own", session_secret="s")
    server = OwnAppServer(config=BaseServerConfig()).bind_context(context)
    asgi = server.build_asgi()
    app = asgi.app
    assert [m.cls for m in app.user_middleware] == [SessionCookieMiddleware]
    assert (_routes(app, "/health"), _routes(app, "/")) == (1, 1)
    with TestClient(asgi) as client:  # runs the lifespan: our startup hook
        answer = client.post("/echo")
        assert answer.json()["started"] == 1 and len(answer.json()["session_id"]) == 36
        assert answer.headers.get_list("set-cookie")[0].startswith("OwnAppServer___own=")
        assert len(answer.headers.get_list("set-cookie")) == 1
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/nope").json() == {
            "error": {"message": "Not Found", "type": "not_found_error", "param": None, "code": None}
        }


def test_the_app_setup_webserver_built_is_served_as_it_is() -> None:
    context = RuntimeContext(global_config={}, origins={}, instance_name="echo_a", session_secret="s")
    server = EchoServer(config=EchoConfig()).bind_context(context)
    app = server.build_asgi().app
    assert isinstance(app, ServerApp)
    assert [m.cls for m in app.user_middleware] == [SessionCookieMiddleware]
    assert (_routes(app, "/health"), _routes(app, "/")) == (1, 1)
