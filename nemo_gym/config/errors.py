"""Config errors that always say which key and which file are at fault."""

from __future__ import annotations

from nemo_gym.exceptions import NemoGymError


class ConfigError(NemoGymError):
    """A config problem a user must fix before anything starts.

    The message names the dotted key and the file (or "command line" / "env.yaml")
    that set it, because with nested `config_paths` the user otherwise has to hunt.
    """

    def __init__(self, message: str, key: str | None = None, source: str | None = None) -> None:
        parts = []
        if key:
            parts.append(f"config key '{key}'")
        if source:
            parts.append(f"(from {source})")
        prefix = " ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.key = key
        self.source = source
