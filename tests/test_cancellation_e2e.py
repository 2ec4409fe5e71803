"""A caller that goes away cancels the work it asked for, all the way to vLLM: through the
adapter's hot route, and through an agent's FastAPI `/run` and the adapter behind it. The
upstream records when its peer closed the connection (which is how vLLM notices and aborts)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from nemo_gym.testing.processes import ng_run

pytestmark = pytest.mark.e2e
CONFIGS = (
    "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,"
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
ROW = {
    "responses_create_params": {
        "input": [{"role": "user", "content": "What is the weather in Paris?"}],
    }
}


class HoldingUpstream:
    """Answers /health and /v1/models, and holds every POST without answering; notes when the
    peer of a held request closed its connection."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.held = threading.Event()
        self.released: list[float] = []  # monotonic time a held request's connection closed
        self.held_at = 0.0
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        ).result(5)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET"):
                    body = b'{"data":[{"id":"sim-model","object":"model"}]}' if b"/models" in head else b"{}"
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
                    await writer.drain()
                    continue
                self.held_at = time.monotonic()
                self.held.set()
                await reader.read()  # returns b"" once the peer closes the connection
                self.released.append(time.monotonic())
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[HoldingUpstream, object]]:
    upstream = HoldingUpstream()
    upstream.start()
    try:
        with ng_run(
            CONFIGS,
            f"+policy_base_url=http://127.0.0.1:{upstream.port}/v1",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
        ) as run:
            yield upstream, run
    finally:
        upstream.stop()


def post_then_hang_up(url: str, path: str, body: dict, upstream: HoldingUpstream) -> float:
    """Send a request on a raw socket, wait until the upstream holds it, close; return when."""
    upstream.held.clear()
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST %b HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (path.encode(), host.encode(), len(payload), payload)
        )
        assert upstream.held.wait(15), "the request never reached the upstream"
    return time.monotonic()


def released_after(upstream: HoldingUpstream, count: int, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while len(upstream.released) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(upstream.released) == count, "the upstream connection was not closed after the caller left"
    return upstream.released[-1]


def metric(url: str, line_start: str) -> str:
    text = httpx.get(f"{url}/metrics").text
    return next((line for line in text.splitlines() if line.startswith(line_start)), "")


def test_adapter_caller_hang_up_closes_the_upstream_generation(stack) -> None:
    upstream, run = stack
    adapter = run.url_of("policy_model")
    before = len(upstream.released)
    hung_up = post_then_hang_up(adapter, "/v1/responses", {"input": "hi"}, upstream)
    closed = released_after(upstream, before + 1)
    assert closed - hung_up < 2.0
    assert metric(adapter, 'nemo_gym_requests_cancelled_total{route="/v1/responses"}') == (
        'nemo_gym_requests_cancelled_total{route="/v1/responses"} 1.0'
    )


def test_agent_run_hang_up_cancels_the_model_call_and_the_generation(stack) -> None:
    upstream, run = stack
    agent = run.url_of("simple_weather_simple_agent")
    adapter = run.url_of("policy_model")
    before = len(upstream.released)
    hung_up = post_then_hang_up(agent, "/run", ROW, upstream)
    closed = released_after(upstream, before + 1)
    assert closed - hung_up < 2.0
    assert metric(agent, 'nemo_gym_requests_cancelled_total{route="/run"}') == (
        'nemo_gym_requests_cancelled_total{route="/run"} 1.0'
    )
    # The agent's call to the adapter was cancelled too, which the adapter saw as a hang-up.
    assert metric(adapter, 'nemo_gym_requests_cancelled_total{route="/v1/responses"}') == (
        'nemo_gym_requests_cancelled_total{route="/v1/responses"} 2.0'
    )
