"""`ng_dump_config`: print the merged, resolved config with secrets redacted."""

from __future__ import annotations

import yaml
from omegaconf import OmegaConf

from nemo_gym.cli.common import run_cli
from nemo_gym.config import discover_instances, load_config, redact


def main(args: list[str]) -> int:
    loaded = load_config(args)
    discover_instances(loaded)  # validate instances and references, as ng_run would
    plain = OmegaConf.to_container(loaded.config, resolve=True)
    print(yaml.safe_dump(redact(plain), sort_keys=False), end="")
    return 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
