"""The `local` provider: commands run as host processes, without isolation."""

from nemo_gym.sandbox.providers.local.provider import LocalProvider

__all__ = ["LocalProvider"]
