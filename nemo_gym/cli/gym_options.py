"""The `gym` command's flags, each declared once and turned into the `+key=value` overrides our
`ng_*` commands read, so `gym eval run --output x.jsonl` and `ng_e2e_collect_rollouts
+output_jsonl_fpath=x.jsonl` are one code path with two spellings.

Config files can come from `--config PATH` (repeatable) and from the named-asset selectors
(`--environment NAME`, `--resources-server NAME`, `--model-type NAME`, ...), which find
`<kind folder>/<NAME>/.../<flavor>.yaml` under the component search roots; all of them end up in one
`+config_paths=[...]` token together with any the user wrote by hand, since a second
`config_paths` override would replace the first instead of adding to it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nemo_gym.cli.keys import closest
from nemo_gym.config import ConfigError
from nemo_gym.config.overrides import parse_overrides

Kind = Literal["text", "int", "float", "switch", "config", "selector", "csv"]

# Text that the override grammar reads back as the same string without quotes.
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_./:@+-]+")
_NON_STRING_WORDS = {"true", "false", "null", "none", "nan", "inf", "-inf", "yes", "no", "on", "off"}
CONFIG_PATHS_KEY = "config_paths"


def override_text(value: str) -> str:
    """`value` as the override grammar must see it to read it back as this exact string."""
    is_plain = _PLAIN_TEXT.fullmatch(value) is not None
    looks_typed = value.lower() in _NON_STRING_WORDS or _parses_as_number(value)
    if is_plain and not looks_typed:
        return value
    return json.dumps(value, ensure_ascii=False)


def _parses_as_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- named assets

# `--<flag> NAME[/FLAVOR]` → (folder, configs subfolder, default flavor); None: the flavor defaults to NAME.
ASSETS: dict[str, tuple[str, str, str | None]] = {
    "environment": ("environments", "", "config"),
    "benchmark": ("benchmarks", "", "config"),
    "resources-server": ("resources_servers", "configs", None),
    "model-type": ("responses_api_models", "configs", None),
    "agent-type": ("responses_api_agents", "configs", None),
}


def search_roots() -> list[Path]:
    from nemo_gym.paths import component_search_roots

    return component_search_roots()


def asset_config_path(flag: str, value: str, roots: list[Path] | None = None) -> str:
    """The config file a named asset selects: the first search root that has it wins.

    `NAME/FLAVOR` picks `<folder>/NAME/[configs/]FLAVOR.yaml`; environments and benchmarks may also
    nest (`benchmarks/livecodebench/v5/config.yaml` is `--benchmark livecodebench/v5`). A miss is a
    config error naming the path looked for and the closest real name.
    """
    folder, subfolder, default_flavor = ASSETS[flag]
    roots = roots if roots is not None else search_roots()
    name, _, flavor = value.partition("/")
    flavor = flavor or default_flavor or name
    relative = Path(folder, name, subfolder, f"{flavor}.yaml")
    candidates = [relative]
    if "/" in value and not subfolder:
        candidates.insert(0, Path(folder, value, f"{default_flavor}.yaml"))
    for candidate in candidates:
        for root in roots:
            if (root / candidate).is_file():
                return str((root / candidate).resolve())
    known = sorted(_asset_names(flag, name, roots))
    guess = closest(flavor if (roots and _has_folder(roots, folder, name)) else name, known)
    hint = f"; did you mean `{guess}`?" if guess else ""
    looked = ", ".join(str(root / folder) for root in roots if (root / folder).is_dir()) or "nowhere"
    raise ConfigError(
        f"`--{flag} {value}` names {relative}, which does not exist{hint} (searched {looked})",
        key=f"--{flag}",
        source="command line",
    )


def _has_folder(roots: list[Path], folder: str, name: str) -> bool:
    return any((root / folder / name).is_dir() for root in roots)


def _asset_names(flag: str, name: str, roots: list[Path]) -> set[str]:
    """Flavors of `name` when it exists, else the names of that kind of asset."""
    folder, subfolder, _ = ASSETS[flag]
    if _has_folder(roots, folder, name):
        return {p.stem for root in roots for p in (root / folder / name / subfolder).glob("*.yaml")}
    return {
        p.name for root in roots if (root / folder).is_dir() for p in (root / folder).iterdir() if p.is_dir()
    }


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One flag of a `gym` command and the override it becomes."""

    flag: str
    key: str | None
    help: str
    kind: Kind = "text"
    short: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    # For kind "switch": the value written when the flag is given (a flag may also clear a key).
    switch_value: bool = True
    # A positional argument instead of a flag (`gym list agents NAME`).
    positional: bool = False
    # Turn the parsed text into the override's value (e.g. a server name into its folder).
    transform: Callable[[str], str] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.positional:
            parser.add_argument(self.dest, nargs="?", metavar=self.metavar or "NAME", help=self.help)
            return
        names = [self.flag, *([self.short] if self.short else [])]
        if self.kind == "switch":
            parser.add_argument(*names, dest=self.dest, action="store_true", default=None, help=self.help)
            return
        repeated = self.kind in ("config", "selector") and self.flag != "--model-type"
        parser.add_argument(
            *names,
            dest=self.dest,
            action="append" if repeated else "store",
            type={"int": int, "float": float}.get(self.kind, str),
            choices=self.choices,
            metavar=self.metavar or self.dest.upper(),
            help=self.help + (" Repeatable." if repeated else ""),
        )

    def translate(self, namespace: argparse.Namespace) -> tuple[list[str], list[str]]:
        """(config paths, other overrides) this option contributes."""
        value: Any = getattr(namespace, self.dest, None)
        if value is None:
            return [], []
        if self.kind == "config":
            return [str(v) for v in value], []
        if self.kind == "selector":
            values = value if isinstance(value, list) else [value]
            return [asset_config_path(self.flag.lstrip("-"), v) for v in values], []
        if self.key is None:
            return [], []
        if self.kind == "switch":
            return [], [f"+{self.key}={'true' if self.switch_value else 'false'}"]
        if self.kind in ("int", "float"):
            return [], [f"+{self.key}={value}"]
        if self.kind == "csv":
            items = [item.strip() for item in str(value).split(",") if item.strip()]
            return [], [f"+{self.key}=[{','.join(override_text(i) for i in items)}]"]
        text = self.transform(value) if self.transform else value
        return [], [f"+{self.key}={override_text(text)}"]


