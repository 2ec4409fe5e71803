"""Which rollout a request belongs to, as NeMo Gym environments ask it.

NeMo Gym names a rollout by an id (explicit `_ng_rollout_id`, else `<task>-<rollout>`, plus
`-a<n>` for a re-dispatched attempt) and lets a request carry it as a path prefix
`/ng-rollout/<id>/...`, so a server deep in the call chain can tell which rollout it serves
without the id being threaded through every signature. Environments import these names (the
gymnasium base installs the middleware), so they exist here with the same behaviour.

NeMo Gym agents built on our base add the prefix to their model calls when the run correlates
rollouts (`observability_enabled`); our servers' hot routes and resources servers accept it.
Our own simple_agent and collector never add it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

from nemo_gym.config_types import ROLLOUT_PATH_PREFIX, TOKEN_CAPTURE_PATH_SEGMENT
from nemo_gym.global_config import (
    ATTEMPT_INDEX_KEY_NAME,
    ROLLOUT_ID_KEY_NAME,
    ROLLOUT_INDEX_KEY_NAME,
    TASK_INDEX_KEY_NAME,
)

# The id is one URL path segment and also a file-name component in NeMo Gym's stores, hence
# no slashes and no leading dot.
_ID_CHARS = r"[A-Za-z0-9][A-Za-z0-9._-]*"
ROLLOUT_ID_PATTERN = re.compile(rf"^{_ID_CHARS}$")

_current: ContextVar[str | None] = ContextVar("nemo_gym_current_rollout_id", default=None)


def _lookup(body: BaseModel | Mapping[str, Any], key: str) -> Any:
    if isinstance(body, Mapping):
        return body.get(key)
    if key == ROLLOUT_ID_KEY_NAME:
        # BaseRunRequest keeps `_ng_rollout_id` under a python-safe attribute name.
        value = getattr(body, "capture_rollout_id", None)
        if value is not None:
            return value
    value = getattr(body, key, None)
    if value is None and body.model_extra:
        value = body.model_extra.get(key)
    return value


def maybe_rollout_id_from_run_body(body: BaseModel | Mapping[str, Any] | None) -> str | None:
    """The rollout id a `/run` body names, or None when it names none.

    An explicit id is used verbatim, so a malformed one is an error rather than silently
    rewritten into an id the caller would not recognise.
    """
    if not isinstance(body, BaseModel | Mapping):
        return None
    explicit = _lookup(body, ROLLOUT_ID_KEY_NAME)
    if explicit is not None:
        if not isinstance(explicit, str) or not ROLLOUT_ID_PATTERN.match(explicit):
            raise ValueError(
                f"{ROLLOUT_ID_KEY_NAME} must be one path segment of letters, digits, '.', '_' or '-' "
                f"that starts with a letter or digit, not {explicit!r}"
            )
        rollout_id = explicit
    else:
        task, rollout = _lookup(body, TASK_INDEX_KEY_NAME), _lookup(body, ROLLOUT_INDEX_KEY_NAME)
        if task is None or rollout is None:
            return None
        rollout_id = f"{task}-{rollout}"
    attempt = _lookup(body, ATTEMPT_INDEX_KEY_NAME)
    if attempt is not None and int(attempt) > 0:
        rollout_id += f"-a{int(attempt)}"
    return rollout_id


def current_rollout_id() -> str | None:
    """The id of the rollout the running task serves (None outside `rollout_context`)."""
    return _current.get()


@contextmanager
def rollout_context(rollout_id: str | None) -> Iterator[None]:
    """Make `current_rollout_id()` return `rollout_id` inside the block (nesting restores)."""
    token = _current.set(rollout_id)
    try:
        yield
    finally:
        _current.reset(token)


ROLLOUT_PATH_START = f"/{ROLLOUT_PATH_PREFIX}/"
_PREFIXED = re.compile(
    rf"^/{re.escape(ROLLOUT_PATH_PREFIX)}/(?P<id>{_ID_CHARS})(?:/{re.escape(TOKEN_CAPTURE_PATH_SEGMENT)})?(?P<rest>/.*)$"
)


def split_rollout_path(path: str) -> tuple[str, str] | None:
    """(rollout id, the path without the prefix) of `/ng-rollout/<id>[/training-token-capture]/<rest>`."""
    if not path.startswith(ROLLOUT_PATH_START):
        return None
    found = _PREFIXED.match(path)
    return (found.group("id"), found.group("rest")) if found else None


class RolloutContextMiddleware:
    """ASGI middleware: `/ng-rollout/<id>/<rest>` is served as `/<rest>` inside `rollout_context(<id>)`.

    Routes stay written without the prefix; any other path passes through untouched.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = split_rollout_path(scope.get("path", "")) if scope.get("type") == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        rollout_id, rest = found
        inner = dict(scope, path=rest, raw_path=rest.encode())
        with rollout_context(rollout_id):
            await self.app(inner, receive, send)


__all__ = [
    "ROLLOUT_ID_PATTERN",
    "ROLLOUT_PATH_START",
    "split_rollout_path",
    "RolloutContextMiddleware",
    "current_rollout_id",
    "maybe_rollout_id_from_run_body",
    "rollout_context",
]
