"""A tiny server for runtime tests: echoes its session id and can call a peer by name."""

from __future__ import annotations

from fastapi import FastAPI, Request
from pydantic import BaseModel

from nemo_gym.server.base import BaseServerConfig, SimpleServer
from nemo_gym.server.errors import APIError
from nemo_gym.server_utils import SESSION_ID_KEY


class EchoConfig(BaseServerConfig):
    greeting: str = "hello"
    api_key: str | None = None


class EchoBody(BaseModel):
    text: str
    times: int = 1


class EchoServer(SimpleServer):
    config: EchoConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()

        @app.post("/echo")
        async def echo(request: Request, body: EchoBody) -> dict:
            return {
                "greeting": self.config.greeting,
                "text": body.text * body.times,
                "session_id": request.session[SESSION_ID_KEY],
                "instance": self.instance_name,
            }

        @app.post("/call_peer")
        async def call_peer(request: Request) -> dict:
            data = await request.json()
            response = await self.server_client.post(data["peer"], "/echo", json={"text": data["text"]})
            return {"peer_answer": await response.json()}

        @app.get("/fail")
        async def fail() -> dict:
            raise RuntimeError("boom\nsecond line")

        @app.get("/teapot")
        async def teapot() -> dict:
            raise APIError(418, "I am a teapot", param="pot")

        return app


if __name__ == "__main__":
    EchoServer.run_webserver()
