"""`ng_test +entrypoint=<server_type>/<impl>`: run that implementation's tests."""

from __future__ import annotations

import subprocess
import sys

from nemo_gym.cli.common import run_cli
from nemo_gym.config import PROJECT_ROOT, ConfigError
from nemo_gym.config.overrides import parse_overrides


def main(args: list[str]) -> int:
    overrides = parse_overrides([a for a in args if not a.startswith("-")])
    entry = overrides.get("entrypoint")
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


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
