"""Helpers for providers' nested config sections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from nemo_gym.sandbox.providers.base import did_you_mean

C = TypeVar("C")


def coerce_config(value: Any, config_cls: type[C], section: str = "") -> C:
    """A config section from YAML (a mapping), an instance, or None (defaults). An unknown key
    fails with the closest known one."""
    if value is None:
        return config_cls()
    if isinstance(value, config_cls):
        return value
    if isinstance(value, Mapping):
        if is_dataclass(config_cls):
            known = [f.name for f in fields(config_cls)]
            for key in value:
                if key not in known:
                    where = f" of {section}" if section else ""
                    raise ValueError(f"{key!r} is not a key{where}{did_you_mean(str(key), known)}")
        return config_cls(**dict(value))
    raise TypeError(f"{section or config_cls.__name__} must be a mapping, got {type(value).__name__}")
