"""The running global config, and the reserved key names NeMo Gym configs and rows use.

``get_global_config_dict()`` returns the config of the current process as an OmegaConf
``DictConfig``. A server started by ``ng_run`` reads the file its parent wrote (see
``nemo_gym.server.context``); any other process loads files + env.yaml + the overrides on
its command line with ``nemo_gym.config.load_config``. The result is cached.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict

# --- top-level config keys ---------------------------------------------------------------
NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME = "NEMO_GYM_CONFIG_DICT"
NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME = "NEMO_GYM_CONFIG_PATH"
CONFIG_PATHS_KEY_NAME = "config_paths"
ENTRYPOINT_KEY_NAME = "entrypoint"
DEFAULT_HOST_KEY_NAME = "default_host"
HEAD_SERVER_KEY_NAME = "head_server"
DISALLOWED_PORTS_KEY_NAME = "disallowed_ports"
HEAD_SERVER_DEPS_KEY_NAME = "head_server_deps"
PYTHON_VERSION_KEY_NAME = "python_version"
PIP_INSTALL_VERBOSE_KEY_NAME = "pip_install_verbose"
USE_ABSOLUTE_IP = "use_absolute_ip"
UV_PIP_SET_PYTHON_KEY_NAME = "uv_pip_set_python"
SKIP_VENV_IF_PRESENT_KEY_NAME = "skip_venv_if_present"
HF_TOKEN_KEY_NAME = "hf_token"
RAY_HEAD_NODE_ADDRESS_KEY_NAME = "ray_head_node_address"
PORT_RANGE_LOW_KEY_NAME = "port_range_low"
PORT_RANGE_HIGH_KEY_NAME = "port_range_high"
DRY_RUN_KEY_NAME = "dry_run"
UVICORN_TIMEOUT_WORKER_HEALTHCHECK = "uvicorn_timeout_worker_healthcheck"
SERVER_SPINUP_TIMEOUT_SECONDS_KEY_NAME = "server_spinup_timeout_seconds"
MODEL_ENDPOINT_READINESS_TIMEOUT_KEY_NAME = "model_endpoint_readiness_timeout_seconds"
ALLOW_OPENAI_VERSION_SKEW_KEY_NAME = "allow_openai_version_skew"
UV_CACHE_DIR_KEY_NAME = "uv_cache_dir"
UV_LOCK_TIMEOUT_KEY_NAME = "uv_lock_timeout_seconds"
UV_VENV_DIR_KEY_NAME = "uv_venv_dir"
RESULTS_DIR_KEY_NAME = "results_dir"
CACHE_DIR_KEY_NAME = "cache_dir"
INHERIT_FROM_KEY_NAME = "_inherit_from"
COPY_KEY_NAME = "_copy"
DELETE_KEY_KEY_NAME = "_delete_key"
NEMO_GYM_LOG_DIR_KEY_NAME = "nemo_gym_log_dir"
VERBOSE_KEY_NAME = "verbose"
JSON_OUTPUT_KEY_NAME = "json"
QUERY_KEY_NAME = "query"
OBSERVABILITY_ENABLED_KEY_NAME = "observability_enabled"
MODEL_CALL_CAPTURE_DIR_KEY_NAME = "model_call_capture_dir"
TOKEN_ID_CAPTURE_BLOCK = "token_id_capture"
COMPONENT_NAME_KEY_NAME = "component_name"
SKIP_VERIFICATION_KEY_NAME = "skip_verification"
SKIP_VERIFICATION_REWARD_KEY_NAME = "skip_verification_reward"
ALLOW_UNSUPPORTED_PAIRING_KEY_NAME = "allow_unsupported_pairing"
ALLOW_UNSUPPORTED_PAIRING_ENV_VAR_NAME = "NEMO_GYM_ALLOW_UNSUPPORTED_PAIRING"
ENVIRONMENT_SERVER_NAME_KEY_NAME = "environment_server_name"
ENVIRONMENT_SERVER_ROUTES_KEY_NAME = "environment_server_routes"
ENVIRONMENT_ROUTING_MODE_KEY_NAME = "environment_routing_mode"
ERROR_ON_AGENT_WITHOUT_ENVIRONMENT_SERVER_KEY_NAME = "error_on_agent_without_environment_server"

# --- server types and references ---------------------------------------------------------
AGENT_SERVER_TYPE_KEY_NAME = "responses_api_agents"
MODEL_SERVER_TYPE_KEY_NAME = "responses_api_models"
RESOURCES_SERVER_TYPE_KEY_NAME = "resources_servers"
ENVIRONMENT_SERVER_TYPE_KEY_NAME = "environment_servers"
AGENT_SERVER_REF_KEY_NAME = "agent_server"
ALLOWED_AGENTS_KEY_NAME = "allowed_agents"
ALLOWED_MODEL_TYPES_KEY_NAME = "allowed_model_types"

# --- keys stamped on dataset rows / rollouts ---------------------------------------------
TASK_INDEX_KEY_NAME = "_ng_task_index"
ROLLOUT_INDEX_KEY_NAME = "_ng_rollout_index"
ATTEMPT_INDEX_KEY_NAME = "_ng_attempt_index"
ROLLOUT_ID_KEY_NAME = "_ng_rollout_id"
ENVIRONMENT_SERVER_STAMP_KEY_NAME = "_ng_environment_server"
RESPONSES_CREATE_PARAMS_KEY_NAME = "responses_create_params"
RESPONSE_KEY_NAME = "response"
AGENT_REF_KEY_NAME = "agent_ref"
TASK_SOURCE_KEY_NAME = "task_source"
SKILLS_REF_KEY_NAME = "skills_ref"
REWARD_KEY_NAME = "reward"
ROLLOUT_INFOS_KEY_NAME = "rollout_infos"
NUM_ROLLOUTS_KEY_NAME = "num_rollouts"
EXPECTED_NUM_ROLLOUTS_KEY_NAME = "expected_num_rollouts"
MISSING_NUM_ROLLOUTS_KEY_NAME = "missing_num_rollouts"

# --- policy model shorthands -------------------------------------------------------------
POLICY_BASE_URL_KEY_NAME = "policy_base_url"
POLICY_API_KEY_KEY_NAME = "policy_api_key"  # pragma: allowlist secret
POLICY_MODEL_NAME_KEY_NAME = "policy_model_name"
POLICY_MODEL_KEY_NAME = "policy_model"

DEFAULT_HEAD_SERVER_PORT = 11000

NEMO_GYM_RESERVED_TOP_LEVEL_KEYS = [
    CONFIG_PATHS_KEY_NAME,
    ENTRYPOINT_KEY_NAME,
    DEFAULT_HOST_KEY_NAME,
    HEAD_SERVER_KEY_NAME,
    DISALLOWED_PORTS_KEY_NAME,
    HEAD_SERVER_DEPS_KEY_NAME,
    PYTHON_VERSION_KEY_NAME,
    PIP_INSTALL_VERBOSE_KEY_NAME,
    USE_ABSOLUTE_IP,
    UV_PIP_SET_PYTHON_KEY_NAME,
    SKIP_VENV_IF_PRESENT_KEY_NAME,
    HF_TOKEN_KEY_NAME,
    RAY_HEAD_NODE_ADDRESS_KEY_NAME,
    PORT_RANGE_LOW_KEY_NAME,
    PORT_RANGE_HIGH_KEY_NAME,
    DRY_RUN_KEY_NAME,
    UVICORN_TIMEOUT_WORKER_HEALTHCHECK,
    SERVER_SPINUP_TIMEOUT_SECONDS_KEY_NAME,
    MODEL_ENDPOINT_READINESS_TIMEOUT_KEY_NAME,
    ALLOW_OPENAI_VERSION_SKEW_KEY_NAME,
    UV_CACHE_DIR_KEY_NAME,
    UV_LOCK_TIMEOUT_KEY_NAME,
    UV_VENV_DIR_KEY_NAME,
    RESULTS_DIR_KEY_NAME,
    CACHE_DIR_KEY_NAME,
    NEMO_GYM_LOG_DIR_KEY_NAME,
    VERBOSE_KEY_NAME,
    JSON_OUTPUT_KEY_NAME,
    QUERY_KEY_NAME,
    OBSERVABILITY_ENABLED_KEY_NAME,
    MODEL_CALL_CAPTURE_DIR_KEY_NAME,
    TOKEN_ID_CAPTURE_BLOCK,
    SKIP_VERIFICATION_KEY_NAME,
    SKIP_VERIFICATION_REWARD_KEY_NAME,
    ALLOW_UNSUPPORTED_PAIRING_KEY_NAME,
    ERROR_ON_AGENT_WITHOUT_ENVIRONMENT_SERVER_KEY_NAME,
    POLICY_BASE_URL_KEY_NAME,
    POLICY_API_KEY_KEY_NAME,
    POLICY_MODEL_NAME_KEY_NAME,
]

_GLOBAL_CONFIG_DICT: DictConfig | None = None


def get_hf_token() -> str | None:
    config = maybe_get_global_config_dict()
    token = config.get(HF_TOKEN_KEY_NAME) if config is not None else None
    return token or os.environ.get("HF_TOKEN")


def _cli_overrides(argv: list[str]) -> list[str]:
    """The Hydra-style ``key=value`` arguments of a command line (flags and paths dropped)."""
    return [arg for arg in argv if "=" in arg and not arg.startswith("-")]


class LoaderArguments(NamedTuple):
    """What `load_config` takes: command-line overrides, the initial dict, and the env.yaml choice
    (a path, the loader's SEARCH, or None for none)."""

    args: list[str]
    initial: DictConfig | None
    env_yaml: Any


class GlobalConfigDictParserConfig(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    dotenv_path: Path | None = None
    initial_global_config_dict: DictConfig | None = None
    skip_load_from_cli: bool = False
    skip_load_from_dotenv: bool = False
    hide_secrets: bool = False
    offline: bool = False

    def loader_arguments(self, args: list[str] | None = None) -> LoaderArguments:
        """`load_config`'s arguments under these settings; `args` replace the command line's overrides."""
        from nemo_gym.config.loader import SEARCH

        if args is None:
            args = [] if self.skip_load_from_cli else _cli_overrides(sys.argv[1:])
        if self.skip_load_from_dotenv:
            env_yaml: Any = None
        elif self.dotenv_path is not None:
            env_yaml = self.dotenv_path
        else:
            env_yaml = SEARCH
        return LoaderArguments(list(args), self.initial_global_config_dict, env_yaml)

    # A config that satisfies the policy-model references without a real model.
    NO_MODEL_GLOBAL_CONFIG_DICT: ClassVar[DictConfig] = DictConfig(
        {
            POLICY_BASE_URL_KEY_NAME: "",
            POLICY_API_KEY_KEY_NAME: "",
            POLICY_MODEL_NAME_KEY_NAME: "",
            POLICY_MODEL_KEY_NAME: {"responses_api_models": {"dummy_model": {"entrypoint": "app.py"}}},
        }
    )


class GlobalConfigDictParser(BaseModel):
    """Builds a global config with our loader (files, env.yaml, overrides; interpolations resolved)."""

    def parse(self, parse_config: GlobalConfigDictParserConfig | None = None) -> DictConfig:
        """Files < env.yaml < ``initial_global_config_dict`` < command line, interpolations resolved."""
        from nemo_gym.config import load_config

        args, initial, env_yaml = (parse_config or GlobalConfigDictParserConfig()).loader_arguments()
        config = load_config(args, initial=initial, env_yaml=env_yaml).config
        OmegaConf.set_struct(config, False)
        return config


def _handed_over_config() -> DictConfig | None:
    """The config `ng_run` handed this process (its context file, or the inline env var); else None."""
    from nemo_gym.server.context import CONFIG_FILE_VAR, INSTANCE_VAR, context_from_file

    path = os.environ.get(CONFIG_FILE_VAR)
    name = os.environ.get(INSTANCE_VAR)
    if path and name:
        return OmegaConf.create(context_from_file(path, name).global_config)
    inline = os.environ.get(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME)
    return OmegaConf.create(inline) if inline else None


def _cached(config: DictConfig) -> DictConfig:
    global _GLOBAL_CONFIG_DICT
    _GLOBAL_CONFIG_DICT = config
    _apply_verbosity(config)
    return config


def maybe_get_global_config_dict() -> DictConfig | None:
    """The config when this process already has one (cached, or handed over by ``ng_run``); else None."""
    if _GLOBAL_CONFIG_DICT is not None:
        return _GLOBAL_CONFIG_DICT
    config = _handed_over_config()
    return None if config is None else _cached(config)


def get_global_config_dict(
    global_config_dict_parser_config: GlobalConfigDictParserConfig | None = None,
    global_config_dict_parser_cls: type[GlobalConfigDictParser] = GlobalConfigDictParser,
) -> DictConfig:
    """The running global config (loaded once per process, then cached)."""
    if _GLOBAL_CONFIG_DICT is not None:
        return _GLOBAL_CONFIG_DICT
    config = _handed_over_config()
    if config is None:
        config = global_config_dict_parser_cls().parse(global_config_dict_parser_config)
    return _cached(config)


def set_global_config_dict(
    global_config_dict_parser_config: GlobalConfigDictParserConfig | None = None,
    global_config_dict_parser_cls: type[GlobalConfigDictParser] = GlobalConfigDictParser,
) -> None:
    global _GLOBAL_CONFIG_DICT
    _GLOBAL_CONFIG_DICT = global_config_dict_parser_cls().parse(global_config_dict_parser_config)


def reset_global_config_dict() -> None:
    """Forget the cached config (tests)."""
    global _GLOBAL_CONFIG_DICT
    _GLOBAL_CONFIG_DICT = None


def _apply_verbosity(config: DictConfig) -> None:
    if config.get(VERBOSE_KEY_NAME):
        logging.basicConfig(level=logging.DEBUG)
        logging.getLogger().setLevel(logging.DEBUG)


def get_first_server_config_dict(global_config_dict: Any, top_level_path: str) -> Any:
    """The implementation config of an instance: ``config[name][<server type>][<impl>]``."""
    node = global_config_dict[top_level_path]
    node = next(iter(node.values()))
    return next(iter(node.values()))
