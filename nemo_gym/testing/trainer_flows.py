"""The keys and calls of NeMo RL, veRL and TRL, written for our tests and benchmarks.

Each `*_keys` function builds the `initial_global_config_dict` that trainer hands to
`RunHelper.start` (their public integration code is where the key sets come from); `start` and
`collect` make the calls the way they make them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nemo_gym.config import PROJECT_ROOT
from nemo_gym.global_config import HEAD_SERVER_KEY_NAME, GlobalConfigDictParserConfig
from nemo_gym.rollout_collection import RolloutCollectionHelper
from nemo_gym.runner.run_helper import RunHelper
from nemo_gym.server.base import BaseServerConfig

WEATHER_ROWS = [
    json.loads(line)
    for line in (PROJECT_ROOT / "resources_servers/simple_weather/data/example.jsonl")
    .read_text()
    .splitlines()
]
CONFIG_PATHS = [
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
]
AGENT = "simple_weather_simple_agent"


def port_window(size: int = 300) -> tuple[int, int]:
    """A random window of ports for one test's servers (NeMo RL gives Gym a range), below Linux's
    default ephemeral range so that client connections do not draw from it."""
    low = random.randrange(20000, 32768 - size)
    return low, low + size - 1


def rows(n: int, agent_ref: bool = True) -> list[dict[str, Any]]:
    """Trainer batch rows: dataset rows with `agent_ref` and the trainer's own `_rowidx`."""
    out = []
    for i in range(n):
        row = json.loads(json.dumps(WEATHER_ROWS[i % len(WEATHER_ROWS)]))
        if agent_ref:
            row["agent_ref"] = {"type": "responses_api_agents", "name": AGENT}
        row["_rowidx"] = i
        out.append(row)
    return out


def nemo_rl_keys(base_urls: list[str], head_port: int, window: tuple[int, int]) -> dict[str, Any]:
    return {
        "config_paths": CONFIG_PATHS,
        "policy_model_name": "sim-model",
        "policy_api_key": "dummy_key",
        "policy_base_url": base_urls,
        "default_host": "127.0.0.1",
        "port_range_low": window[0],
        "port_range_high": window[1],
        "global_aiohttp_connector_limit_per_host": 16_384,
        "global_aiohttp_connector_limit": 65_536,
        HEAD_SERVER_KEY_NAME: {"host": "0.0.0.0", "port": head_port},
    }


def verl_keys(base_urls: list[str], head_port: int, window: tuple[int, int], tmp: Path) -> dict[str, Any]:
    return {
        **nemo_rl_keys(base_urls, head_port, window),
        "uv_venv_dir": str(tmp / "venvs"),
        "uv_cache_dir": str(tmp / "uv_cache"),
        "skip_venv_if_present": True,
    }


def trl_keys(base_url: str, head_port: int) -> dict[str, Any]:
    return {
        HEAD_SERVER_KEY_NAME: {"host": "0.0.0.0", "port": head_port},
        "config_paths": CONFIG_PATHS,
        "policy_base_url": base_url,
        "policy_api_key": "EMPTY",
        "policy_model_name": "sim-model",
        "global_aiohttp_connector_limit_per_host": 16_384,
        "global_aiohttp_connector_limit": 65_536,
        "hf_token": "hf_test_token_not_real",
    }


def start(keys: dict[str, Any], *, dotenv: Path | None = None) -> RunHelper:
    helper = RunHelper()
    helper.start(
        global_config_dict_parser_config=GlobalConfigDictParserConfig(
            dotenv_path=dotenv,
            initial_global_config_dict=DictConfig(keys),
            skip_load_from_cli=True,
        )
    )
    return helper


async def collect(rch: RolloutCollectionHelper, batch: list[dict], head: BaseServerConfig, **kw: Any) -> list:
    done = []
    for task in rch.run_examples(examples=batch, head_server_config=head, **kw):
        row, result = await task
        done.append((row, result))
    return done
