"""`/metrics` on the adapter: requests by route and status, upstream latency and in-flight,
retries by reason, context-length fallbacks, sessions, token drift — exact samples."""

from __future__ import annotations

from nemo_gym.testing.checks import samples
from nemo_gym.testing.mock_upstream import MockUpstreams
from nemo_gym.upstream.transport.mock import MockResponse
from responses_api_models.vllm_model.tests.conftest import UP1, adapter, chat_body


async def test_adapter_metrics_count_what_happened(upstream: MockUpstreams) -> None:
    overflow = {
        "error": {
            "message": "This model's maximum context length is 256 tokens. However, your prompt contains at least 300 input tokens.",
            "type": "BadRequestError",
            "code": 400,
        }
    }
    upstream.post(f"{UP1}/chat/completions").mock(
        side_effect=[
            MockResponse(503, json={"error": {"message": "busy"}}),
            MockResponse(200, json=chat_body()),
            MockResponse(400, json=overflow),
            MockResponse(200, json=chat_body()),
        ]
    )
    async with adapter(upstream) as client:
        assert (await client.post("/v1/responses", json={"input": "a"})).status_code == 200
        assert (await client.post("/v1/responses", json={"input": "b"})).status_code == 200  # empty result
        assert (await client.post("/v1/chat/completions", json={"messages": []})).status_code == 400
        assert (
            await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        ).status_code == 200
        text = (await client.get("/metrics")).text
    assert samples(text, "nemo_gym_requests_total") == {
        'route="/v1/responses",status="200"': 2.0,
        'route="/v1/chat/completions",status="400"': 1.0,
        'route="/v1/chat/completions",status="200"': 1.0,
    }
    assert samples(text, "nemo_gym_request_duration_seconds_count") == {
        'route="/v1/responses"': 2.0,
        'route="/v1/chat/completions"': 2.0,
    }
    assert samples(text, "nemo_gym_upstream_retries_total") == {'reason="status_503"': 1.0}
    assert samples(text, "nemo_gym_context_length_fallbacks_total") == {"": 1.0}
    assert samples(text, "nemo_gym_upstream_in_flight") == {f'upstream="{UP1}"': 0.0}
    assert samples(text, "nemo_gym_upstream_routed") == {f'upstream="{UP1}"': 1.0}
    assert samples(text, "nemo_gym_upstream_request_duration_seconds_count") == {f'upstream="{UP1}"': 4.0}
    assert samples(text, "nemo_gym_sessions_tracked") == {
        "": 1.0
    }  # one caller: its cookie jar keeps the session
    assert samples(text, "nemo_gym_requests_cancelled_total") == {}
    assert "nemo_gym_token_drift_total" not in text  # drift is measured in token mode only


async def test_token_mode_exposes_drift_counts(upstream: MockUpstreams) -> None:
    async with adapter(upstream, return_token_id_information=True) as client:
        text = (await client.get("/metrics")).text
    assert samples(text, "nemo_gym_token_drift_total") == {
        f'outcome="{outcome}",upstream="{UP1}"': 0.0
        for outcome in ("measured", "extends", "diverged", "spliced", "fallbacks")
    }
