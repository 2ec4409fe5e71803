"""`ng_help`: the commands there are, each with one line, so users need not know the names first."""

from __future__ import annotations

import importlib

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, check_command_line

COMMAND = "ng_help"
SUMMARY = "list the nemo_gym commands."
# Each command is the module of its name under nemo_gym.cli, with its own COMMAND/SUMMARY.
COMMANDS = (
    "ng_run",
    "ng_collect_rollouts",
    "ng_e2e_collect_rollouts",
    "ng_aggregate_rollouts",
    "ng_reward_profile",
    "ng_reverify_rollouts",
    "ng_status",
    "ng_dump_config",
    "ng_validate",
    "ng_list",
    "ng_prepare_data",
    "ng_materialize_prompts",
    "ng_test",
    "ng_test_all",
    "ng_dev_test",
    "ng_init_resources_server",
    "ng_pip_list",
    "ng_version",
    "ng_help",
)


class HelpKeys(CommandKeys):
    """ng_help takes no keys of its own."""


def listing() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["nemo_gym commands (each also as nemo_gym_<name>; `<command> --help` lists its keys):", ""]
    for name in COMMANDS:
        summary = importlib.import_module(f"nemo_gym.cli.{name}").SUMMARY
        lines.append(f"  {name:<{width}}  {summary}")
    lines += ["", "The same commands as NeMo Gym 0.7.0 spells them: `gym <group> <action>` (`gym --help`)."]
    return "\n".join(lines)


KEYS = HelpKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    check_command_line(COMMAND, HelpKeys, args, config_names=False)
    print(listing())
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
