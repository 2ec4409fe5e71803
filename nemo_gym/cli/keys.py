"""Each command's own keys as a pydantic model: one source for validation, suggestions and `--help`.

A misspelt flag (`+concurency=8`) that were silently ignored would run with the default and could
clear an output the user meant to resume, so an unknown key is refused before anything happens.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticUndefined

from nemo_gym.config import SERVER_TYPES, ConfigError
from nemo_gym.config.loader import COMMAND_LINE, config_defined_names
from nemo_gym.config.overrides import parse_overrides

HELP_FLAGS = ("-h", "--help")


class HeadServerKeys(BaseModel):
    """Where the head server listens; every command that talks to a running ng_run needs it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Head server host.")
    port: int = Field(11000, description="Head server port.")


class CommandKeys(BaseModel):
    """Keys every command accepts."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    help: bool = Field(False, description="Print this command's keys and exit (also -h, --help, +h=true).")
    h: bool = Field(False, description="Same as help.")


class ConfigCommandKeys(CommandKeys):
    """Keys of commands that build the global config from files, env.yaml and overrides."""

    config_paths: list[str] = Field(
        default_factory=list, description="Config YAML files to merge, lowest priority first."
    )
    head_server: HeadServerKeys = Field(
        default_factory=HeadServerKeys, description="Head server address (host, port)."
    )
    default_host: str | None = Field(None, description="Host for server instances that set none.")


def key_names(model: type[BaseModel]) -> list[str]:
    """The names a user types for the model's keys (a field's alias when it has one)."""
    return [field.alias or name for name, field in model.model_fields.items()]


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
    """Refuse any top-level command-line key that is neither the command's nor the config's own.

    With `config_names`, names the config files and env.yaml define or interpolate (server
    instances, `policy_base_url`, …) are legitimate overrides too. Returns the parsed overrides.
    """
    overrides = parse_overrides([a for a in args if a not in HELP_FLAGS])
    known = set(key_names(model))
    allowed = set(known)
    if config_names:
        defined = config_defined_names(args)
        if defined is None:
            return overrides
        allowed |= defined
    for name, value in overrides.items():
        if name not in allowed and not _is_instance(value):
            raise unknown_key_error(command, name, known)
    return overrides


def _is_instance(value: Any) -> bool:
    """A server instance given entirely on the command line (`+name.resources_servers.impl...`)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SERVER_TYPES


def validate_keys(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """The command's keys as a typed model; a wrong type is a config error naming the key."""
    names = set(key_names(model)) | set(model.model_fields)
    mine = {k: v for k, v in values.items() if k in names}
    try:
        return model.model_validate(mine)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{first['msg']} (got {first.get('input')!r})", key=key, source=COMMAND_LINE
        ) from None
