"""`ng_list +component_type=<type> [+component_name=NAME] [+json=true]`: what can be picked by name.

`gym list environments|benchmarks|agents|models|resources-servers [NAME]` runs this. Components
come from the search roots (`NEMO_GYM_EXTRA_ROOTS`, the working directory, this checkout), so a
NeMo Gym checkout named in `NEMO_GYM_EXTRA_ROOTS` lists its environments next to ours.
"""

from __future__ import annotations

import json
import sys
from typing import Literal

from pydantic import Field

from nemo_gym import catalog
from nemo_gym.cli.common import command_entry, format_table
from nemo_gym.cli.keys import CommandKeys, closest, read_keys
from nemo_gym.config import ConfigError

COMMAND = "ng_list"
SUMMARY = "list environments, benchmarks, agents, models or resources servers, or show one by name."


class ListKeys(CommandKeys):
    """ng_list's keys."""

    component_type: Literal["environments", "benchmarks", "agents", "models", "resources_servers"] = Field(
        "environments", description="What to list."
    )
    component_name: str | None = Field(None, description="Show this one component instead of listing all.")
    json_format: bool = Field(False, alias="json", description="Print JSON instead of a table.")


KEYS = ListKeys


def _describe(component: catalog.Component) -> str:
    lines = [f"{component.name} ({component.type.rstrip('s').replace('_', ' ')})"]
    if component.domain:
        lines.append(f"  domain: {component.domain}")
    if component.description:
        lines.append(f"  description: {component.description}")
    lines.append(f"  path: {component.path}")
    for config in component.configs:
        lines.append(f"  config: {config}")
    if component.manifest:
        lines.append(f"  manifest: {component.manifest}")
    lines += [f"  {label}: {value}" for label, value in component.details.items() if label != "configs"]
    return "\n".join(lines)


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, ListKeys, args, config_names=False)
    found = catalog.discover(keys.component_type)
    noun = keys.component_type.replace("_", " ")
    if keys.component_name is not None:
        component = found.get(keys.component_name)
        if component is None:
            guess = closest(keys.component_name, found)
            hint = f"; did you mean `{guess}`?" if guess else ""
            raise ConfigError(f"no {noun} is named {keys.component_name!r}{hint}", key="component_name")
        print(json.dumps(component.as_json()) if keys.json_format else _describe(component))
        return 0
    if keys.json_format:
        print(json.dumps([c.as_json() for c in found.values()]))
        return 0
    if not found:
        print(f"No {noun} found (searched the working directory, this checkout and NEMO_GYM_EXTRA_ROOTS).")
        return 0
    rows = [[c.name, c.domain or "", _one_line(c.description)] for c in found.values()]
    print(format_table(["name", "domain", "description"], rows))
    print(f"{len(found)} {noun}", file=sys.stderr)
    return 0


def _one_line(text: str | None, width: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
