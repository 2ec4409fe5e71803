"""Unknown keys in our own servers' configs are errors, never silently ignored.

A server's config class opts in with `strict_keys = True`. Keys NeMo Gym configs carry only to
describe an environment stay accepted; NeMo Gym keys that a server knowingly does not
implement are accepted only at NeMo Gym's default value (so its stock configs start
unchanged) and otherwise fail with "not supported", naming what to do instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from nemo_gym.config.errors import ConfigError

# Descriptive metadata NeMo Gym configs carry beside the server keys.
DESCRIPTIVE_KEYS = frozenset(
    {
        "name",
        "domain",
        "verified",
        "verified_url",
        "description",
        "datasets",
        "license",
        "value",
        "tags",
        "gitlab_identifier",
        "huggingface_identifier",
    }
)


def known_keys(config_cls: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, field in config_cls.model_fields.items():
        names.add(name)
        if field.alias:
            names.add(field.alias)
    return names


def check_keys(
    config_cls: type[BaseModel],
    values: Mapping[str, Any],
    key_prefix: str,
    source_of: Callable[[str], str | None],
    what: str,
) -> None:
    """Raise ConfigError for the first key `config_cls` does not take (with the closest known one)."""
    known = known_keys(config_cls)
    unsupported: Mapping[str, tuple[Any, str]] = getattr(config_cls, "unsupported_keys", {})
    for key, value in values.items():
        key = str(key)
        if key in known or key in DESCRIPTIVE_KEYS:
            continue
        dotted = f"{key_prefix}.{key}"
        if key in unsupported:
            default, instead = unsupported[key]
            if value == default:
                continue
            raise ConfigError(
                f"is not supported by this {what}; {instead}", key=dotted, source=source_of(dotted)
            )
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(sorted(known))}"
        raise ConfigError(f"is not a key of this {what}{hint}", key=dotted, source=source_of(dotted))
