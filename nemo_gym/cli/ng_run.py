"""`ng_run`: start the head server and every configured server, then supervise them.

A thin command over `nemo_gym.runner.run_helper.RunHelper`, the same class RL trainers drive
in-process, so there is one way servers start.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import check_command_line
from nemo_gym.runner.run_helper import RunConfig, RunHelper, ServerDiedError, ServerStartError

COMMAND = "ng_run"
SUMMARY = "start the head server and every configured server instance, then supervise them."
RunKeys = RunConfig  # the command's keys, under the name the other commands extend


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(helper: RunHelper, start: Callable[[RunHelper], None]) -> int:
    """Start the servers, supervise them until a signal or a death, stop them; the exit code."""
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    exit_code = 0
    try:
        start(helper)
        if helper.global_config.get("dry_run"):
            return 0
        helper.run_forever()
    except (ServerStartError, ServerDiedError) as exc:
        print(f"\nerror: {exc}\nShutting down.", file=sys.stderr, flush=True)
        exit_code = 1
    except _Stop as stop:
        print(f"\nReceived {stop}; stopping {len(helper.server_instances())} servers...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        helper.shutdown()
        if any(row["pid"] for row in helper.server_instances()):
            print("All servers stopped.", flush=True)
    return exit_code


KEYS = RunKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    check_command_line(COMMAND, RunKeys, args)
    return serve(RunHelper(), lambda helper: helper.start(args=args))


def run(global_config_dict_parser_config: Any = None) -> None:
    """NeMo Gym's `nemo_gym.cli.ng_run`: `ng_run` on this process's command line, or on a
    `GlobalConfigDictParserConfig` when one is given."""
    if global_config_dict_parser_config is None:
        cli()
    raise SystemExit(serve(RunHelper(), lambda helper: helper.start(global_config_dict_parser_config)))


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
