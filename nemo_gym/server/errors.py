"""OpenAI-style error bodies for every 4xx/5xx a server returns.

Callers (the openai SDK, agents, rollout collectors) parse `{"error": {...}}`; a bare
FastAPI `{"detail": ...}` or an HTML traceback would break them, so every path that can
fail ends up here.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nemo_gym.exceptions import APIError, InternalError, NemoGymError, api_error_for

logger = logging.getLogger("nemo_gym.server")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    message: str, status: int, *, type: str | None = None, param: str | None = None, code: Any = None
) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": type or error_type_for(status), "param": param, "code": code}
    }


def error_response(
    message: str, status: int, *, type: str | None = None, param: str | None = None, code: Any = None
) -> Response:
    body = error_body(message, status, type=type, param=param, code=code)
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def api_error_payload(exc: APIError) -> bytes:
    return orjson.dumps(error_body(exc.message, exc.status, type=exc.type, param=exc.param, code=exc.code))


def api_error_response(exc: APIError) -> Response:
    return Response(api_error_payload(exc), status_code=exc.status, media_type="application/json")


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body", None
    first = errors[0]
    param = _loc_to_param(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return "Request body is not valid JSON", None
    msg = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    where = f"'{param}'" if param else "request body"
    return f"Invalid {where}: {msg}{more}", param


def install_error_handlers(app: FastAPI, validation_status: int = 400) -> None:
    """OpenAI-style bodies for every error; a body that fails validation answers
    `validation_status` (400 as OpenAI answers; NeMo Gym's resources servers and agents answer 422)."""

    async def on_nemo_gym_error(request: Request, exc: NemoGymError) -> Response:
        error = api_error_for(exc)
        if isinstance(error, InternalError):
            logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return api_error_response(error)

    async def on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc)
        return error_response(message, validation_status, param=param)

    async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, APIError):  # FastAPI wraps errors raised while reading the body
            return api_error_response(exc.__cause__)
        message = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
        return error_response(message, exc.status_code)

    async def on_unhandled(_: Request, exc: Exception) -> Response:
        # The traceback is logged by uvicorn (Starlette re-raises after this handler).
        return api_error_response(api_error_for(exc))

    app.add_exception_handler(NemoGymError, on_nemo_gym_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unhandled)
