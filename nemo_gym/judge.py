"""LLM-as-judge calls whose failure is an outcome of its own, not a wrong answer.

A judge call that fails (connection, timeout, auth, non-2xx, unparseable reply model)
raises ``JudgeError``. ``judge_failsafe`` wraps a ``verify`` endpoint so that such a
failure answers a row with reward 0, ``mask_sample=True`` and failure tags, so the
sample is excluded from metrics and retried on resume, instead of a 500.

Wrap only the call (``call_judge`` or ``reraise_judge_errors``), not the scoring around
it: every exception inside is relabelled as a judge failure.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from nemo_gym.exceptions import NemoGymError

ResponseT = TypeVar("ResponseT", bound=BaseModel)

JUDGE_FAILURE_CLASS = "judge_failed"
_MAX_ERROR_CHARS = 2000


class JudgeError(NemoGymError):
    """A judge call failed (the row is masked and routed to the failures file)."""


async def reraise_judge_errors(coro: Awaitable[Any]) -> Any:
    """Await ``coro``; any exception other than a JudgeError becomes one (type and message kept)."""
    try:
        return await coro
    except JudgeError:
        raise
    except Exception as exc:
        raise JudgeError(f"{type(exc).__name__}: {exc}") from exc


async def call_judge(
    server_client: Any,
    *,
    server_name: str,
    url_path: str,
    json: Any,
    response_model: type[ResponseT],
) -> ResponseT:
    """POST ``json`` to ``url_path`` of model server ``server_name``; parse as ``response_model``.

    The HTTP status is checked before parsing, so an error body reports the HTTP failure
    rather than a validation error.
    """

    async def _call() -> ResponseT:
        from nemo_gym.server_utils import get_response_json, raise_for_status

        response = await server_client.post(server_name=server_name, url_path=url_path, json=json)
        await raise_for_status(response)
        return response_model.model_validate(await get_response_json(response))

    return await reraise_judge_errors(_call())


def _find_body(args: tuple, kwargs: dict) -> Any:
    body = kwargs.get("body")
    if body is not None:
        return body
    for candidate in (*kwargs.values(), *args):
        if hasattr(candidate, "model_dump") and hasattr(candidate, "response"):
            return candidate
    return None


def judge_failsafe(verify_fn: Callable) -> Callable:
    """Decorate ``verify`` so a JudgeError yields a masked zero-reward row instead of an error.

    The signature is preserved (``functools.wraps``) so FastAPI injects the same parameters.
    """

    @functools.wraps(verify_fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = verify_fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except JudgeError as exc:
            body = _find_body(args, kwargs)
            if body is None:
                raise RuntimeError("judge_failsafe: could not locate the verify request body") from exc
            from fastapi.encoders import jsonable_encoder
            from fastapi.responses import JSONResponse

            error = str(exc)[:_MAX_ERROR_CHARS]
            data = body.model_dump()
            instance_config = data.get("instance_config")
            data.update(
                {
                    "reward": 0.0,
                    "mask_sample": True,
                    "failure_kind": JUDGE_FAILURE_CLASS,
                    "failure_reason": error,
                    "instance_config": {
                        **(instance_config if isinstance(instance_config, dict) else {}),
                        "mask_sample": True,
                    },
                    "_ng_failure_class": JUDGE_FAILURE_CLASS,
                    "_ng_failure_judge_error": error,
                }
            )
            return JSONResponse(content=jsonable_encoder(data))

    return wrapper
