"""The keys every command shares, as pydantic models: one source for validation and `--help`.

They live with the config, not the CLI, because `RunHelper` (used in-process by trainers)
validates the same keys as the `ng_run` command that wraps it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.global_keys import GLOBAL_KEY_NAMES, HeadServerKeys


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


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: how many one-character edits turn `a` into `b`."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def near_miss(name: str, known: Iterable[str]) -> str | None:
    """The known key `name` is a typo of: at most one edit away (two for names of 8+ characters)."""
    budget = 2 if len(name) >= 8 else 1
    best = min(((edit_distance(name, k), k) for k in set(known)), default=None)
    if best is not None and 0 < best[0] <= budget:
        return best[1]
    return None


def check_top_level_keys(
    names: Iterable[str], command_keys: Iterable[str], allowed: Iterable[str], *, owner: str, source: str
) -> None:
    """Refuse a top-level name that is a typo of a known key and that nothing defines or references.

    Every other unknown top-level name is a variable for `${…}` interpolation, as in NeMo Gym, so a
    trainer's or a user's own keys pass; a near miss of a real key would otherwise run silently
    with that key's default.
    """
    known = set(command_keys) | GLOBAL_KEY_NAMES
    allowed = set(allowed) | known
    for name in names:
        if name in allowed:
            continue
        guess = near_miss(name, known)
        if guess is not None:
            raise ConfigError(f"is not a key of {owner}; did you mean `{guess}`?", key=name, source=source)
