"""The one ASGI entry of every server: size limit, caller-disconnect cancellation, metrics, and
dispatch to a hot route or to the FastAPI app.

Hot routes (`FastHandler`s) skip FastAPI/Starlette's middleware and routing, which cost about
a quarter of the adapter's CPU per request (docs/performance.md); everything else goes to the
FastAPI app. Both kinds share what a caller sees: the 413 limit, OpenAI-style errors, the session
cookie (sessions.py) and cancellation.

Cancellation: once the request body is read, a watcher waits for the ASGI `http.disconnect`
message (or, under our uvicorn protocol, its connection-lost hook fires, which costs no task per
request). If the caller goes away before the answer is complete, the handler's task is cancelled
— and with it every upstream call it awaits, whose connections are then closed, so vLLM aborts
the generation instead of filling its KV cache for nobody.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from nemo_gym.exceptions import APIError, InternalError, api_error_for
from nemo_gym.rollout_correlation import ROLLOUT_PATH_START, rollout_context, split_rollout_path
from nemo_gym.server.errors import api_error_payload
from nemo_gym.server.http_protocol import REQUEST_HOOK
from nemo_gym.server.metrics import CONTENT_TYPE, RequestMetrics
from nemo_gym.server.sessions import SessionSigner

logger = logging.getLogger("nemo_gym.server")
FastHandler = Callable[[bytes, str], Awaitable[Any]]  # (raw body, session id) → JSON-able result
_JSON_HEADERS = [(b"content-type", b"application/json")]
_METRICS_HEADERS = [(b"content-type", CONTENT_TYPE.encode())]
_EMPTY_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


@dataclass(slots=True)
class StreamedAnswer:
    """What a hot route returns to stream its answer (SSE) instead of one JSON body."""

    chunks: AsyncIterator[bytes]
    media_type: bytes = b"text/event-stream; charset=utf-8"


class _Exchange:
    """One request's cancellation state, shared by the watcher and the handler; as a context
    manager it also keeps the in-flight gauge and records the answer's metrics, and turns the
    cancellation it caused (the caller hung up) into a 499. (Not an async one: nothing in it
    waits, and the hot path saves two coroutines per request.)"""

    __slots__ = (
        "disconnected",
        "done",
        "gone",
        "hook",
        "metrics",
        "route",
        "scope",
        "started",
        "status",
        "task",
        "watcher",
    )

    def __init__(
        self, scope: dict[str, Any], receive: Any, metrics: RequestMetrics | None, started: float
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.scope = scope
        self.metrics = metrics
        self.started = started
        self.done = False  # the answer went out completely: a disconnect now is the normal end
        self.disconnected = False
        self.gone: asyncio.Event | None = None  # set on disconnect, for the app's own receive()
        self.route = "other"
        self.status = 500
        self.hook = scope.get(REQUEST_HOOK)
        self.watcher: asyncio.Future[None] | None = None
        if self.hook is not None:  # our uvicorn protocol tells us directly
            self.hook.on_disconnect = self.caller_gone
        else:
            self.watcher = asyncio.ensure_future(self.watch(receive))

    async def watch(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        self.caller_gone()

    def caller_gone(self) -> None:
        if self.gone is not None:
            self.gone.set()
        if not self.done:
            self.disconnected = True
            self.task.cancel()

    def answered(self, status: int) -> None:
        """The whole answer is about to go out: a disconnect from now on cancels nothing."""
        self.status = status
        self.done = True
        if self.watcher is not None:
            self.watcher.cancel()

    def __enter__(self) -> _Exchange:
        if self.metrics is not None:
            self.metrics.in_flight += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if self.watcher is not None:
            self.watcher.cancel()
        elif self.hook is not None:
            self.hook.on_disconnect = None
        suppress = self.disconnected and kind is not None and issubclass(kind, asyncio.CancelledError)
        if suppress:
            self.task.uncancel()  # we asked for it: the caller is gone, nothing is left to answer
            self.status = 499  # nginx's "client closed request", for the metrics
            logger.info(
                "%s %s: the caller disconnected; its handler and upstream calls were cancelled",
                self.scope["method"],
                self.scope["path"],
            )
        metrics = self.metrics
        if metrics is not None:
            if suppress:
                metrics.cancelled(self.route)
            metrics.in_flight -= 1
            metrics.observe(self.route, self.status, time.perf_counter() - self.started)
        return suppress


@dataclass(slots=True)
class RequestPath:
    app: Any
    signer: SessionSigner
    routes: dict[str, FastHandler]
    max_body_bytes: int
    metrics: RequestMetrics | None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        handler = self.routes.get(path) if scope["method"] == "POST" else None
        if handler is None and path.startswith(ROLLOUT_PATH_START):
            prefixed = split_rollout_path(path)
            if prefixed is not None and prefixed[1] in self.routes:
                # A hot route under a rollout prefix (NeMo Gym agents send model calls so):
                # served as the bare route, inside the rollout's context.
                rest = prefixed[1]
                with rollout_context(prefixed[0]):
                    await self(dict(scope, path=rest, raw_path=rest.encode()), receive, send)
                return
        if handler is None and path == "/metrics" and self.metrics is not None and scope["method"] == "GET":
            await self._send(send, 200, self.metrics.render(), _METRICS_HEADERS)
            return
        try:
            body = await self._read_body(scope, receive)
        except APIError as exc:
            await self._send(send, exc.status, api_error_payload(exc), _JSON_HEADERS)
            self._observe(path if handler else "other", exc.status, started)
            return
        if body is None:  # gone before the body arrived: nothing to answer
            self._observe(path if handler else "other", 499, started)
            return
        with _Exchange(scope, receive, self.metrics, started) as exchange:
            if handler is None:
                await self._call_app(scope, body, exchange, send)
            else:
                exchange.route = path
                await self._dispatch(handler, body, scope, exchange, send)

    async def _dispatch(
        self, handler: FastHandler, body: bytes, scope: dict[str, Any], exchange: _Exchange, send: Any
    ) -> None:
        """A hot route: the session, the handler, and its answer, error or stream."""
        session_id, headers = self._session(scope)
        try:
            result = await handler(body, session_id)
            status, payload = 200, (None if isinstance(result, StreamedAnswer) else orjson.dumps(result))
        except Exception as exc:
            error = api_error_for(exc)
            if isinstance(error, InternalError):
                logger.exception("unhandled error in POST %s", scope["path"])
            status, payload = error.status, api_error_payload(error)
        if payload is None:
            exchange.status = 200
            await self._stream(send, result, headers, exchange, scope)
            return
        exchange.answered(status)
        hook = exchange.hook
        if hook is None or not hook.answer(status, headers, payload):
            await self._send(send, status, payload, headers)

    def _session(self, scope: dict[str, Any]) -> tuple[str, list[tuple[bytes, bytes]]]:
        """The caller's session id, and the answer's headers: every answer carries the cookie."""
        headers = list(_JSON_HEADERS)
        signer = self.signer
        value = signer.cookie_value(scope["headers"])
        session_id = None if value is None else signer.session_id_of(value)
        if session_id is None:
            session_id, cookie = signer.new_session()
            headers.append(cookie)
        else:
            headers.append(signer.set_cookie_header(value))
        return session_id, headers

    def _observe(self, route: str, status: int, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(route, status, time.perf_counter() - started)

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise APIError(413, f"request body is larger than the limit of {limit} bytes")
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise APIError(413, f"request body is larger than the limit of {limit} bytes")
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _call_app(self, scope: dict[str, Any], body: bytes, exchange: _Exchange, send: Any) -> None:
        gone = exchange.gone = asyncio.Event()
        first: dict[str, Any] | None = (
            {"type": "http.request", "body": body, "more_body": False} if body else _EMPTY_REQUEST
        )

        async def replay() -> dict[str, Any]:
            # The body was read already; after it, the app only ever hears about a disconnect.
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                exchange.done = True
            await send(message)

        try:
            await self.app(scope, replay, send_and_note)
        finally:
            exchange.done = True
            exchange.route = self._route_of(scope)

    @staticmethod
    def _route_of(scope: dict[str, Any]) -> str:
        """The route's template (bounded label values), never the raw path of a 404."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        return template if isinstance(template, str) else "other"

    @staticmethod
    async def _stream(
        send: Any,
        answer: StreamedAnswer,
        headers: list[tuple[bytes, bytes]],
        exchange: _Exchange,
        scope: dict[str, Any],
    ) -> None:
        """Chunks go out as the handler's iterator yields them; the disconnect watcher stays on
        until the last one, so a caller that hangs up mid-stream cancels the upstream too."""
        head = [(b"content-type", answer.media_type), (b"cache-control", b"no-cache"), *headers[1:]]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        chunks = answer.chunks
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:  # the iterator reports its own failures as events; this is a bug in it
            logger.exception("streamed answer of POST %s failed", scope["path"])
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        exchange.done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _send(send: Any, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
