"""`ng_e2e_collect_rollouts`: start the servers, collect rollouts through them, stop them.

`ng_run` and `ng_collect_rollouts` in one command, for a one-off evaluation: one RunHelper, one
RolloutCollectionHelper, the same keys as the two commands.
"""

from __future__ import annotations

import sys

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import check_command_line
from nemo_gym.cli.ng_collect_rollouts import _routing_check, collect_and_report, settings_from
from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollouts.config import RolloutCollectionConfig
from nemo_gym.runner.run_helper import RunConfig, RunHelper, ServerStartError

COMMAND = "ng_e2e_collect_rollouts"
SUMMARY = "start the configured servers, collect rollouts through them (as ng_collect_rollouts), stop them."


class E2ECollectConfig(RolloutCollectionConfig, RunConfig):
    """ng_run's keys and ng_collect_rollouts' keys together."""


KEYS = E2ECollectConfig  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    check_command_line(COMMAND, E2ECollectConfig, args)
    helper = RunHelper()
    try:
        helper.start(args=args)
        client = ServerClient(helper.global_config)
        settings = settings_from(helper.global_config)
        _routing_check(settings, client)
        return collect_and_report(settings, client)
    except ServerStartError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        helper.shutdown()


# NeMo Gym's `nemo_gym.cli.e2e_rollout_collection`.
e2e_rollout_collection = cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)

if __name__ == "__main__":
    cli()
