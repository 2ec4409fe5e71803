"""Reading an answer's body as the JSON object it should be, without a parse error escaping."""

from __future__ import annotations

from typing import Any

import orjson


def json_object(content: bytes | str | None) -> dict[str, Any] | None:
    """The body's JSON object; None when it is empty, not JSON, or JSON of another kind (the
    caller says what that means: a 502, a raw copy kept instead)."""
    if not content:
        return None
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
