"""`ng_version [+json=true]`: what a bug report needs to say which nemo_gym ran where."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, read_keys
from nemo_gym.config import PROJECT_ROOT

COMMAND = "ng_version"
SUMMARY = "print nemo_gym, Python and key dependency versions, plus OS, CPU and memory."
KEY_DEPENDENCIES = (
    "openai",
    "fastapi",
    "uvicorn",
    "pydantic",
    "httpx",
    "aiohttp",
    "omegaconf",
    "hydra-core",
    "orjson",
    "uvloop",
)


class VersionKeys(CommandKeys):
    """ng_version's keys."""

    json_format: bool = Field(False, alias="json", description="Print one JSON object instead of text.")


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _memory_gb() -> float | None:
    """Total RAM from sysconf: no psutil dependency just for one number."""
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3, 2)
    except (ValueError, OSError, AttributeError):
        return None


def version_info() -> dict[str, Any]:
    return {
        "nemo_gym": _installed("nemo-gym"),
        "python": platform.python_version(),
        "python_path": sys.executable,
        "installation_path": str(PROJECT_ROOT),
        "dependencies": {name: _installed(name) for name in KEY_DEPENDENCIES},
        "system": {
            "os": f"{platform.system()} {platform.release()}",
            "platform": platform.platform(),
            "architecture": platform.machine(),
            "processor": platform.processor() or "unknown",
            "cpus": os.cpu_count(),
            "memory_gb": _memory_gb(),
        },
    }


def render(info: dict[str, Any]) -> str:
    system = info["system"]
    lines = [
        f"nemo_gym {info['nemo_gym']}",
        f"Python {info['python']} ({info['python_path']})",
        f"Installation: {info['installation_path']}",
        "Dependencies:",
        *(f"  {name}: {ver}" for name, ver in info["dependencies"].items()),
        "System:",
        f"  OS: {system['os']}",
        f"  Platform: {system['platform']}",
        f"  Architecture: {system['architecture']}",
        f"  Processor: {system['processor']}",
        f"  CPUs: {system['cpus']}",
        f"  Memory: {system['memory_gb']} GB",
    ]
    return "\n".join(lines)


KEYS = VersionKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, VersionKeys, args, config_names=False)
    info = version_info()
    print(json.dumps(info) if keys.json_format else render(info))  # type: ignore[attr-defined]
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
