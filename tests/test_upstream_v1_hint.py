"""A base_url without `/v1` is the most common setup slip: its 404s and its health say so."""

from __future__ import annotations

from nemo_gym.testing.mock_upstream import MockUpstreams
from responses_api_models.vllm_model.tests.conftest import adapter

NO_V1 = "http://up1:8000"
HINT = "`http://up1:8000/chat/completions` returned 404 — does `base_url` end with `/v1`?"


async def test_404_from_a_base_url_without_v1_asks_about_v1() -> None:
    router = MockUpstreams()
    router.post(f"{NO_V1}/chat/completions").respond(404, json={"detail": "Not Found"})
    async with adapter(router, base_url=NO_V1) as client:
        chat = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        responses = await client.post("/v1/responses", json={"input": "x"})
    for r in (chat, responses):
        assert r.status_code == 404 and r.json()["error"]["message"] == HINT


async def test_a_404_from_a_v1_base_url_keeps_the_upstream_message() -> None:
    router = MockUpstreams()
    router.post("http://up1:8000/v1/chat/completions").respond(404, json={"detail": "Not Found"})
    async with adapter(router) as client:
        r = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Not Found"


async def test_health_probe_does_not_call_a_base_url_without_v1_healthy() -> None:
    router = MockUpstreams()
    router.get(f"{NO_V1}/health").respond(200)
    router.get(f"{NO_V1}/models").respond(404, json={"detail": "Not Found"})
    async with adapter(router, base_url=NO_V1) as client:
        r = await client.get("/health?upstream=true")
    assert r.json()["upstreams"] == [
        {
            "url": NO_V1,
            "status": "unhealthy",
            "error": "`http://up1:8000/models` returned 404 — does `base_url` end with `/v1`?",
            "routed": True,
        }
    ]
