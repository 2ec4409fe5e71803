"""Record an agent loop as a NeMo Gym trajectory (`ng_trajectory`) while it runs.

The recorder builds the JSON form of a `TrajectoryRecord` directly from the dicts the loop
already holds: it keeps references to the request inputs and response items (no copies) and
validates nothing on the way, so an agent with observability on pays for a few small dicts per
step. `nemo_gym.rollout_observability.TrajectoryRecord.model_validate` accepts what it produces.

Besides what NeMo Gym's simple_agent records (invocation, turns, tool calls, gaps), each model
call is listed with its response id, status and the token counts of its `usage`, so a rollout's
token totals (`ng_perf`) are known without a model-call capture on the model server.
"""

from __future__ import annotations

from time import perf_counter, time
from typing import Any

MODEL_SERVER_TYPE = "responses_api_models"


def _token_stats(usage: Any) -> dict[str, int | None]:
    if not isinstance(usage, dict):
        return {}
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    stats = {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "reasoning_tokens": output_details.get("reasoning_tokens")
        if isinstance(output_details, dict)
        else None,
        "total_tokens": usage.get("total_tokens"),
        "cached_tokens": input_details.get("cached_tokens") if isinstance(input_details, dict) else None,
    }
    return {key: value for key, value in stats.items() if type(value) is int and value >= 0}


class TrajectoryRecorder:
    """One invocation of an agent loop (`invocation_id`) within the rollout `rollout_id`."""

    __slots__ = (
        "_call_started",
        "_tool_started",
        "conversation_prefix",
        "gaps",
        "invocation_id",
        "model_calls",
        "model_name",
        "model_refs",
        "rollout_id",
        "status",
        "task_id",
        "tool_calls",
        "turns",
    )

    def __init__(self, model_name: str, *, invocation_id: str, task_id: str, rollout_id: str) -> None:
        self.model_name = model_name
        self.invocation_id = invocation_id
        self.task_id = task_id
        self.rollout_id = rollout_id
        self.turns: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.model_calls: list[dict[str, Any]] = []
        self.model_refs: list[dict[str, Any]] = []
        self.gaps: list[dict[str, Any]] = []
        self.status = "completed"
        self.conversation_prefix: list[Any] = []
        self._call_started = (0.0, 0.0)
        self._tool_started = (0.0, 0.0)

    # ---- model calls ------------------------------------------------------------------
    def model_call_started(self) -> None:
        self._call_started = (time(), perf_counter())

    def model_call_done(self, request_input: list[Any], response: dict[str, Any]) -> None:
        """One turn: the input the model saw and the response it gave."""
        started_at, started = self._call_started
        duration_ms = (perf_counter() - started) * 1000
        turn_no = len(self.turns) + 1
        output = response.get("output") or []
        reasoning = [item for item in output if item.get("type") == "reasoning"]
        answer = [item for item in output if item.get("type") != "reasoning"] if reasoning else output
        response_id = response.get("id")
        refs: list[dict[str, Any]] = []
        if response_id:
            model_ref = {"type": MODEL_SERVER_TYPE, "name": self.model_name}
            ref = {"model_call_id": None, "model_ref": model_ref, "response_id": response_id}
            refs.append(ref)
            self.model_refs.append(ref)
            self.model_calls.append(
                {
                    "started_at": started_at,
                    "completed_at": started_at + duration_ms / 1000,
                    "duration_ms": duration_ms,
                    "response_metadata": {
                        "response_id": response_id,
                        "model_ref": model_ref,
                        "model": response.get("model"),
                        "response_status": response.get("status"),
                    },
                    "token_stats": _token_stats(response.get("usage")),
                }
            )
        else:
            self.gaps.append(
                {
                    "code": "model_call_reference_unavailable",
                    "invocation_id": self.invocation_id,
                    "detail": f"turn:{turn_no}",
                }
            )
        self.turns.append(
            {
                "invocation_id": self.invocation_id,
                "task_id": self.task_id,
                "rollout_id": self.rollout_id,
                "turn_no": turn_no,
                "timestamp": started_at,
                "question": request_input,
                "answer": answer,
                "reasoning_content": reasoning or None,
                "resolved": None,
                "step_count": len(self.tool_calls),
                "model_calls": refs,
            }
        )

    # ---- tool calls -------------------------------------------------------------------
    def tool_call_started(self) -> None:
        self._tool_started = (time(), perf_counter())

    def tool_call_done(self, call: dict[str, Any], output: str, error_type: str | None) -> None:
        started_at, started = self._tool_started
        duration_ms = (perf_counter() - started) * 1000
        self.tool_calls.append(
            {
                "kind": "tool_call",
                "invocation_id": self.invocation_id,
                "tool_call_id": call.get("call_id") or "",
                "tool_name": call.get("name"),
                "started_at": started_at,
                "completed_at": started_at + duration_ms / 1000,
                "duration_ms": duration_ms,
                "timing_source": "executor",
                "status": "failed" if error_type else "completed",
                "error_type": error_type,
                "output": output,
            }
        )
        # A turn's step count includes the tool calls its own answer asked for.
        if self.turns:
            self.turns[-1]["step_count"] = len(self.tool_calls)

    # ---- the record -------------------------------------------------------------------
    def invocation(self, conversation: list[Any]) -> dict[str, Any]:
        return {
            "kind": "agent_invocation",
            "invocation_id": self.invocation_id,
            "status": self.status,
            "model_calls": self.model_refs,
            "conversation": conversation,
        }

    def tool_observations(self) -> list[dict[str, Any]]:
        """The tool calls as `ToolCallObservation` records (an observation bundle has no outputs)."""
        return [{key: value for key, value in call.items() if key != "output"} for call in self.tool_calls]

    def set_resolved(self, resolved: Any) -> None:
        """The verifier's `resolved` verdict goes on the last turn; without one, a gap says so."""
        if isinstance(resolved, bool) and self.turns:
            self.turns[-1]["resolved"] = resolved
        else:
            self.gaps.append({"code": "resolution_unavailable", "invocation_id": self.invocation_id})

    def record(self, conversation: list[Any], *, task_id: str | None = None) -> dict[str, Any]:
        """The `TrajectoryRecord` JSON; `task_id` re-labels it (and its turns) once the row is known."""
        if task_id is not None and task_id != self.task_id:
            self.task_id = task_id
            for turn in self.turns:
                turn["task_id"] = task_id
        return {
            "schema_version": "1.0",
            "task_id": self.task_id,
            "rollout_id": self.rollout_id,
            "invocations": [self.invocation(conversation)],
            "turns": self.turns,
            "model_calls": self.model_calls,
            "tool_calls": self.tool_calls,
            "gaps": self.gaps,
        }


def trajectory_task_id(row: dict[str, Any]) -> str:
    """The task id a trajectory carries: the row's own id field, else its task index."""
    for key in ("task_id", "problem_id", "instance_id", "_ng_task_index"):
        value = row.get(key)
        if value is not None:
            return str(value)
    return "unknown"


__all__ = ["TrajectoryRecorder", "trajectory_task_id"]
