"""`apptainer`: accepted in config; starting it fails naming what it needs (see ../unavailable.py)."""

from nemo_gym.sandbox.providers.unavailable import ApptainerProvider

__all__ = ["ApptainerProvider"]
