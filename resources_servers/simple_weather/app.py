"""simple_weather: one tool (`get_weather`) and a verifier that always rewards 1.0.

The smallest complete environment: it exercises the agent's tool loop end to end.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class SimpleWeatherConfig(BaseResourcesServerConfig):
    pass


class GetWeatherRequest(BaseModel):
    city: str


class GetWeatherResponse(BaseModel):
    city: str
    weather_description: str


class WeatherVerifyRequest(BaseVerifyRequest):
    """The row's own fields come back in the verify answer (rollout files keep them)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class WeatherVerifyResponse(BaseVerifyResponse):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class SimpleWeather(SimpleResourcesServer):
    config: SimpleWeatherConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        return app

    async def get_weather(self, body: GetWeatherRequest) -> GetWeatherResponse:
        return GetWeatherResponse(city=body.city, weather_description=f"The weather in {body.city} is cold.")

    async def verify(self, body: WeatherVerifyRequest) -> WeatherVerifyResponse:
        # The body was validated on the way in; building the answer from its fields skips a
        # second validation of the whole rollout.
        return WeatherVerifyResponse.model_construct(**dict(body), reward=1.0)


if __name__ == "__main__":
    SimpleWeather.run_webserver()
