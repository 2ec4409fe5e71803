"""`e2b`: accepted in config; starting it fails naming what it needs (see ../unavailable.py)."""

from nemo_gym.sandbox.providers.unavailable import E2BProvider

__all__ = ["E2BProvider"]
