"""Build the one global config from config files, env.yaml and the command line.

Priority (lowest first): every YAML in `config_paths` (included files before the file
that includes them), then `env.yaml`, then command-line overrides. We merge plain dicts
ourselves so we can remember which file set each key: every config error names both.

A relative `config_paths` entry is looked for, in order, under the including file's folder
(for nested entries), the roots in `NEMO_GYM_EXTRA_ROOTS`, the working directory and this
checkout, as NeMo Gym looks for it. A config that is an environment bundle's (a `manifest.yaml`
beside it names it) has its manifest validated as it loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    InterpolationKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.inheritance import apply_composition
from nemo_gym.config.overrides import parse_overrides
from nemo_gym.paths import component_package_roots, extra_roots

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESERVED_KEYS = ("config_paths", "head_server", "default_host")
DEFAULT_HEAD_SERVER = {"host": "127.0.0.1", "port": 11000}
ENV_YAML_VAR = "NEMO_GYM_ENV_YAML"
COMMAND_LINE = "command line"


@dataclass
class LoadedConfig:
    """The resolved global config plus where each key came from."""

    config: DictConfig
    origins: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def source_of(self, dotted_key: str) -> str | None:
        return source_of(self.origins, dotted_key)


def source_of(origins: dict[str, str], dotted_key: str) -> str | None:
    """The file that set this key, or the nearest parent key's file."""
    key = dotted_key
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return None


def _read_yaml(path: Path, source: str) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", source=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping at the top level, not {type(data).__name__}", source=str(path)
        )
    return data


def _resolve_path(raw: str, base_dirs: list[Path]) -> Path:
    path = Path(os.path.expanduser(raw))
    if path.is_absolute():
        return path
    for base in base_dirs:
        candidate = base / path
        if candidate.exists():
            return candidate.resolve()
    return (base_dirs[0] / path).resolve()


def _as_path_list(value: Any, key: str, source: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError("must be a list of YAML file paths", key=key, source=source)


def _merge(
    into: dict[str, Any], new: dict[str, Any], source: str, origins: dict[str, str], prefix: str = ""
) -> None:
    """Deep-merge `new` into `into`, recording `source` for every key it sets."""
    for key, value in new.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        origins[dotted] = source
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, origins, dotted + ".")
        else:
            into[key] = _copy(value)
            if isinstance(value, dict):
                _record(value, source, origins, dotted + ".")


