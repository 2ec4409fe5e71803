"""Hydra-style command-line overrides (`+a.b=c`, `key=[x,y]`) turned into a plain dict.

We reuse Hydra's own grammar so quoting, lists and dicts behave exactly as NeMo Gym
users expect, but we do not run Hydra's app machinery (no output dirs, no sweeps).
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException

from nemo_gym.config.errors import ConfigError

_PARSER: OverridesParser | None = None


def _parser() -> OverridesParser:
    global _PARSER
    if _PARSER is None:
        _PARSER = OverridesParser.create()
    return _PARSER


def _plain(value: Any) -> Any:
    """Hydra returns its own list/dict types for nested values; make them builtins."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse `+a.b=c` style args into a nested dict (later args win)."""
    result: dict[str, Any] = {}
    for arg in args:
        try:
            (override,) = _parser().parse_overrides([arg])
        except HydraException as exc:
            first_line = str(exc).splitlines()[0]
            raise ConfigError(f"cannot parse override {arg!r}: {first_line}", source="command line") from None
        if override.is_delete():
            raise ConfigError(f"deleting keys ({arg!r}) is not supported", source="command line")
        if isinstance(override.value(), ChoiceSweep):
            # `+base_url=a,b` is a Hydra sweep; we are not a multirun tool, so keep the
            # text and let the comma-list rule turn it into a list where it applies.
            value: Any = arg.split("=", 1)[1]
        else:
            value = _plain(override.value())
        _set_dotted(result, override.key_or_group, value)
    return result


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = target
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value
