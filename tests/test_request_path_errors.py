"""One error path: whatever a handler raises, on a hot route or a FastAPI route, the caller gets
the same OpenAI-style answer from `api_error_for`, and only failures with no HTTP meaning of
their own put a traceback in the log (never in the answer)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from nemo_gym.conversion.prefix import SpliceError
from nemo_gym.exceptions import APIError, ConversionError, ReadTimeout, UpstreamFormatError
from nemo_gym.server.base import BaseServerConfig, SimpleServer
from nemo_gym.server.context import RuntimeContext
from nemo_gym.server.request_path import FastHandler

RAISED: dict[str, BaseException] = {
    "conversion": ConversionError("'input[0].type' is not a known item type", param="input[0].type"),
    "upstream_format": UpstreamFormatError("upstream answer has no 'choices'"),
    "transport": ReadTimeout("30.0s"),
    "api": APIError(418, "I am a teapot", type="teapot_error", param="pot", code="t"),
    "splice": SpliceError("the template's closing tokens are unknown"),
    "bug": RuntimeError("boom\nsecond line"),
}
EXPECTED: dict[str, tuple[int, dict[str, Any]]] = {
    "conversion": (400, {"message": "'input[0].type' is not a known item type", "type": "invalid_request_error",
                         "param": "input[0].type", "code": None}),
    "upstream_format": (502, {"message": "upstream answer has no 'choices'", "type": "server_error", "param": None,
                              "code": None}),
    "transport": (504, {"message": "the upstream did not answer within the read timeout (30.0s)",
                        "type": "server_error", "param": None, "code": None}),
    "api": (418, {"message": "I am a teapot", "type": "teapot_error", "param": "pot", "code": "t"}),
    "splice": (500, {"message": "Internal server error: SpliceError: the template's closing tokens are unknown",
                     "type": "server_error", "param": None, "code": None}),
    "bug": (500, {"message": "Internal server error: RuntimeError: boom", "type": "server_error", "param": None,
                  "code": None}),
}  # fmt: skip


class Raiser(SimpleServer):
    config: BaseServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()

        @app.post("/app/{kind}")
        async def raise_it(kind: str) -> dict:
            raise RAISED[kind]

        return app

    def fast_routes(self) -> dict[str, FastHandler]:
        def route(kind: str) -> FastHandler:
            async def handler(body: bytes, session_id: str) -> Any:
                raise RAISED[kind]

            return handler

        return {f"/hot/{kind}": route(kind) for kind in RAISED}


@pytest.mark.parametrize("where", ["hot", "app"])
@pytest.mark.parametrize("kind", list(RAISED))
async def test_every_raise_becomes_the_same_answer(
    where: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    context = RuntimeContext(global_config={}, origins={}, instance_name="r", session_secret="k")
    app = Raiser(config=BaseServerConfig()).bind_context(context).build_asgi()
    caplog.set_level(logging.ERROR, logger="nemo_gym.server")
    # Starlette re-raises what no handler took, after answering, for uvicorn to log.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        r = await client.post(f"/{where}/{kind}", content=b"{}")
    status, error = EXPECTED[kind]
    assert (r.status_code, r.json()) == (status, {"error": error})
    logged = [record for record in caplog.records if record.exc_info is not None]
    # the traceback of a failure with no HTTP meaning is ours to log (a bug on an app route: uvicorn's)
    assert len(logged) == (1 if kind == "splice" or (kind, where) == ("bug", "hot") else 0)
    if logged:
        assert logged[0].exc_info[1] is RAISED[kind]


async def test_an_answer_that_is_not_json_is_a_500_not_a_dropped_connection() -> None:
    class Unserializable(SimpleServer):
        config: BaseServerConfig

        def fast_routes(self) -> dict[str, FastHandler]:
            async def handler(body: bytes, session_id: str) -> Any:
                return {"value": object()}

            return {"/hot": handler}

    context = RuntimeContext(global_config={}, origins={}, instance_name="u", session_secret="k")
    app = Unserializable(config=BaseServerConfig()).bind_context(context).build_asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://u") as client:
        r = await client.post("/hot", content=b"{}")
    assert (r.status_code, r.json()["error"]["message"]) == (
        500,
        "Internal server error: TypeError: Type is not JSON serializable: object",
    )
