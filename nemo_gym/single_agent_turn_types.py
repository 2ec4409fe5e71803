"""Wire types of the built-in single-agent-turn protocol (`environment_servers/single_agent_turn`).

One episode = seed a resources session, let one agent answer the task through a session,
verify the answer on the resources server. The result is the resources server's verify answer
(its fields at the top level, so a stored record looks like an agent's `/run` result) plus the
agent's observations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, model_validator

from nemo_gym.base_resources_server import BaseVerifyResponse
from nemo_gym.episode_types import BaseEpisodeRequest, BaseEpisodeResponse, EpisodeFailure
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.rollout_observability import AgentObservationBundle


class SingleAgentTurnTaskInput(BaseModel):
    """The task of one turn: the model request, and the row's other fields as `task_data`."""

    model_config = ConfigDict(extra="forbid")

    responses_create_params: NeMoGymResponseCreateParamsNonStreaming
    task_data: dict[str, JsonValue]

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_fields(cls, value: Any) -> Any:
        """A flat row's fields other than `responses_create_params` go into `task_data`.

        A field given both inside and outside `task_data` must agree.
        """
        if not isinstance(value, Mapping):
            return value
        fields = dict(value)
        params = fields.pop("responses_create_params", None)
        task_data = fields.pop("task_data", {})
        if not isinstance(task_data, Mapping):
            return value  # the field's own validation names the problem
        for key in fields.keys() & task_data.keys():
            if fields[key] != task_data[key]:
                raise ValueError(f"task field {key!r} has different values inside and outside task_data")
        return {"responses_create_params": params, "task_data": {**task_data, **fields}}


class SingleAgentTurnResult(BaseVerifyResponse):
    """The resources server's verify answer (its own extra fields kept) and the agent's observations."""

    model_config = ConfigDict(extra="allow")

    ng_agent_observations: AgentObservationBundle | None = None


class SingleAgentTurnFailure(EpisodeFailure):
    """A failure, with whatever the agent had answered when it happened (for diagnosis)."""

    partial_response: NeMoGymResponse | None = None


class SingleAgentTurnRequest(BaseEpisodeRequest[SingleAgentTurnTaskInput]):
    pass


class SingleAgentTurnResponse(BaseEpisodeResponse[SingleAgentTurnResult]):
    failure: SingleAgentTurnFailure | None = None


__all__ = [
    "SingleAgentTurnFailure",
    "SingleAgentTurnRequest",
    "SingleAgentTurnResponse",
    "SingleAgentTurnResult",
    "SingleAgentTurnTaskInput",
]
