"""Each command's own keys as a pydantic model: one source for validation, suggestions and `--help`.

A misspelt flag (`+concurency=8`) that were silently ignored would run with the default and could
clear an output the user meant to resume, so an unknown key is refused before anything happens.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from nemo_gym.config import SERVER_TYPES, ConfigError
from nemo_gym.config.command_keys import (
    CommandKeys,
    ConfigCommandKeys,
    HeadServerKeys,
    check_top_level_keys,
    key_names,
)
from nemo_gym.config.loader import COMMAND_LINE, config_defined_names
from nemo_gym.config.overrides import parse_overrides

HELP_FLAGS = ("-h", "--help")
KeysT = TypeVar("KeysT", bound=BaseModel)
__all__ = ["CommandKeys", "ConfigCommandKeys", "HeadServerKeys", "check_top_level_keys", "key_names"]


def wants_help(args: list[str]) -> bool:
    """`-h`, `--help`, `+help=true` or `+h=true` anywhere on the line."""
    if any(a in HELP_FLAGS for a in args):
        return True
    for arg in args:
        name, _, value = arg.lstrip("+").partition("=")
        if name in ("help", "h") and value.strip().lower() in ("", "true", "1", "yes"):
            return True
    return False


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return f"default {value!r}"


def render_help(command: str, summary: str, model: type[BaseModel]) -> str:
    """The `--help` text: usage, then each key with its type, default and description."""
    lines = [f"{command}: {summary}", "", f"usage: {command} [+key=value ...]", "", "keys:"]
    for name, field in model.model_fields.items():
        name = field.alias or name
        lines.append(f"  +{name}  ({_type_name(field.annotation)}, {_default_text(field)})")
        if field.description:
            lines.append(f"      {field.description}")
    return "\n".join(lines)


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known key a typo most likely meant, if any is close enough."""
    matches = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_error(command: str, name: str, known: Iterable[str]) -> ConfigError:
    guess = closest(name, known)
    hint = f"; did you mean `{guess}`?" if guess else f" (run {command} --help for its keys)"
    return ConfigError(f"is not a key of {command}{hint}", key=name, source=COMMAND_LINE)


def check_command_line(
    command: str, model: type[BaseModel], args: list[str], *, config_names: bool = True
) -> dict[str, Any]:
    """Refuse a misspelt command-line key (a near miss of the command's or a global key).

    With `config_names`, every name the config files and env.yaml define or interpolate (server
    instances, `policy_base_url`, …) is legitimate. Other unknown names are config variables.
    Commands that take no config (`config_names=False`) accept only their own keys. Returns the
    parsed overrides.
    """
    overrides = parse_overrides([a for a in args if a not in HELP_FLAGS])
    known = set(key_names(model))
    if not config_names:
        for name in overrides:
            if name not in known:
                raise unknown_key_error(command, name, known)
        return overrides
    defined = config_defined_names(args)
    if defined is None:
        return overrides
    names = [n for n, v in overrides.items() if not _is_instance(v)]
    check_top_level_keys(names, known, defined, owner=command, source=COMMAND_LINE)
    return overrides


def _is_instance(value: Any) -> bool:
    """A server instance given entirely on the command line (`+name.resources_servers.impl...`)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SERVER_TYPES


def validate_keys(model: type[KeysT], values: dict[str, Any]) -> KeysT:
    """The command's keys as a typed model; a wrong type or a missing required key is a config error
    naming the key."""
    names = set(key_names(model)) | set(model.model_fields)
    mine = {k: v for k, v in values.items() if k in names}
    try:
        return model.model_validate(mine)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "missing":
            raise ConfigError(f"is required (+{key}=...)", key=key, source=COMMAND_LINE) from None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{message} (got {first.get('input')!r})", key=key, source=COMMAND_LINE) from None


def read_keys(command: str, model: type[KeysT], args: list[str], *, config_names: bool = True) -> KeysT:
    """A command's keys from its command line: unknown names refused (see `check_command_line`),
    then validated into `model`."""
    return validate_keys(model, check_command_line(command, model, args, config_names=config_names))
