"""`ng_test_all`: every server implementation's own tests, one pytest run each, and a summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import Field, model_validator

from nemo_gym.cli.common import command_entry, format_table
from nemo_gym.cli.keys import CommandKeys, read_keys
from nemo_gym.config import PROJECT_ROOT, SERVER_TYPES

COMMAND = "ng_test_all"
SUMMARY = "run the tests of every server implementation (each in its own pytest run) and summarise."
SERVER_FOLDERS = (*SERVER_TYPES, "environment_servers")


class TestAllConfig(CommandKeys):
    """ng_test_all's keys."""

    fail_on_total_and_test_mismatch: bool = Field(
        False, description="Fail when some implementation has no tests folder."
    )
    num_shards: int = Field(1, ge=1, description="Split the implementations into this many shards.")
    shard_index: int = Field(0, ge=0, description="Which shard (0-based) this run tests.")

    @model_validator(mode="after")
    def _shard_exists(self) -> TestAllConfig:
        if self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be below num_shards {self.num_shards}")
        return self


def implementations(root: Path = PROJECT_ROOT) -> list[Path]:
    """Every `<server type>/<implementation>` folder (with an app.py) under `root`, sorted."""
    found = []
    for folder in SERVER_FOLDERS:
        for impl in sorted((root / folder).glob("*")):
            if impl.is_dir() and (impl / "app.py").is_file():
                found.append(impl)
    return found


KEYS = TestAllConfig  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, TestAllConfig, args, config_names=False)
    every = implementations()
    mine = every[keys.shard_index :: keys.num_shards]
    rows, failed, untested = [], 0, []
    for impl in mine:
        relative = str(impl.relative_to(PROJECT_ROOT))
        if not (impl / "tests").is_dir():
            untested.append(relative)
            rows.append([relative, "no tests"])
            continue
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", str(impl / "tests")], cwd=str(PROJECT_ROOT)
        )
        failed += code != 0
        rows.append([relative, "passed" if code == 0 else f"FAILED (exit {code})"])
    print(format_table(["implementation", "tests"], rows))
    print(
        f"{len(mine) - failed - len(untested)}/{len(mine)} implementations passed; {len(untested)} have no tests"
    )
    if failed or (keys.fail_on_total_and_test_mismatch and untested):
        return 1
    return 0


# NeMo Gym's `nemo_gym.cli.ng_test_all`.
test_all = cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)

if __name__ == "__main__":
    cli()
