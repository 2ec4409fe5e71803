"""`ng_test +entrypoint=<server_type>/<impl>`: run that implementation's tests."""

from __future__ import annotations

import subprocess
import sys

from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, read_keys
from nemo_gym.config import PROJECT_ROOT, ConfigError

COMMAND = "ng_test"
SUMMARY = "run one server implementation's tests with pytest (extra -x/-k/... go to pytest)."


class NgTestKeys(CommandKeys):
    """ng_test's keys: which implementation to test."""

    entrypoint: str | None = Field(
        None, description="The implementation folder, e.g. responses_api_models/vllm_model. Required."
    )


TestConfig = NgTestKeys  # type: ignore[misc]


KEYS = NgTestKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    plain = [a for a in args if not a.startswith("-")]
    entry = read_keys(COMMAND, NgTestKeys, plain, config_names=False).entrypoint
    if not entry:
        raise ConfigError(
            "is required, e.g. +entrypoint=responses_api_models/vllm_model",
            key="entrypoint",
            source="command line",
        )
    tests_dir = PROJECT_ROOT / str(entry).strip("/") / "tests"
    if not tests_dir.is_dir():
        raise ConfigError(
            f"has no tests folder ({tests_dir} does not exist)", key="entrypoint", source="command line"
        )
    pytest_args = [a for a in args if a.startswith("-")]
    return subprocess.call(
        [sys.executable, "-m", "pytest", str(tests_dir), *pytest_args], cwd=str(PROJECT_ROOT)
    )


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


def test() -> None:
    """NeMo Gym's `nemo_gym.cli.ng_test`: `ng_test` on this process's command line."""
    cli()


if __name__ == "__main__":
    cli()
