"""Fast JSON request/response helpers for hot-path handlers (orjson, no pydantic round trip)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from nemo_gym.server.errors import APIError


async def read_json_object(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, f"Request body must be a JSON object, not {type(data).__name__}")
    return data


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")
