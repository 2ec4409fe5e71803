"""Our own servers refuse unknown config keys at start, with the key, the file and a suggestion;
NeMo Gym keys we do not implement pass at NeMo Gym's default and fail otherwise."""

from __future__ import annotations

import pytest

from nemo_gym.config import ConfigError
from nemo_gym.server.context import RuntimeContext
from responses_api_agents.simple_agent.app import SimpleAgent
from responses_api_models.openai_model.app import OpenAIModel
from responses_api_models.vllm_model.app import VLLMModel

VLLM = {"entrypoint": "app.py", "port": 1, "base_url": "http://127.0.0.1:1/v1", "api_key": "k", "model": "m"}


def context_for(impl: dict) -> RuntimeContext:
    return RuntimeContext(
        global_config={"policy_model": {"responses_api_models": {"vllm_model": impl}}},
        origins={"policy_model": "configs/mine.yaml"},
        instance_name="policy_model",
        session_secret="s",
    )


def test_a_misspelt_adapter_key_names_key_file_and_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        VLLMModel.from_context(context_for({**VLLM, "retrun_token_id_information": True}))
    assert str(caught.value) == (
        "config key 'policy_model.responses_api_models.vllm_model.retrun_token_id_information' "
        "(from configs/mine.yaml): is not a key of this server (VLLMModel); "
        "did you mean `return_token_id_information`?"
    )


def test_nemo_gym_keys_pass_at_their_default_and_fail_otherwise() -> None:
    stock = {**VLLM, "uses_interleaved_reasoning": True, "default_headers": {}, "endpoint_file": None}
    assert (
        VLLMModel.from_context(context_for({**stock, "domain": "agent", "description": "x"})).config.model
        == "m"
    )
    with pytest.raises(
        ConfigError, match=r"use_completions_api' \(from configs/mine.yaml\): is not supported"
    ):
        VLLMModel.from_context(context_for({**VLLM, "use_completions_api": True}))
    with pytest.raises(ConfigError, match="use prefix_token_ids: auto|required"):
        VLLMModel.from_context(context_for({**VLLM, "supply_prefix_token_ids": True}))


def test_agent_and_openai_model_are_strict_too() -> None:
    agent = {
        "entrypoint": "app.py",
        "port": 2,
        "model_server": {"type": "responses_api_models", "name": "policy_model"},
        "max_step": 3,
    }
    context = RuntimeContext(
        global_config={"a": {"responses_api_agents": {"simple_agent": agent}}},
        origins={},
        instance_name="a",
        session_secret="s",
    )
    with pytest.raises(ConfigError, match="did you mean `max_steps`"):
        SimpleAgent.from_context(context)
    openai_impl = {
        "entrypoint": "app.py",
        "openai_base_url": "https://x/v1",
        "openai_api_key": "k",
        "openai_modle": "m",
    }
    context = RuntimeContext(
        global_config={"o": {"responses_api_models": {"openai_model": openai_impl}}},
        origins={},
        instance_name="o",
        session_secret="s",
    )
    with pytest.raises(ConfigError, match="did you mean `openai_model`"):
        OpenAIModel.from_context(context)
