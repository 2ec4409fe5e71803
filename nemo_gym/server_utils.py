"""Names user code imports, as in NeMo Gym: `from nemo_gym.server_utils import ServerClient`."""

from nemo_gym.http.server_client import ServerClient, ServerResponseError, raise_for_status
from nemo_gym.server.base import BaseServer, BaseServerConfig
from nemo_gym.server.sessions import SESSION_ID_KEY

__all__ = [
    "SESSION_ID_KEY",
    "BaseServer",
    "BaseServerConfig",
    "ServerClient",
    "ServerResponseError",
    "raise_for_status",
]
