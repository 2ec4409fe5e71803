"""`ng_pip_list`: the packages of the environment the servers run in.

NeMo Gym builds one virtualenv per server and lists one of them; here every server runs in the
caller's environment, so that is the one listed, whatever `entrypoint` is given.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, read_keys

COMMAND = "ng_pip_list"
SUMMARY = "list the Python packages installed where the servers run (one environment for all)."


class PipListConfig(CommandKeys):
    """ng_pip_list's keys."""

    entrypoint: str | None = Field(
        None, description="Accepted for NeMo Gym's command line; every server shares this environment."
    )
    format: Literal["columns", "freeze", "json"] | None = Field(None, description="pip's output format.")
    outdated: bool = Field(False, description="List only outdated packages (asks the package index).")


KEYS = PipListConfig  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, PipListConfig, args, config_names=False)
    command = [sys.executable, "-m", "pip", "list"]
    if keys.format:
        command.append(f"--format={keys.format}")
    if keys.outdated:
        command.append("--outdated")
    return subprocess.call(command)


# NeMo Gym's `nemo_gym.cli.ng_pip_list`.
pip_list = cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)

if __name__ == "__main__":
    cli()
