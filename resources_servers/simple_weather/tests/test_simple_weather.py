"""simple_weather's tool, seed and verify endpoints, and its dataset."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from nemo_gym.testing.payloads import assistant_response
from resources_servers.simple_weather.app import SimpleWeather, SimpleWeatherConfig


async def test_endpoints() -> None:
    app = SimpleWeather(config=SimpleWeatherConfig()).build_asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
        assert (await client.post("/get_weather", json={"city": "Oslo"})).json() == {
            "city": "Oslo",
            "weather_description": "The weather in Oslo is cold.",
        }
        assert (await client.post("/seed_session", json={"responses_create_params": {}})).json() == {}
        response = assistant_response("Cold.")
        request = {"responses_create_params": {"input": "x"}, "response": response, "row_id": 3}
        verified = (await client.post("/verify", json=request)).json()
        assert verified["reward"] == 1.0 and verified["row_id"] == 3
        assert verified["responses_create_params"]["input"] == "x"
        assert verified["response"]["output"][0]["content"][0]["text"] == "Cold."
        incomplete = await client.post("/verify", json={**request, "response": {"output": []}})
        assert incomplete.status_code == 422  # as NeMo Gym's resources servers answer
        assert incomplete.json()["error"]["param"] == "response.id"
        bad = await client.post("/get_weather", json={"town": "Oslo"})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "city"


def test_dataset_shape() -> None:
    rows = [
        json.loads(line)
        for line in (Path(__file__).parents[1] / "data" / "example.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 5
    for row in rows:
        params = row["responses_create_params"]
        assert [m["role"] for m in params["input"]] == ["developer", "user"]
        assert [t["name"] for t in params["tools"]] == ["get_weather"]


def test_episode_session_contract() -> None:
    from nemo_gym.base_resources_server import ResourcesSeedSessionRequest
    from nemo_gym.testing.session_conformance import check_resources_session_contract

    seed = ResourcesSeedSessionRequest(
        resources_session_id="resources-session-1",
        episode_id={"rollout_id": "0-0"},
        task_id={"taskset": "weather", "task_id": "0"},
        task_data={},
    )
    check_resources_session_contract(
        SimpleWeather(config=SimpleWeatherConfig()).setup_webserver(), seed, keeps_state=True
    )
