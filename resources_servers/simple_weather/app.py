"""simple_weather: one tool (`get_weather`) and a verifier that always rewards 1.0.

The smallest complete environment: it exercises the agent's tool loop end to end.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

from nemo_gym.base_resources_server import BaseVerifyRequest, SimpleResourcesServer


class GetWeatherRequest(BaseModel):
    city: str


class SimpleWeather(SimpleResourcesServer):
    def add_tool_routes(self, app: FastAPI) -> None:
        @app.post("/get_weather")
        async def get_weather(body: GetWeatherRequest) -> dict[str, str]:
            return {"city": body.city, "weather_description": f"The weather in {body.city} is cold."}

    async def verify(self, request: Request, body: BaseVerifyRequest) -> dict[str, Any]:
        return {**body.model_dump(), "reward": 1.0}


if __name__ == "__main__":
    SimpleWeather.run_webserver()
