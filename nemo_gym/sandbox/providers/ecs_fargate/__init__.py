"""`ecs_fargate`: accepted in config; starting it fails naming what it needs (see ../unavailable.py)."""

from nemo_gym.sandbox.providers.unavailable import EcsFargateProvider

__all__ = ["EcsFargateProvider"]
