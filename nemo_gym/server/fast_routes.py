"""Hot JSON endpoints served straight from ASGI, in front of the FastAPI app.

On the adapter's hot path, FastAPI/Starlette's middleware and routing layers cost about a
quarter of the CPU per request (py-spy, see docs/performance.md). Routes registered here
skip them but keep every behaviour a caller sees: the signed session cookie, the body-size
limit (BodyLimitMiddleware wraps this layer), OpenAI-style errors, and one-line 500s with the traceback in the log only. Other
paths (and `lifespan`) go to the FastAPI app unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from nemo_gym.server.errors import APIError, error_body
from nemo_gym.server.sessions import SessionSigner

logger = logging.getLogger("nemo_gym.server")
FastHandler = Callable[[bytes, str], Awaitable[Any]]  # (raw body, session id) → JSON-able result
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastRoutes:
    def __init__(self, app: Any, signer: SessionSigner, routes: dict[str, FastHandler]) -> None:
        self.app = app
        self.signer = signer
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.routes.get(scope["path"])
            if handler is not None:
                await self._serve(handler, scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _read_body(receive: Any) -> bytes:
        """The whole body (the size limit is enforced by BodyLimitMiddleware, which wraps us)."""
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            return body
        chunks = [body]
        while message.get("more_body"):
            message = await receive()
            chunks.append(message.get("body", b""))
        return b"".join(chunks)

    async def _serve(self, handler: FastHandler, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = list(_JSON_HEADERS)
        signer = self.signer
        value = signer.cookie_value(scope["headers"])
        session_id = None if value is None else signer.session_id_of(value)
        if session_id is None:
            session_id, cookie = signer.new_session()
            headers.append(cookie)
        else:
            headers.append(signer.set_cookie_header(value))  # every response carries the cookie
        status = 200
        try:
            body = await self._read_body(receive)
            payload = orjson.dumps(await handler(body, session_id))
        except APIError as exc:
            status = exc.status
            payload = orjson.dumps(
                error_body(exc.message, exc.status, type=exc.type, param=exc.param, code=exc.code)
            )
        except Exception as exc:
            logger.exception("unhandled error in POST %s", scope["path"])
            first_line = (str(exc).splitlines() or [""])[0][:300]
            status = 500
            payload = orjson.dumps(
                error_body(f"Internal server error: {type(exc).__name__}: {first_line}".rstrip(": "), 500)
            )
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
