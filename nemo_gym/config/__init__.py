"""Global config: files + env.yaml + overrides → one resolved, validated DictConfig."""

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.instances import (
    SERVER_TYPES,
    ServerInstance,
    assign_ports,
    discover_instances,
    free_port,
)
from nemo_gym.config.loader import PROJECT_ROOT, LoadedConfig, load_config
from nemo_gym.config.redact import REDACTED, redact, secret_values

__all__ = [
    "PROJECT_ROOT",
    "REDACTED",
    "SERVER_TYPES",
    "ConfigError",
    "LoadedConfig",
    "ServerInstance",
    "assign_ports",
    "discover_instances",
    "free_port",
    "load_config",
    "redact",
    "secret_values",
]
