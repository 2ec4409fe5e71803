"""A pass-through HTTP proxy in front of a real vLLM that records what the adapter sends.

The real-vLLM tier replays the adapter's own recorded request to check that the prompt ids it
reported are the ones vLLM renders for it. `strip_prompt_ids` removes `prompt_token_ids` from
vLLM's chat answers, so the adapter takes the path of an upstream that does not return them
(its /tokenize, which must then be sent exactly the messages the generation rendered).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import ClientSession, web

from nemo_gym.config import free_port


class RecordingProxy:
    def __init__(self, target: str, *, strip_prompt_ids: bool = False) -> None:
        self.target = target.rstrip("/")
        self.strip_prompt_ids = strip_prompt_ids
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []  # the bodies of vLLM's error answers
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def posted(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw = await request.read()
        if request.method == "POST" and raw:
            self.requests.append((request.path, orjson.loads(raw)))
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        async with self._session.request(
            request.method, self.target + request.path_qs, data=raw or None, headers=headers
        ) as upstream:
            body = await upstream.read()
            kind = upstream.headers.get("content-type", "")
            if upstream.status >= 400:
                self.errors.append(body.decode("utf-8", "replace"))
            if self.strip_prompt_ids and request.path.endswith("/chat/completions") and "json" in kind:
                answer = orjson.loads(body)
                answer.pop("prompt_token_ids", None)
                body = orjson.dumps(answer)
            return web.Response(status=upstream.status, body=body, headers={"content-type": kind})

    async def _start(self) -> None:
        self._session = ClientSession()
        app = web.Application(client_max_size=256 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
