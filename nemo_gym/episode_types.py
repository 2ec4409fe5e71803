"""The episode wire types of environment servers: who an episode is, what task it runs, and
what comes back (a typed result, or a failure the collector can act on).

An episode is one physical attempt of one logical rollout (`EpisodeId`), running one task of a
named taskset (`TaskId`). Its request carries the task's input already shaped for the
environment's protocol (`MaterializedTask`); its response carries exactly one of `result` or
`failure`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from nemo_gym.failure_kinds import FailureKind, FailureStage


class ClosedModel(BaseModel):
    """A wire body that rejects keys it does not define: a client's misspelt key is a 422 naming it,
    not a field silently dropped."""

    model_config = ConfigDict(extra="forbid")


_ATTEMPT_SUFFIX = re.compile(r"-a[1-9][0-9]*$")
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class EpisodeId(BaseModel):
    """One attempt (`attempt`, from 0) of the rollout `rollout_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rollout_id: str = Field(min_length=1, pattern=_ID_PATTERN)
    attempt: int = Field(default=0, ge=0)

    @field_validator("rollout_id")
    @classmethod
    def _no_attempt_suffix(cls, rollout_id: str) -> str:
        # `capture_key` appends `-a<N>` for retries; an id that already ends so would collide.
        if _ATTEMPT_SUFFIX.search(rollout_id):
            raise ValueError("rollout_id must not end with '-a<N>', which is reserved for attempt numbers")
        return rollout_id

    @property
    def capture_key(self) -> str:
        """The id model-call capture and rollout path prefixes use: `<rollout_id>` or `<rollout_id>-a<N>`."""
        return self.rollout_id if self.attempt == 0 else f"{self.rollout_id}-a{self.attempt}"


class TaskId(BaseModel):
    """A task of a taskset; blended runs name tasksets `<environment>:<taskset>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    taskset: str = Field(min_length=1)
    task_id: str = Field(min_length=1)


def is_materialized_task_row(row: Mapping[str, object]) -> bool:
    """Whether a dataset row is an episode envelope (`task_id` object + `task_input`).

    Only the shape is checked: a malformed envelope must still take the episode path, where
    validation names what is wrong, instead of being mistaken for a flat legacy row.
    """
    return isinstance(row.get("task_id"), Mapping) and "task_input" in row


class EpisodeFailure(ClosedModel):
    """A failure as it travels and as it is stored: why (`failure_reason`), whether collection
    may try the episode again (`terminal`), and optionally its kind and stage."""

    failure_reason: str = Field(max_length=2000)
    terminal: bool
    failure_kind: FailureKind = None
    stage: FailureStage | None = None

    @model_serializer(mode="wrap")
    def _drop_unknown_metadata(self, handler: SerializerFunctionWrapHandler) -> Any:
        # An unclassified failure has no kind or stage; leaving them out keeps records minimal.
        data = handler(self)
        for key in ("failure_kind", "stage"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


TaskInputT = TypeVar("TaskInputT", bound=BaseModel)
EpisodeResultT = TypeVar("EpisodeResultT")


class MaterializedTask(ClosedModel, Generic[TaskInputT]):
    """A task's durable identity and its input in the protocol's own shape."""

    task_id: TaskId
    task_input: TaskInputT


class BaseEpisodeRequest(ClosedModel, Generic[TaskInputT]):
    """What an environment server's `/run` receives."""

    episode_id: EpisodeId
    task: MaterializedTask[TaskInputT]


class BaseEpisodeResponse(ClosedModel, Generic[EpisodeResultT]):
    """What an environment server's `/run` answers: exactly one of `result` and `failure`."""

    episode_id: EpisodeId
    task_id: TaskId
    result: EpisodeResultT | None = None
    failure: EpisodeFailure | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> BaseEpisodeResponse[EpisodeResultT]:
        if (self.result is None) == (self.failure is None):
            raise ValueError("an episode response needs exactly one of result or failure")
        return self


__all__ = [
    "BaseEpisodeRequest",
    "BaseEpisodeResponse",
    "EpisodeFailure",
    "EpisodeId",
    "MaterializedTask",
    "TaskId",
    "is_materialized_task_row",
]