def merge_config_paths(paths: list[str], raw: list[str]) -> list[str]:
    """The overrides with every config path (flags first, then any `+config_paths=[...]` the user
    typed) in one leading token; the other raw overrides follow unchanged."""
    rest = []
    for token in raw:
        name = token.lstrip("+").split("=", 1)[0]
        if name == CONFIG_PATHS_KEY and "=" in token:
            given = parse_overrides([token]).get(CONFIG_PATHS_KEY)
            paths = [*paths, *([given] if isinstance(given, str) else list(given or []))]
        else:
            rest.append(token)
    if not paths:
        return rest
    unique = list(dict.fromkeys(str(p) for p in paths))
    return [f"+{CONFIG_PATHS_KEY}=[{','.join(override_text(p) for p in unique)}]", *rest]


# --------------------------------------------------------------------------- shared flags

CONFIG = Option(
    "--config", None, "Config file to load; maps to +config_paths=[...].", "config", metavar="PATH"
)
ENVIRONMENT = Option("--environment", None, "Load environments/NAME[/FLAVOR] (its config.yaml).", "selector")
BENCHMARK = Option("--benchmark", None, "Load benchmarks/NAME (its config.yaml).", "selector")
RESOURCES_SERVER_CONFIG = Option(
    "--resources-server", None, "Load resources_servers/NAME/configs/NAME[/FLAVOR].yaml.", "selector"
)
MODEL_TYPE = Option(
    "--model-type", None, "Load responses_api_models/NAME/configs/NAME.yaml (e.g. vllm_model).", "selector"
)
AGENT_TYPE = Option(
    "--agent-type", None, "Load responses_api_agents/NAME/configs/NAME[/FLAVOR].yaml.", "selector"
)
MODEL = Option("--model", "policy_model_name", "Served model name (policy_model_name).", short="-m")
MODEL_URL = Option("--model-url", "policy_base_url", "Model server base URL (policy_base_url).")
MODEL_API_KEY = Option("--model-api-key", "policy_api_key", "Model server API key (policy_api_key).")
JSON = Option("--json", "json", "Print machine-readable JSON.", "switch")
COMPONENT_NAME = Option(
    "name", "component_name", "Show one component instead of listing all.", positional=True
)
CONFIG_SOURCES = (CONFIG, ENVIRONMENT, BENCHMARK, RESOURCES_SERVER_CONFIG, MODEL_TYPE, AGENT_TYPE)
MODEL_FLAGS = (MODEL, MODEL_URL, MODEL_API_KEY)
