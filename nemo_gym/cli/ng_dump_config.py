"""`ng_dump_config`: print the merged, resolved config with secrets redacted."""

from __future__ import annotations

import yaml
from omegaconf import OmegaConf

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import check_command_line
from nemo_gym.cli.ng_run import RunKeys
from nemo_gym.config import discover_instances, load_config, redact

COMMAND = "ng_dump_config"
SUMMARY = "print the merged, resolved global config with secrets redacted."


class DumpConfigKeys(RunKeys):
    """ng_dump_config takes ng_run's command line unchanged, so the two can be run with one set of args."""


KEYS = DumpConfigKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    check_command_line(COMMAND, DumpConfigKeys, args)
    loaded = load_config(args)
    discover_instances(loaded)  # validate instances and references, as ng_run would
    plain = OmegaConf.to_container(loaded.config, resolve=True)
    print(yaml.safe_dump(redact(plain), sort_keys=False), end="")
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
