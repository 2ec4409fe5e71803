"""`ng_help`: the commands there are, each with one line, so users need not know the names first."""

from __future__ import annotations

import importlib

from nemo_gym.cli.common import run_cli
from nemo_gym.cli.keys import CommandKeys, check_command_line

COMMAND = "ng_help"
SUMMARY = "list the nemo_gym commands."
# (command, module under nemo_gym.cli); each module carries its own COMMAND/SUMMARY.
COMMANDS = (
    ("ng_run", "run"),
    ("ng_collect_rollouts", "collect_rollouts"),
    ("ng_status", "status"),
    ("ng_dump_config", "dump_config"),
    ("ng_test", "test"),
    ("ng_version", "version"),
    ("ng_help", "help"),
)


class HelpKeys(CommandKeys):
    """ng_help takes no keys of its own."""


def listing() -> str:
    width = max(len(name) for name, _ in COMMANDS)
    lines = ["nemo_gym commands (each also as nemo_gym_<name>; `<command> --help` lists its keys):", ""]
    for name, module in COMMANDS:
        summary = importlib.import_module(f"nemo_gym.cli.{module}").SUMMARY
        lines.append(f"  {name:<{width}}  {summary}")
    return "\n".join(lines)


def main(args: list[str]) -> int:
    check_command_line(COMMAND, HelpKeys, args, config_names=False)
    print(listing())
    return 0


def cli() -> None:
    run_cli(main, command=COMMAND, summary=SUMMARY, keys=HelpKeys)


if __name__ == "__main__":
    cli()
