"""nemo_gym.config_types: server references as NeMo Gym configs write them, and metrics bodies."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from pydantic import BaseModel, ValidationError

from nemo_gym.config_types import (
    AgentServerRef,
    AggregateMetrics,
    AggregateMetricsRequest,
    BaseServerConfig,
    DatasetConfig,
    Domain,
    ModelServerRef,
    ResourcesServerRef,
    is_server_ref,
)


class _AgentConfig(BaseModel):
    model_server: ModelServerRef
    resources_server: ResourcesServerRef


def test_refs_from_yaml_shaped_config():
    cfg = OmegaConf.create(
        """
model_server: {type: responses_api_models, name: policy_model}
resources_server: {type: resources_servers, name: math}
"""
    )
    parsed = _AgentConfig.model_validate(OmegaConf.to_container(cfg))
    assert parsed.model_server == ModelServerRef(type="responses_api_models", name="policy_model")
    assert parsed.resources_server.name == "math"
    assert AgentServerRef(type="responses_api_agents", name="a").model_dump() == {
        "type": "responses_api_agents",
        "name": "a",
    }


def test_ref_type_is_checked():
    with pytest.raises(ValidationError):
        ModelServerRef(type="resources_servers", name="x")
    with pytest.raises(ValidationError):
        ResourcesServerRef(name="x")


def test_is_server_ref():
    ref = is_server_ref(OmegaConf.create({"type": "resources_servers", "name": "r"}))
    assert isinstance(ref, ResourcesServerRef)
    assert is_server_ref({"type": "nope", "name": "r"}) is None
    assert is_server_ref("text") is None


def test_domain():
    assert Domain("math") is Domain.MATH
    assert Domain.INSTRUCTION_FOLLOWING == "instruction_following"
    assert {d.value for d in Domain} >= {"math", "coding", "agent", "knowledge", "games", "rlhf", "other"}
    with pytest.raises(ValueError):
        Domain("cooking")


def test_base_server_config():
    config = BaseServerConfig(host="127.0.0.1", port=0)
    assert config.model_dump() == {"host": "127.0.0.1", "port": 0, "num_workers": None}
    with pytest.raises(ValidationError):
        BaseServerConfig(host="h")


def test_aggregate_metrics_bodies():
    request = AggregateMetricsRequest(verify_responses=[{"_ng_task_index": 0, "reward": 1.0}])
    assert request.verify_responses[0]["reward"] == 1.0
    assert AggregateMetrics().model_dump() == {
        "group_level_metrics": [],
        "agent_metrics": {},
        "key_metrics": {},
        "perf_summary": None,
        "repeat_level_metrics": [],
    }


def test_dataset_config():
    dataset = DatasetConfig(name="d", type="example", jsonl_fpath="data/example.jsonl")
    assert dataset.num_repeats == 1 and dataset.prepare_dependencies == []
    with pytest.raises(ValidationError):
        DatasetConfig(name="d", type="bogus", jsonl_fpath="x")
