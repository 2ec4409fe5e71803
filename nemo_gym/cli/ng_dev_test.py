"""`ng_dev_test`: the framework's own test suite (what `make test` runs after the linter)."""

from __future__ import annotations

import subprocess
import sys

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys
from nemo_gym.config import PROJECT_ROOT

COMMAND = "ng_dev_test"
SUMMARY = "run the framework's own test suite with pytest (extra -x/-k/... go to pytest)."


class DevTestConfig(CommandKeys):
    """ng_dev_test takes no keys of its own; dash arguments go to pytest."""


KEYS = DevTestConfig  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    from nemo_gym.cli.keys import check_command_line

    check_command_line(COMMAND, DevTestConfig, [a for a in args if not a.startswith("-")], config_names=False)
    pytest_args = [a for a in args if a.startswith("-")]
    return subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=str(PROJECT_ROOT))


# NeMo Gym's `nemo_gym.cli.ng_dev_test`.
dev_test = cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)

if __name__ == "__main__":
    cli()
