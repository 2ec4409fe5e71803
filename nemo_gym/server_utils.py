"""Names user code imports, as in NeMo Gym: `from nemo_gym.server_utils import ServerClient`."""

from __future__ import annotations

from typing import Any

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


# NeMo Gym can prefix model-server paths with a rollout id for its tracing. Our servers have
# no such routes, so rollouts are never prefixed and these leave paths and URLs as they are.
def rollout_path_prefix(rollout_id: str | None, *, token_capture: bool = False) -> str:
    return ""


def apply_rollout_prefix(base_url: str, rollout_id: str | None, *, token_capture: bool = False) -> str:
    return base_url


__all__ = [
    "HEAD_SERVER_KEY_NAME",
    "SESSION_ID_KEY",
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
