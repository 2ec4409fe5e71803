"""The `docker` provider: a container per sandbox through the docker CLI."""

from nemo_gym.sandbox.providers.docker.provider import (
    DockerCreateConfig,
    DockerCreateError,
    DockerCreateVerificationError,
    DockerExecConfig,
    DockerProbeConfig,
    DockerProvider,
)

__all__ = [
    "DockerCreateConfig",
    "DockerCreateError",
    "DockerCreateVerificationError",
    "DockerExecConfig",
    "DockerProbeConfig",
    "DockerProvider",
]
