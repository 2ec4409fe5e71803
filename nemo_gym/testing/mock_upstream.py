"""Routes for a `MockTransport`: what each mocked upstream URL answers, and what it was sent.

    upstreams = MockUpstreams()
    route = upstreams.post("http://up1:8000/v1/chat/completions").respond(200, json={...})
    pool = UpstreamPool(config, network=upstreams.transport)   # or server.pool.network = ...
    ...
    route.calls[0].json(), route.call_count

A route answers with its `side_effect` when it has one (a function of the request, a list
used up one answer per call, or an exception class or instance to raise: a `ConnectionError`
closes the connection unanswered), else with its `respond(...)` answer. A request no route
matches gets a 404 naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from nemo_gym.upstream.transport.mock import MockRequest, MockResponse, MockTransport

SideEffect = Callable[[MockRequest], MockResponse] | list[Any] | BaseException | type[BaseException] | None


class MockRoute:
    def __init__(self, method: str, url: str) -> None:
        self.method = method
        self.url = url
        self.calls: list[MockRequest] = []
        self._response = MockResponse(200, json={})
        self._side_effect: SideEffect = None
        self._queue: Iterator[Any] | None = None

    @property
    def call_count(self) -> int:
        return len(self.calls)

    def respond(self, status: int = 200, **body: Any) -> MockRoute:
        """Answer with this (`json=`, `text=`, `content=`, `headers=`, `stream=`: `MockResponse`'s)."""
        self._response = MockResponse(status, **body)
        return self

    def mock(self, side_effect: SideEffect = None, return_value: MockResponse | None = None) -> MockRoute:
        self._side_effect = side_effect
        self._queue = iter(side_effect) if isinstance(side_effect, list) else None
        if return_value is not None:
            self._response = return_value
        return self

    def answer(self, request: MockRequest) -> MockResponse:
        self.calls.append(request)
        effect: Any = self._side_effect
        if self._queue is not None:
            effect = next(self._queue)
        if isinstance(effect, BaseException) or (
            isinstance(effect, type) and issubclass(effect, BaseException)
        ):
            raise effect
        if callable(effect):
            return effect(request)
        return effect if isinstance(effect, MockResponse) else self._response


class MockUpstreams:
    """Routes by method and URL; `transport` is the `MockTransport` they answer through."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], MockRoute] = {}
        self.transport = MockTransport(self.handle)

    def route(self, method: str, url: str) -> MockRoute:
        """The route of `method url` (the same one when asked again)."""
        key = (method.upper(), url)
        if key not in self.routes:
            self.routes[key] = MockRoute(*key)
        return self.routes[key]

    def post(self, url: str) -> MockRoute:
        return self.route("POST", url)

    def get(self, url: str) -> MockRoute:
        return self.route("GET", url)

    def refuse(self, url: str) -> None:
        """Refuse connections to the origin of `url` from now on (a server that is down)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.transport.refuse(f"{parts.hostname}:{port}")

    def handle(self, request: MockRequest) -> MockResponse:
        route = self.routes.get((request.method, request.url))
        if route is None:
            message = f"no mock route for {request.method} {request.url}"
            return MockResponse(404, json={"error": {"message": message}})
        return route.answer(request)
