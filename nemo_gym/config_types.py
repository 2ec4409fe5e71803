"""Config-facing types that environments import: server references, domains, metrics bodies.

A server reference is written in YAML as ``{type: responses_api_models, name: policy_model}``:
the type of the referenced server and its instance name in the global config.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

__all__ = [
    "OmegaConf",  # NeMo Gym code imports OmegaConf from here
    "ROLLOUT_PATH_PREFIX",
    "TOKEN_CAPTURE_PATH_SEGMENT",
    "BaseNeMoGymCLIConfig",
    "ModelServerRef",
    "ResourcesServerRef",
    "AgentServerRef",
    "EnvironmentServerRef",
    "ServerRef",
    "ServerRefTypeAdapter",
    "is_server_ref",
    "Domain",
    "BaseServerConfig",
    "BaseRunServerConfig",
    "BaseRunServerInstanceConfig",
    "DatasetType",
    "JsonlDatasetGitlabIdentifer",
    "DownloadJsonlDatasetGitlabConfig",
    "JsonlDatasetHuggingFaceIdentifer",
    "GitlabDatasetSource",
    "HuggingFaceDatasetSource",
    "DatasetSource",
    "DatasetConfig",
    "AggregateMetricsRequest",
    "AggregateMetrics",
]

# First path segment of a rollout-prefixed request (`nemo_gym.rollout_correlation`).
ROLLOUT_PATH_PREFIX = "ng-rollout"
# Second segment, after the rollout id, of a request whose tokens are captured for training.
TOKEN_CAPTURE_PATH_SEGMENT = "training-token-capture"


class BaseNeMoGymCLIConfig(BaseModel):
    """The keys of one command (NeMo Gym's base for command configs).

    Our commands print `--help` and refuse unknown keys themselves (nemo_gym.cli.keys).
    """


class ModelServerRef(BaseModel):
    type: Literal["responses_api_models"]
    name: str


class ResourcesServerRef(BaseModel):
    type: Literal["resources_servers"]
    name: str


class AgentServerRef(BaseModel):
    type: Literal["responses_api_agents"]
    name: str


class EnvironmentServerRef(BaseModel):
    type: Literal["environment_servers"]
    name: str


ServerRef = Annotated[
    ModelServerRef | ResourcesServerRef | AgentServerRef | EnvironmentServerRef,
    Field(discriminator="type"),
]
ServerRefTypeAdapter: TypeAdapter = TypeAdapter(ServerRef)


def is_server_ref(config_dict: Any) -> ModelServerRef | ResourcesServerRef | AgentServerRef | None:
    """The reference a config node denotes, or None when it is not one."""
    if not hasattr(config_dict, "get"):
        return None
    try:
        return ServerRefTypeAdapter.validate_python(dict(config_dict))
    except (ValidationError, TypeError, ValueError):
        return None


class Domain(str, Enum):  # noqa: UP042 (str() is the member name, as in NeMo Gym)
    """The capability a resources server mainly evaluates or trains."""

    MATH = "math"
    CODING = "coding"
    AGENT = "agent"
    KNOWLEDGE = "knowledge"
    INSTRUCTION_FOLLOWING = "instruction_following"
    LONG_CONTEXT = "long_context"
    SAFETY = "safety"
    GAMES = "games"
    TRANSLATION = "translation"
    E2E = "e2e"
    RLHF = "rlhf"
    OTHER = "other"


class BaseServerConfig(BaseModel):
    """Where a server listens (e.g. the head server handed to a ``ServerClient``).

    Not the same class as ``nemo_gym.server.base.BaseServerConfig`` (the full instance config
    with defaults): this one mirrors NeMo Gym's ``config_types.BaseServerConfig``, in which
    ``host`` and ``port`` are required.
    """

    host: str
    port: int
    num_workers: int | None = None


class BaseRunServerConfig(BaseServerConfig):
    entrypoint: str
    domain: Domain | None = None


class BaseRunServerInstanceConfig(BaseRunServerConfig):
    name: str


DatasetType = Literal["train", "validation", "example"]


class JsonlDatasetGitlabIdentifer(BaseModel):
    dataset_name: str
    version: str
    artifact_fpath: str


class DownloadJsonlDatasetGitlabConfig(JsonlDatasetGitlabIdentifer, BaseNeMoGymCLIConfig):
    """Where a dataset of NeMo Gym's GitLab model registry is written once downloaded."""

    output_fpath: str


class JsonlDatasetHuggingFaceIdentifer(BaseModel):
    repo_id: str
    artifact_fpath: str | None = None


class GitlabDatasetSource(BaseModel):
    type: Literal["gitlab"]
    dataset_name: str
    version: str
    artifact_fpath: str


class HuggingFaceDatasetSource(BaseModel):
    type: Literal["huggingface"]
    repo_id: str
    artifact_fpath: str | None = None


DatasetSource = Annotated[GitlabDatasetSource | HuggingFaceDatasetSource, Field(discriminator="type")]


class DatasetConfig(BaseModel):
    name: str
    type: DatasetType
    jsonl_fpath: str
    prepare_script: Path | None = None
    prepare_dependencies: list[str] = Field(default_factory=list)
    taskset: str | None = Field(default=None, min_length=1)
    num_repeats: int = Field(default=1, ge=1)
    source: DatasetSource | None = None
    gitlab_identifier: JsonlDatasetGitlabIdentifer | None = None
    huggingface_identifier: JsonlDatasetHuggingFaceIdentifer | None = None
    license: str | None = None


class AggregateMetricsRequest(BaseModel):
    """Body of ``POST /aggregate_metrics``: the verify responses of a run.

    Each item holds at least the task index (``_ng_task_index``) and ``reward``.
    """

    verify_responses: list[dict[str, Any]]


class AggregateMetrics(BaseModel):
    """Answer of ``/aggregate_metrics``; flat string keys, ready for W&B / MLflow."""

    group_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
    agent_metrics: dict[str, Any] = Field(default_factory=dict)
    key_metrics: dict[str, Any] = Field(default_factory=dict)
    perf_summary: dict[str, Any] | None = None
    repeat_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
