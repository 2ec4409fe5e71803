"""A scripted HTTP server on 127.0.0.1 for in-process tests of code that calls other servers.

Tests of agents and judges run the production client (aiohttp through `ServerClient`)
against it, instead of mocking the client: each route answers from a script and every
request is recorded with its body and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from nemo_gym.config import free_port


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-able, or str/bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


Script = Callable[[Call], Answer] | Answer | list[Answer]


class ScriptedServer:
    def __init__(self) -> None:
        self.routes: dict[str, Script] = {}
        self.calls: list[Call] = []
        self.port = 0

    def on(self, path: str, script: Script) -> None:
        self.routes[path] = list(script) if isinstance(script, list) else script

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    @property
    def address(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port}

    async def _handle(self, request: web.Request) -> web.Response:
        call = Call(request.path, {k.lower(): v for k, v in request.headers.items()}, await request.read())
        self.calls.append(call)
        script = self.routes.get(request.path)
        if script is None:
            return web.json_response({"error": {"message": f"no script for {request.path}"}}, status=404)
        if isinstance(script, list):
            if not script:
                return web.json_response(
                    {"error": {"message": f"script for {request.path} ran out"}}, status=500
                )
            answer = script.pop(0)
        elif isinstance(script, Answer):
            answer = script
        else:
            answer = script(call)
        body = answer.body
        if not isinstance(body, str | bytes):
            body = orjson.dumps(body)
            headers = {"content-type": "application/json", **answer.headers}
        else:
            headers = answer.headers
        return web.Response(status=answer.status, body=body, headers=headers)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedServer]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        try:
            yield self
        finally:
            await runner.cleanup()
