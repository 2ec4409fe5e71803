"""simple_weather: one tool (`get_weather`) and a verifier that always rewards 1.0.

The smallest complete environment: it exercises the agent's tool loop end to end, from an
agent's `/run` or from an environment server's episode (whose sessions it keeps by
`resources_session_id`: a seed is idempotent for its episode, and a closed session stays closed).
"""

from __future__ import annotations

from collections import OrderedDict

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, PrivateAttr

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ResourcesCloseSessionRequest,
    ResourcesCloseSessionResponse,
    ResourcesSeedSessionRequest,
    ResourcesSeedSessionResponse,
    SimpleResourcesServer,
)
from nemo_gym.episode_types import EpisodeId, TaskId
from nemo_gym.server.errors import APIError

# Closed session ids remembered (so a late seed cannot revive one); the oldest are forgotten first.
CLOSED_SESSIONS_KEPT = 100_000


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
    _sessions: dict[str, tuple[EpisodeId, TaskId]] = PrivateAttr(default_factory=dict)
    _closed: OrderedDict[str, None] = PrivateAttr(default_factory=OrderedDict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        return app

    async def seed_session(
        self, body: ResourcesSeedSessionRequest | BaseSeedSessionRequest
    ) -> ResourcesSeedSessionResponse | BaseSeedSessionResponse:
        if not isinstance(body, ResourcesSeedSessionRequest):
            return BaseSeedSessionResponse()
        session_id = body.resources_session_id
        if session_id in self._closed:
            raise APIError(409, f"resources session {session_id!r} is already closed")
        bound = self._sessions.setdefault(session_id, (body.episode_id, body.task_id))
        if bound != (body.episode_id, body.task_id):
            raise APIError(409, f"resources session {session_id!r} is bound to another episode or task")
        return ResourcesSeedSessionResponse(resources_session_id=session_id)

    async def close_resources_session(
        self, body: ResourcesCloseSessionRequest
    ) -> ResourcesCloseSessionResponse:
        session_id = body.resources_session_id
        bound = self._sessions.get(session_id)
        if bound is not None and bound[0] != body.episode_id:
            raise APIError(409, f"resources session {session_id!r} belongs to another episode")
        self._sessions.pop(session_id, None)
        self._closed[session_id] = None
        if len(self._closed) > CLOSED_SESSIONS_KEPT:
            self._closed.popitem(last=False)
        return ResourcesCloseSessionResponse(resources_session_id=session_id)

    async def get_weather(self, body: GetWeatherRequest) -> GetWeatherResponse:
        return GetWeatherResponse(city=body.city, weather_description=f"The weather in {body.city} is cold.")

    async def verify(self, body: WeatherVerifyRequest) -> WeatherVerifyResponse:
        # The body was validated on the way in; building the answer from its fields skips a
        # second validation of the whole rollout.
        return WeatherVerifyResponse.model_construct(**dict(body), reward=1.0)


if __name__ == "__main__":
    SimpleWeather.run_webserver()
