"""A hot route that streams (SSE) through the one request path, on a real uvicorn: chunks reach
the caller as they are produced, with the session cookie; a caller hanging up mid-stream
cancels the producer, and it is counted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from nemo_gym.server.base import BaseServerConfig, SimpleServer
from nemo_gym.server.context import RuntimeContext
from nemo_gym.server.http_protocol import PROTOCOL_PATH
from nemo_gym.server.request_path import FastHandler, StreamedAnswer


class Streamer(SimpleServer):
    config: BaseServerConfig
    produced: list[int] = []
    stopped: list[str] = []

    def fast_routes(self) -> dict[str, FastHandler]:
        async def events(body: bytes, session_id: str) -> StreamedAnswer:
            async def chunks() -> AsyncIterator[bytes]:
                try:
                    for i in range(int(body or b"5")):
                        self.produced.append(i)
                        yield b"data: %d\n\n" % i
                        await asyncio.sleep(0.1)
                    self.stopped.append("finished")
                except asyncio.CancelledError:
                    self.stopped.append("cancelled")
                    raise

            return StreamedAnswer(chunks())

        return {"/events": events}


@pytest.fixture(params=[PROTOCOL_PATH, "httptools"], ids=["hook", "watcher"])
async def streamer(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Streamer, str]]:
    """Under our protocol the disconnect hook fires; under uvicorn's own, the watcher task hears it."""
    context = RuntimeContext(global_config={}, origins={}, instance_name="s", session_secret="k")
    server = Streamer(config=BaseServerConfig(), produced=[], stopped=[]).bind_context(context)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        server.build_asgi(), http=request.param, log_config=None, access_log=False, lifespan="off"
    )
    srv = uvicorn.Server(config)
    task = asyncio.ensure_future(srv.serve(sockets=[sock]))
    for _ in range(500):
        if srv.started:
            break
        await asyncio.sleep(0.01)
    yield server, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    await task


async def test_chunks_arrive_as_produced(streamer) -> None:
    server, url = streamer
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient() as client:
        started = loop.time()
        async with client.stream("POST", f"{url}/events", content=b"3") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["set-cookie"].startswith("Streamer___s=")
            seen = []
            async for chunk in response.aiter_raw():
                seen.append((chunk, loop.time() - started))
    assert b"".join(c for c, _ in seen) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert seen[0][1] < 0.09  # the first event before the producer slept
    assert server.stopped == ["finished"]


async def test_hanging_up_mid_stream_cancels_the_producer(streamer) -> None:
    server, url = streamer
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", f"{url}/events", content=b"50") as response:
            async for _ in response.aiter_raw():
                break
    for _ in range(100):
        if server.stopped:
            break
        await asyncio.sleep(0.02)
    assert server.stopped == ["cancelled"]
    assert len(server.produced) < 10
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    assert 'nemo_gym_requests_cancelled_total{route="/events"} 1.0' in text.splitlines()
