"""The `isolated` provider: commands confined by Linux namespaces through bubblewrap."""

from nemo_gym.sandbox.providers.isolated.provider import IsolatedProvider

__all__ = ["IsolatedProvider"]
