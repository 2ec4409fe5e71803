"""openai_model forwards both endpoints with the configured model and key."""

from __future__ import annotations

import httpx
import orjson

from nemo_gym.testing.mock_upstream import MockUpstreams
from responses_api_models.openai_model.app import OpenAIModel, OpenAIModelConfig

BASE = "https://api.example.test/v1"


async def test_forwards_responses_and_chat_with_configured_model() -> None:
    server = OpenAIModel(
        config=OpenAIModelConfig(
            openai_base_url=BASE, openai_api_key="sk-openai-xyz", openai_model="gpt-test"
        ),
    )
    router = MockUpstreams()
    server.pool.network = router.transport
    app = server.build_asgi()
    await server.startup()
    responses = router.post(f"{BASE}/responses").respond(
        200, json={"id": "resp_1", "object": "response", "output": []}
    )
    chat = router.post(f"{BASE}/chat/completions").respond(200, json={"id": "c", "choices": []})
    bad = {
        "error": {
            "message": "Incorrect API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://adapter") as client:
        r = await client.post("/v1/responses", json={"model": "caller", "input": "hi"})
        assert r.json() == {"id": "resp_1", "object": "response", "output": []}
        assert orjson.loads(responses.calls[0].content) == {"model": "gpt-test", "input": "hi"}
        assert responses.calls[0].headers["authorization"] == "Bearer sk-openai-xyz"
        await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert orjson.loads(chat.calls[0].content)["model"] == "gpt-test"
        chat.respond(401, json=bad)
        r = await client.post("/v1/chat/completions", json={"messages": []})
        assert (
            r.status_code == 401
            and r.json()["error"]["message"] == "Incorrect API key"
            and r.json()["error"]["code"] == "invalid_api_key"
        )
    await server.shutdown()