def _record(value: dict[str, Any], source: str, origins: dict[str, str], prefix: str) -> None:
    for key, child in value.items():
        origins[f"{prefix}{key}"] = source
        if isinstance(child, dict):
            _record(child, source, origins, f"{prefix}{key}.")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _FileLoader:
    """Loads `config_paths` recursively, each file once, includes before includers."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.seen: set[Path] = set()
        self.ordered: list[tuple[Path, dict[str, Any]]] = []

    def load(self, raw_paths: list[str], referrer: str, base_dirs: list[Path]) -> None:
        for raw in raw_paths:
            path = _resolve_path(raw, base_dirs)
            if path in self.seen:
                continue
            self.seen.add(path)
            if not path.is_file():
                raise ConfigError(
                    f"config file {raw!r} does not exist (looked for {path})",
                    key="config_paths",
                    source=referrer,
                )
            data = _read_yaml(path, referrer)
            _check_manifest(path)
            nested = _as_path_list(data.pop("config_paths", None), "config_paths", str(path))
            self.load(nested, str(path), [path.parent, *search_roots(self.cwd)])
            self.ordered.append((path, data))


def search_roots(cwd: Path) -> list[Path]:
    """Where a relative config path is looked for: extra roots, the working directory, this checkout,
    then the other trees the server packages are imported from."""
    others = (root.resolve() for root in component_package_roots())
    return list(dict.fromkeys([*(root.resolve() for root in extra_roots()), cwd, PROJECT_ROOT, *others]))


def _check_manifest(config_path: Path) -> None:
    if not (config_path.parent / "manifest.yaml").is_file():
        return
    from nemo_gym.environment.manifest import validate_bundle_manifest

    validate_bundle_manifest(config_path)


class _Search:
    """`load_config(env_yaml=SEARCH)`: look in NEMO_GYM_ENV_YAML, then the cwd, then the project root."""

    def __repr__(self) -> str:
        return "SEARCH"


SEARCH = _Search()
INITIAL_SOURCE = "initial_global_config_dict"


def _find_env_yaml(cwd: Path, env_yaml: Path | str | _Search | None = SEARCH) -> Path | None:
    """The env.yaml to merge, if any.

    An explicit path that does not exist means "no env.yaml", as NeMo Gym treats it: trainers
    pass a fixed path next to their own package whether or not the user created that file.
    """
    if env_yaml is None:
        return None
    if not isinstance(env_yaml, _Search):
        path = Path(env_yaml)
        return path if path.is_file() else None
    override = os.environ.get(ENV_YAML_VAR)
    if override is not None:
        if override.lower() in ("", "none", "off"):
            return None
        return Path(override)
    for base in (cwd, PROJECT_ROOT):
        candidate = base / "env.yaml"
        if candidate.is_file():
            return candidate
    return None


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load_config(
    args: list[str] | None = None,
    cwd: Path | None = None,
    *,
    initial: Mapping[str, Any] | None = None,
    env_yaml: Path | str | _Search | None = SEARCH,
) -> LoadedConfig:
    """Merge config files, env.yaml, `initial` and overrides; resolve interpolations; check `???`.

    `initial` is what an in-process caller (a trainer's `RunHelper.start`) hands over: it ranks
    above env.yaml and below the command line, as in NeMo Gym, and its `config_paths` join the
    others. `env_yaml` is SEARCH (the usual places), None (no env.yaml) or a path.
    """
    cwd = (cwd or Path.cwd()).resolve()
    cli = parse_overrides(list(args or []))
    env_path = _find_env_yaml(cwd, env_yaml)
    env_data = _read_yaml(env_path, "env.yaml") if env_path else {}
    initial_data = _plain_mapping(initial)

    config_paths = _as_path_list(env_data.pop("config_paths", None), "config_paths", "env.yaml")
    config_paths += _as_path_list(initial_data.pop("config_paths", None), "config_paths", INITIAL_SOURCE)
    config_paths += _as_path_list(cli.pop("config_paths", None), "config_paths", COMMAND_LINE)

    loader = _FileLoader(cwd)
    loader.load(config_paths, COMMAND_LINE, search_roots(cwd))

    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for path, data in loader.ordered:
        _merge(merged, data, _display(path), origins)
    if env_path:
        _merge(merged, env_data, _display(env_path), origins)
    _merge(merged, initial_data, INITIAL_SOURCE, origins)
    _merge(merged, cli, COMMAND_LINE, origins)
    merged = apply_composition(merged, origins)

    merged.setdefault("head_server", dict(DEFAULT_HEAD_SERVER))
    for key, value in DEFAULT_HEAD_SERVER.items():
        merged["head_server"].setdefault(key, value)
    merged["config_paths"] = [str(p) for p, _ in loader.ordered]

    loaded = LoadedConfig(config=OmegaConf.create({}), origins=origins, files=merged["config_paths"])
    raw = OmegaConf.create(merged)
    resolved = _resolve(raw, loaded, None if env_path else _missing_env_hint(cwd))
    _split_comma_lists(resolved)
    loaded.config = OmegaConf.create(resolved)
    return loaded


def _plain_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A caller's mapping (a DictConfig included) as plain dicts, interpolations left unresolved."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"must be a mapping of config keys, not {type(value).__name__}", source=INITIAL_SOURCE
        )
    try:
        node = value if isinstance(value, DictConfig) else OmegaConf.create(dict(value))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot be read as a config: {exc}", source=INITIAL_SOURCE) from None
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def _missing_env_hint(cwd: Path) -> str:
    """Why a `${policy_base_url}` fails most often: the user never created env.yaml."""
    places = str(cwd) if Path(cwd).resolve() == PROJECT_ROOT.resolve() else f"{cwd} or {PROJECT_ROOT}"
    return f"no env.yaml in {places}; copy env.yaml.example"


def _resolve(raw: DictConfig, loaded: LoadedConfig, env_hint: str | None = None) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(raw, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as exc:
        key = exc.full_key
        raise ConfigError(
            "is mandatory ('???') but was not set; set it in env.yaml or with "
            f"'+{key}=...' on the command line",
            key=key,
            source=loaded.source_of(key),
        ) from None
    except InterpolationResolutionError as exc:
        key = exc.full_key
        message = f"cannot resolve interpolation: {str(exc.msg).splitlines()[0]}"
        if env_hint and isinstance(exc, InterpolationKeyError):
            message += f" ({env_hint})"
        raise ConfigError(message, key=key, source=loaded.source_of(key)) from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(
            str(exc.msg if hasattr(exc, "msg") else exc), key=key, source=loaded.source_of(key or "")
        ) from None


def _split_comma_lists(node: Any) -> None:
    """`base_url: "http://a/v1, http://b/v1"` → a list (spaces trimmed, empties dropped)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "base_url" and isinstance(value, str) and "," in value:
                node[key] = [part.strip() for part in value.split(",") if part.strip()]
            else:
                _split_comma_lists(value)
    elif isinstance(node, list):
        for item in node:
            _split_comma_lists(item)


_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_][\w-]*)")


def _referenced_names(node: Any, names: set[str]) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _referenced_names(value, names)
    elif isinstance(node, list):
        for item in node:
            _referenced_names(item, names)
    elif isinstance(node, str):
        names.update(_INTERPOLATION.findall(node))


def config_defined_names(args: list[str] | None = None, cwd: Path | None = None) -> set[str] | None:
    """Top-level names the config files and env.yaml define or interpolate (`${name}`).

    A command uses this to tell its own misspelt flags from legitimate config keys given on the
    command line (a server instance, `+policy_base_url=…`). None when the files cannot be read:
    `load_config` then reports that problem properly.
    """
    cwd = (cwd or Path.cwd()).resolve()
    try:
        cli = parse_overrides(list(args or []))
        env_path = _find_env_yaml(cwd)
        env_data = _read_yaml(env_path, "env.yaml") if env_path else {}
        paths = _as_path_list(env_data.pop("config_paths", None), "config_paths", "env.yaml")
        paths += _as_path_list(cli.get("config_paths"), "config_paths", COMMAND_LINE)
        loader = _FileLoader(cwd)
        loader.load(paths, COMMAND_LINE, search_roots(cwd))
    except ConfigError:
        return None
    names: set[str] = set(env_data)
    for _, data in loader.ordered:
        names.update(str(k) for k in data)
        _referenced_names(data, names)
    _referenced_names(env_data, names)
    _referenced_names(cli, names)
    return names
