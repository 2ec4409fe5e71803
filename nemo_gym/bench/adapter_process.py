"""How the benchmarks start an adapter: a runtime config file and environment exactly as ng_run
gives a server, so a measured adapter is the one ng_run would run."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.config.loader import LoadedConfig
from nemo_gym.server.context import CONFIG_FILE_VAR, INSTANCE_VAR, write_runtime_file


@dataclass(frozen=True, slots=True)
class AdapterLaunch:
    """What to run (`command`, with `env`, from `cwd`) and where it will listen."""

    name: str
    port: int
    command: list[str]
    env: dict[str, str]
    cwd: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def adapter_launch(
    name: str, upstream: str, overrides: dict[str, Any], workers: int = 1, checkout: Path = PROJECT_ROOT
) -> AdapterLaunch:
    """The vllm_model adapter of `checkout` as server `name`, in front of `upstream`."""
    port = free_port()
    impl: dict[str, Any] = {
        "entrypoint": "app.py",
        "host": "127.0.0.1",
        "port": port,
        "base_url": upstream,
        "api_key": "EMPTY",
        "model": "bench-model",
        **overrides,
    }
    if workers > 1:
        impl["workers"] = workers
    loaded = LoadedConfig(
        config=OmegaConf.create({name: {"responses_api_models": {"vllm_model": impl}}}), origins={}
    )
    config_file = write_runtime_file(loaded, "bench-secret")
    env = dict(
        os.environ, **{CONFIG_FILE_VAR: str(config_file), INSTANCE_VAR: name}, PYTHONPATH=str(checkout)
    )
    command = [sys.executable, str(checkout / "responses_api_models" / "vllm_model" / "app.py")]
    return AdapterLaunch(name, port, command, env, checkout)
