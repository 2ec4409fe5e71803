"""Names user code imports, as in NeMo Gym: `from nemo_gym.server_utils import ServerClient`."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.config_types import ROLLOUT_PATH_PREFIX, TOKEN_CAPTURE_PATH_SEGMENT
from nemo_gym.global_config import HEAD_SERVER_KEY_NAME
from nemo_gym.http.server_client import (
    ServerClient,
    ServerResponseError,
    get_response_json,
    raise_for_status,
    request,
)
from nemo_gym.server.base import BaseServer, BaseServerConfig, SimpleServer
from nemo_gym.server.sessions import SESSION_ID_KEY

# uvicorn workers re-import an entrypoint by path in NeMo Gym; ours rebuild the server
# from an app factory (nemo_gym.server.worker_app), so no module is ever such an entrypoint.
IS_NEMO_GYM_FASTAPI_ENTRYPOINT_KEY_NAME = "IS_NEMO_GYM_FASTAPI_ENTRYPOINT"


def is_nemo_gym_fastapi_entrypoint(file: str) -> bool:
    return False


def get_first_server_config_dict(global_config_dict: Any, server_name: str) -> Any:
    from nemo_gym.global_config import get_first_server_config_dict as first

    return first(global_config_dict, server_name)


def get_server_url(server_name: str) -> str:
    """`http://host:port` of a server instance of the running config."""
    from nemo_gym.global_config import get_global_config_dict

    server = get_first_server_config_dict(get_global_config_dict(), server_name)
    return f"http://{server.host}:{server.port}"


def rollout_path_prefix(rollout_id: str | None, *, token_capture: bool = False) -> str:
    """`/ng-rollout/<id>` (`/training-token-capture` appended for token capture), or "" without an id.

    A model server serves a prefixed path as the bare route inside the rollout's context.
    """
    if not rollout_id:
        return ""
    return f"/{ROLLOUT_PATH_PREFIX}/{rollout_id}" + (
        f"/{TOKEN_CAPTURE_PATH_SEGMENT}" if token_capture else ""
    )


def apply_rollout_prefix(base_url: str, rollout_id: str | None, *, token_capture: bool = False) -> str:
    """A model server's root URL with the rollout prefix (unchanged without an id)."""
    if not rollout_id:
        return base_url
    return base_url.rstrip("/") + rollout_path_prefix(rollout_id, token_capture=token_capture)


class GlobalAIOHTTPAsyncClientConfig(BaseModel):
    """The global keys that size a process's own aiohttp session (NeMo Gym's names; 0 = no limit)."""

    model_config = ConfigDict(extra="ignore")

    global_aiohttp_connector_limit: int = Field(default=100 * 1024, ge=0)
    global_aiohttp_connector_limit_per_host: int = Field(default=1024, ge=0)
    global_aiohttp_intended_concurrency: int | None = Field(default=None, gt=0)
    global_aiohttp_intended_concurrency_per_host: int | None = Field(default=None, gt=0)
    # Log each request an agent makes through this session (agents check the flag themselves).
    global_aiohttp_client_request_debug: bool = False


# The session `set_global_aiohttp_client` made, for code that asks for one by these names.
_GLOBAL_AIOHTTP_CLIENT: aiohttp.ClientSession | None = None
_GLOBAL_AIOHTTP_CLIENT_REQUEST_DEBUG = False


def set_global_aiohttp_client(cfg: GlobalAIOHTTPAsyncClientConfig) -> aiohttp.ClientSession:
    """Create this process's global aiohttp session (once; `global_aiohttp_client_exit` to redo)."""
    global _GLOBAL_AIOHTTP_CLIENT, _GLOBAL_AIOHTTP_CLIENT_REQUEST_DEBUG
    if _GLOBAL_AIOHTTP_CLIENT is not None:
        raise RuntimeError("a global aiohttp client already exists; call global_aiohttp_client_exit() first")
    connector = aiohttp.TCPConnector(
        limit=cfg.global_aiohttp_connector_limit,
        limit_per_host=cfg.global_aiohttp_connector_limit_per_host,
        keepalive_timeout=15.0,
    )
    _GLOBAL_AIOHTTP_CLIENT = aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None)
    )
    _GLOBAL_AIOHTTP_CLIENT_REQUEST_DEBUG = cfg.global_aiohttp_client_request_debug
    return _GLOBAL_AIOHTTP_CLIENT


def is_global_aiohttp_client_setup() -> bool:
    return _GLOBAL_AIOHTTP_CLIENT is not None


def is_global_aiohttp_client_request_debug_enabled() -> bool:
    return _GLOBAL_AIOHTTP_CLIENT_REQUEST_DEBUG


async def global_aiohttp_client_aclose() -> None:
    """Close and forget the global session (inside the loop that uses it)."""
    global _GLOBAL_AIOHTTP_CLIENT
    session, _GLOBAL_AIOHTTP_CLIENT = _GLOBAL_AIOHTTP_CLIENT, None
    if session is not None and not session.closed:
        await session.close()


def global_aiohttp_client_exit() -> None:
    """Forget the global session, closing it when no event loop is running."""
    import asyncio

    global _GLOBAL_AIOHTTP_CLIENT
    session = _GLOBAL_AIOHTTP_CLIENT
    if session is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if not session.closed:
            asyncio.run(session.close())
    _GLOBAL_AIOHTTP_CLIENT = None


__all__ = [
    "HEAD_SERVER_KEY_NAME",
    "SESSION_ID_KEY",
    "GlobalAIOHTTPAsyncClientConfig",
    "global_aiohttp_client_aclose",
    "global_aiohttp_client_exit",
    "is_global_aiohttp_client_request_debug_enabled",
    "is_global_aiohttp_client_setup",
    "set_global_aiohttp_client",
    "BaseServer",
    "BaseServerConfig",
    "ServerClient",
    "ServerResponseError",
    "SimpleServer",
    "apply_rollout_prefix",
    "get_server_url",
    "rollout_path_prefix",
    "get_first_server_config_dict",
    "get_response_json",
    "is_nemo_gym_fastapi_entrypoint",
    "raise_for_status",
    "request",
]
