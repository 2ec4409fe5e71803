"""simple_weather's tool, seed and verify endpoints, and its dataset."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from nemo_gym.base_resources_server import BaseResourcesServerConfig
from resources_servers.simple_weather.app import SimpleWeather


async def test_endpoints() -> None:
    app = SimpleWeather(BaseResourcesServerConfig()).setup_webserver()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
        assert (await client.post("/get_weather", json={"city": "Oslo"})).json() == {
            "city": "Oslo",
            "weather_description": "The weather in Oslo is cold.",
        }
        assert (await client.post("/seed_session", json={"responses_create_params": {}})).json() == {}
        request = {"responses_create_params": {"input": "x"}, "response": {"output": []}, "row_id": 3}
        assert (await client.post("/verify", json=request)).json() == {**request, "reward": 1.0}
        bad = await client.post("/get_weather", json={"town": "Oslo"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "city"


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
