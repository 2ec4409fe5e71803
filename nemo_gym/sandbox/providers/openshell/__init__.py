"""`openshell`: accepted in config; starting it fails naming what it needs (see ../unavailable.py)."""

from nemo_gym.sandbox.providers.unavailable import OpenShellProvider

__all__ = ["OpenShellProvider"]
