"""Console commands (ng_run, ng_collect_rollouts, …) and the names NeMo Gym's `nemo_gym.cli` offers.

Trainers do `from nemo_gym.cli import GlobalConfigDictParserConfig, RunHelper`; those names are
resolved on first use, so importing a command module (or this package) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_FORWARDS = {
    "RunHelper": "nemo_gym.runner.run_helper",
    "RunConfig": "nemo_gym.runner.run_helper",
    "ServerStartError": "nemo_gym.runner.run_helper",
    "ServerDiedError": "nemo_gym.runner.run_helper",
    "GlobalConfigDictParserConfig": "nemo_gym.global_config",
    "run": "nemo_gym.cli.ng_run",
    "TestConfig": "nemo_gym.cli.ng_test",
    "test": "nemo_gym.cli.ng_test",
    "TestAllConfig": "nemo_gym.cli.ng_test_all",
    "test_all": "nemo_gym.cli.ng_test_all",
    "PipListConfig": "nemo_gym.cli.ng_pip_list",
    "pip_list": "nemo_gym.cli.ng_pip_list",
    "init_resources_server": "nemo_gym.cli.ng_init_resources_server",
    "e2e_rollout_collection": "nemo_gym.cli.ng_e2e_collect_rollouts",
    "dev_test": "nemo_gym.cli.ng_dev_test",
}
_COMMANDS = {  # name → (module, attribute)
    "dump_config": ("nemo_gym.cli.ng_dump_config", "cli"),
    "status": ("nemo_gym.cli.ng_status", "cli"),
    "version": ("nemo_gym.cli.ng_version", "cli"),
    "VersionConfig": ("nemo_gym.cli.ng_version", "VersionKeys"),
}


def __getattr__(name: str) -> Any:
    if name in _FORWARDS:
        return getattr(importlib.import_module(_FORWARDS[name]), name)
    if name in _COMMANDS:
        module, attribute = _COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'nemo_gym.cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FORWARDS, *_COMMANDS])
