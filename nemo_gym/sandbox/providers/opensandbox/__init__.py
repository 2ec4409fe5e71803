"""`opensandbox`: accepted in config; starting it fails naming what it needs (see ../unavailable.py)."""

from nemo_gym.sandbox.providers.unavailable import OpenSandboxProvider

__all__ = ["OpenSandboxProvider"]
