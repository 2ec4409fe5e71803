"""The observability records rollout collection writes on each result, as NeMo Gym 0.7.0 does.

For every finished rollout the collector
- turns an environment server's episode answer into the record it stores (`_episode_record`);
- projects whatever evidence the result carries (an agent's own `ng_trajectory`, an
  environment server's `ng_agent_observations`, a model server's `ng_model_call_capture`)
  into one standard `ng_trajectory` (`_attach_trajectory_record`);
- with observability on, sums that trajectory into `ng_perf` (turns, tool calls, tokens,
  latency) (`_attach_ng_perf`).
It also names the keys that route a failed rollout (`_ng_failure_class`, `_ng_no_persist`,
`_ng_failure_terminal`) and decides which stored failures resume must not retry.

These names are what NeMo Gym servers import from `nemo_gym.rollout_collection`; the
collection loop re-exports them from there.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from nemo_gym.global_config import ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME
from nemo_gym.rollout_correlation import maybe_rollout_id_from_run_body
from nemo_gym.rollout_observability import (
    AgentInvocation,
    AgentObservationBundle,
    CallIndex,
    IndexedCall,
    ModelCallRef,
    ObservationGap,
    ToolCallObservation,
    TrajectoryModelCall,
    TrajectoryRecord,
    TrajectoryResponseMetadata,
    TrajectoryTokenStats,
    TrajectoryToolCall,
    TrajectoryTurn,
)

logger = logging.getLogger(__name__)

# Keys a failure row carries (set by agents, environment servers or the collector).
NG_FAILURE_CLASS_KEY = "_ng_failure_class"
# A failure that is written nowhere (killed, or never dispatched): its absence makes resume retry it.
NG_NO_PERSIST_KEY = "_ng_no_persist"
# A stored failure resume must never retry.
NG_TERMINAL_KEY = "_ng_failure_terminal"
NG_DISPATCH_DRAINED_KEY = "_ng_dispatch_drained"
NG_TASK_ID_KEY = "_ng_task_id"
NG_FAILURE_MESSAGE_KEY = "_ng_failure_message"
ENVIRONMENT_SERVER_FAILURE_CLASS = "environment_server_failed"
AGENT_REQUEST_FAILED_FAILURE_CLASS = "agent_request_failed"
AGENT_RUN_ERROR_FAILURE_CLASS = "agent_run_error"

NG_TRAJECTORY_KEY = "ng_trajectory"
NG_PERF_KEY = "ng_perf"
NG_AGENT_OBSERVATIONS_KEY = "ng_agent_observations"
NG_MODEL_CALL_CAPTURE_KEY = "ng_model_call_capture"
_CAPTURE_PAYLOAD_KEYS = ("request", "response", "request_raw", "response_raw")
_CAPTURE_METADATA_KEYS = tuple(TrajectoryResponseMetadata.model_fields)


# ------------------------------------------------------------------------------ failures


def is_terminal_failure(record: Mapping[str, Any], *, retry_terminal_timeouts: bool = False) -> bool:
    """Whether resume must leave this stored failure alone.

    A failure is terminal when it is stamped `_ng_failure_terminal`. With
    `retry_terminal_timeouts` (for agents whose older builds stamped every timeout terminal), a
    per-task timeout and the repairable environment faults are retried anyway (the normal cap on
    attempts still applies), and a skipped sample stays terminal.
    """
    if retry_terminal_timeouts:
        failure_class = record.get(NG_FAILURE_CLASS_KEY)
        if failure_class in ("timeout_exceeded", "reference_missing", "eval_missing", "transport_ineligible"):
            return False
        if failure_class == "skipped":
            return True
    return bool(record.get(NG_TERMINAL_KEY))


def _is_collector_key(key: str) -> bool:
    return key.startswith("_ng_") or key in (NG_TRAJECTORY_KEY, NG_MODEL_CALL_CAPTURE_KEY, NG_PERF_KEY)


def _episode_record(response: dict[str, Any]) -> dict[str, Any]:
    """The record stored for an environment server's episode answer.

    A `failure` becomes a failure-sidecar row (terminal or not, as the server said); a `result`
    is stored as returned plus `_ng_task_id`. A result may not use the keys the collector writes.
    """
    task_id = response.get("task_id")
    failure = response.get("failure")
    if failure is not None:
        if not isinstance(failure, Mapping):
            raise ValueError(
                f"the environment server's answer for task {task_id!r} has a non-object failure: {failure!r}"
            )
        record: dict[str, Any] = {
            NG_TASK_ID_KEY: task_id,
            NG_FAILURE_CLASS_KEY: ENVIRONMENT_SERVER_FAILURE_CLASS,
            NG_TERMINAL_KEY: bool(failure.get("terminal", False)),
            NG_FAILURE_MESSAGE_KEY: failure.get("failure_reason"),
        }
        if failure.get("stage") is not None:
            record["_ng_failure_stage"] = failure["stage"]
        if failure.get("partial_response") is not None:
            record["_ng_failure_partial_response"] = failure["partial_response"]
        return record
    result = response.get("result")
    if not isinstance(result, Mapping):
        raise ValueError(
            f"the environment server's answer for task {task_id!r} has a non-object result: {result!r}"
        )
    reserved = sorted(key for key in result if _is_collector_key(key))
    if reserved:
        raise ValueError(
            f"the environment server's result for task {task_id!r} uses keys rollout collection writes: {reserved}"
        )
    return {**result, NG_TASK_ID_KEY: task_id}


# ------------------------------------------------------------------------------ ng_trajectory


def _trajectory_identity(row: Mapping[str, Any]) -> tuple[str, str]:
    """(task id, rollout id) of a row: its own id field (a materialized task's `task_id.task_id`)
    else its task index; its rollout id else `<task index>-<rollout index>`."""
    task_id = next(
        (str(row[key]) for key in ("task_id", "problem_id", "instance_id") if row.get(key) is not None),
        None,
    )
    if isinstance(row.get("task_id"), Mapping) and row["task_id"].get("task_id") is not None:
        task_id = str(row["task_id"]["task_id"])  # a materialized task names its id inside
    if task_id is None:
        task_id = str(row[TASK_INDEX_KEY_NAME])
    rollout_id = (
        maybe_rollout_id_from_run_body(row) or f"{row[TASK_INDEX_KEY_NAME]}-{row[ROLLOUT_INDEX_KEY_NAME]}"
    )
    return task_id, rollout_id


def _nonnegative_int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _turn_content(request: Any, response: Any) -> tuple[Any, Any, Any, int]:
    """Question, answer, reasoning and tool-call count of one captured call, in either dialect."""
    question = request.get("input", request.get("messages")) if isinstance(request, dict) else request
    if isinstance(request, dict) and isinstance(request.get("input"), list):
        question = [
            {"type": "message", **item}
            if isinstance(item, dict) and "role" in item and "type" not in item
            else item
            for item in request["input"]
        ]
    if isinstance(response, dict) and isinstance(response.get("output"), list):
        items = [item for item in response["output"] if isinstance(item, dict)]
        reasoning = [item for item in items if item.get("type") == "reasoning"] or None
        answer = [item for item in items if item.get("type") != "reasoning"]
        return question, answer, reasoning, sum(1 for item in answer if item.get("type") == "function_call")
    choices = response.get("choices") if isinstance(response, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        answer = {
            key: value for key, value in message.items() if key not in ("reasoning_content", "reasoning")
        }
        return question, answer, reasoning, len(message.get("tool_calls") or [])
    return question, None, None, 0


def _turns_from_model_calls(
    task_id: str,
    rollout_id: str,
    invocations: list[AgentInvocation],
    model_calls: list[TrajectoryModelCall],
    resolved: Any,
) -> list[TrajectoryTurn]:
    """Turns for an agent that sent no trajectory: one per answered call an invocation references.

    Calls no invocation references (a judge's, say) stay as evidence but are not the agent's turns.
    """
    owner_by_call_id: dict[str, str] = {}
    owner_by_response_id: dict[str, str] = {}
    for invocation in invocations:
        for ref in invocation.model_calls:
            if ref.model_call_id:
                owner_by_call_id[ref.model_call_id] = invocation.invocation_id
            if ref.response_id:
                owner_by_response_id[ref.response_id] = invocation.invocation_id
    turns: list[TrajectoryTurn] = []
    turn_numbers: Counter[str] = Counter()
    tool_counts: Counter[str] = Counter()
    for call in model_calls:
        if call.response is None:
            continue
        metadata = call.response_metadata
        owner = owner_by_call_id.get(call.model_call_id or "") or owner_by_response_id.get(
            metadata.response_id or ""
        )
        if owner is None:
            continue
        question, answer, reasoning, tool_calls = _turn_content(call.request, call.response)
        turn_numbers[owner] += 1
        turns.append(
            TrajectoryTurn(
                invocation_id=owner,
                task_id=task_id,
                rollout_id=rollout_id,
                turn_no=turn_numbers[owner],
                timestamp=call.started_at or call.completed_at or 0.0,
                question=question,
                answer=answer,
                reasoning_content=reasoning,
                step_count=tool_counts[owner],
                model_calls=[
                    ModelCallRef(
                        model_call_id=call.model_call_id,
                        model_ref=metadata.model_ref,
                        response_id=metadata.response_id,
                    )
                ],
            )
        )
        tool_counts[owner] += tool_calls
    if turns and isinstance(resolved, bool):
        turns[-1] = turns[-1].model_copy(update={"resolved": resolved})
    return turns


def _merge_observed_tools(
    tools: list[TrajectoryToolCall], observed: list[ToolCallObservation], invocations: list[AgentInvocation]
) -> None:
    """Lay an agent's tool observations over the trajectory's tool calls (by invocation and call id),
    with the outputs its conversations show."""
    outputs = {
        (invocation.invocation_id, item.call_id): item.output
        for invocation in invocations
        for item in invocation.conversation
        if getattr(item, "type", None) == "function_call_output"
    }
    positions = {(tool.invocation_id, tool.tool_call_id): index for index, tool in enumerate(tools)}
    for observation in observed:
        key = (observation.invocation_id, observation.tool_call_id)
        position = positions.get(key)
        existing = tools[position] if position is not None else None
        merged = existing.model_dump(mode="json") if existing is not None else {}
        update = observation.model_dump(mode="json", exclude_none=True)
        if existing is not None and observation.status == "unknown" and existing.status != "unknown":
            update.pop("status", None)  # an unknown status never overwrites a known one
        merged.update(update)
        if key in outputs:
            merged["output"] = outputs[key]
        projected = TrajectoryToolCall.model_validate(merged)
        if position is None:
            positions[key] = len(tools)
            tools.append(projected)
        else:
            tools[position] = projected


def _captured_model_call(raw: dict[str, Any]) -> TrajectoryModelCall:
    metadata = {key: raw[key] for key in _CAPTURE_METADATA_KEYS if raw.get(key) is not None}
    response = raw.get("response")
    if isinstance(response, dict) and isinstance(response.get("status"), str):
        metadata.setdefault("response_status", response["status"])
    return TrajectoryModelCall(
        model_call_id=raw.get("model_call_id"),
        started_at=raw.get("started_at"),
        completed_at=raw.get("completed_at"),
        duration_ms=raw.get("latency_total_ms"),
        request=raw["request"] if raw.get("request") is not None else raw.get("request_raw"),
        response=response if response is not None else raw.get("response_raw"),
        response_metadata=metadata,
        token_stats=TrajectoryTokenStats(
            prompt_tokens=_nonnegative_int(raw.get("tokens_in")),
            completion_tokens=_nonnegative_int(raw.get("tokens_out")),
            reasoning_tokens=_nonnegative_int(raw.get("tokens_reasoning")),
            total_tokens=_nonnegative_int(raw.get("tokens_total")),
            cached_tokens=_nonnegative_int(raw.get("cached_tokens")),
        ),
    )


def _build_trajectory_record(row: dict[str, Any], result: dict[str, Any]) -> TrajectoryRecord:
    """One standard trajectory from all the evidence a result carries.

    The agent's own `ng_trajectory` (if valid) is the base; `ng_agent_observations` adds
    invocations and tool timings; `ng_model_call_capture` adds or completes model calls (joined
    on `model_call_id`). Identity always comes from the row; a producer that disagrees gets its
    turns re-labelled and a gap. Missing evidence is stated as gaps.
    """
    task_id, rollout_id = _trajectory_identity(row)
    gaps: list[ObservationGap] = []
    raw_trajectory = result.get(NG_TRAJECTORY_KEY)
    produced = (
        _producer_trajectory(raw_trajectory, task_id, rollout_id, gaps)
        if isinstance(raw_trajectory, dict)
        else None
    )
    # Built without validation: the lists grow below, and the finished record is validated once.
    base = produced or TrajectoryRecord.model_construct(
        task_id=task_id, rollout_id=rollout_id, invocations=[], turns=[], model_calls=[], tool_calls=[]
    )
    raw_observations = result.get(NG_AGENT_OBSERVATIONS_KEY)
    if raw_observations is not None:
        _add_agent_observations(base, raw_observations, gaps)
    turns = sorted(base.turns, key=lambda turn: (turn.timestamp, turn.invocation_id, turn.turn_no))
    capture = result.get(NG_MODEL_CALL_CAPTURE_KEY)
    _add_model_call_capture(base.model_calls, capture if isinstance(capture, dict) else {}, gaps)

    if not isinstance(raw_trajectory, dict):
        # Without an agent trajectory, turns come from captured calls the invocations reference.
        turns = _turns_from_model_calls(
            task_id, rollout_id, base.invocations, base.model_calls, result.get("resolved")
        )
    if not base.model_calls:
        gaps.append(ObservationGap(code="model_calls_unavailable"))
    if not turns and produced is None:
        gaps.append(ObservationGap(code="turns_unavailable"))
    if not any(invocation.conversation for invocation in base.invocations):
        gaps.append(ObservationGap(code="conversation_unavailable"))
    return TrajectoryRecord(
        task_id=task_id,
        rollout_id=rollout_id,
        invocations=base.invocations,
        turns=turns,
        model_calls=base.model_calls,
        tool_calls=base.tool_calls,
        gaps=list({(gap.code, gap.invocation_id, gap.detail): gap for gap in gaps}.values()),
    )


def _producer_trajectory(
    raw_trajectory: dict[str, Any], task_id: str, rollout_id: str, gaps: list[ObservationGap]
) -> TrajectoryRecord | None:
    """The agent's own trajectory, its turns re-labelled if its identity differs; its gaps join `gaps`."""
    try:
        produced = TrajectoryRecord.model_validate(raw_trajectory)
    except Exception as exc:
        gaps.append(ObservationGap(code="producer_trajectory_invalid", detail=type(exc).__name__))
        return None
    mismatched = [
        name
        for name, theirs, ours in (
            ("task_id", produced.task_id, task_id),
            ("rollout_id", produced.rollout_id, rollout_id),
        )
        if theirs != ours
    ]
    if mismatched:
        gaps.append(ObservationGap(code="producer_trajectory_identity_mismatch", detail=",".join(mismatched)))
        relabelled = [
            turn.model_copy(update={"task_id": task_id, "rollout_id": rollout_id}) for turn in produced.turns
        ]
        produced = produced.model_copy(update={"turns": relabelled})
    gaps.extend(produced.gaps)
    return produced


def _add_agent_observations(
    base: TrajectoryRecord, raw_observations: Any, gaps: list[ObservationGap]
) -> None:
    """Invocations the trajectory lacks, and the tool timings the agent observed (in place)."""
    try:
        observations = AgentObservationBundle.model_validate(raw_observations)
        gaps.extend(observations.gaps)
        known = {invocation.invocation_id for invocation in base.invocations}
        base.invocations.extend(
            record
            for record in observations.records
            if isinstance(record, AgentInvocation) and record.invocation_id not in known
        )
        observed_tools = [
            record for record in observations.records if isinstance(record, ToolCallObservation)
        ]
        if observed_tools:
            _merge_observed_tools(base.tool_calls, observed_tools, base.invocations)
    except Exception as exc:
        gaps.append(ObservationGap(code="agent_observations_invalid", detail=type(exc).__name__))


def _add_model_call_capture(
    model_calls: list[TrajectoryModelCall], capture: dict[str, Any], gaps: list[ObservationGap]
) -> None:
    """Captured calls complete the trajectory's calls of the same id, or join them; their gaps too."""
    positions = {
        call.model_call_id: index for index, call in enumerate(model_calls) if call.model_call_id is not None
    }
    for raw_call in capture.get("calls") or []:
        if not isinstance(raw_call, dict):
            continue
        projected = _captured_model_call(raw_call)
        call_id = raw_call.get("model_call_id")
        position = positions.pop(call_id, None) if call_id is not None else None
        if position is None:
            model_calls.append(projected)
            continue
        merged = model_calls[position].model_dump(mode="json")
        update = projected.model_dump(mode="json", exclude_none=True)
        for nested in ("response_metadata", "token_stats"):
            merged[nested].update(update.pop(nested))
        merged.update(update)
        model_calls[position] = TrajectoryModelCall.model_validate(merged)
    for raw_gap in capture.get("gaps") or []:
        if isinstance(raw_gap, dict):
            try:
                gaps.append(ObservationGap.model_validate(raw_gap))
            except Exception:
                gaps.append(ObservationGap(code="model_call_capture_gap_invalid"))


def _strip_capture_payloads(result: dict[str, Any]) -> None:
    capture = result.get(NG_MODEL_CALL_CAPTURE_KEY)
    calls = capture.get("calls") if isinstance(capture, dict) else None
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            for key in _CAPTURE_PAYLOAD_KEYS:
                call.pop(key, None)


def _attach_trajectory_record(row: dict[str, Any], result: dict[str, Any]) -> None:
    """Replace the result's evidence with one standard `ng_trajectory`, in place.

    On success the capture's payload copies are dropped (the trajectory holds them). If the
    projection fails, the raw evidence stays and a `trajectory_projection_failed` gap is
    recorded where a reader will look for it; the rollout itself is never lost.
    """
    try:
        result[NG_TRAJECTORY_KEY] = _build_trajectory_record(row, result).model_dump(mode="json")
    except Exception as exc:
        result.pop(NG_TRAJECTORY_KEY, None)
        logger.warning("could not build the standard trajectory of a rollout", exc_info=True)
        gap = {"code": "trajectory_projection_failed", "detail": type(exc).__name__}
        for key in (NG_MODEL_CALL_CAPTURE_KEY, NG_AGENT_OBSERVATIONS_KEY):
            target = result.get(key)
            if isinstance(target, dict) and isinstance(target.setdefault("gaps", []), list):
                target["gaps"].append(gap)
                return
        try:
            task_id, rollout_id = _trajectory_identity(row)
            result[NG_TRAJECTORY_KEY] = TrajectoryRecord(
                task_id=task_id, rollout_id=rollout_id, gaps=[ObservationGap.model_validate(gap)]
            ).model_dump(mode="json")
        except Exception:
            logger.warning("could not record the trajectory projection failure", exc_info=True)
    else:
        _strip_capture_payloads(result)


# ------------------------------------------------------------------------------ ng_perf


def _build_ng_perf(result: dict[str, Any], *, rollout_latency_ms: float | None) -> dict[str, Any] | None:
    """Turn and token totals of a rollout's `ng_trajectory`, or None without invocations.

    Tokens are summed over the model calls the invocations own (each physical call once).
    `num_turns` counts each invocation's turns, else its owned calls, else one.
    `token_observability_coverage` is the share of turns whose call was found: a reference that
    matched no call (or several) loses its tokens from the sums, and this is where that shows.
    """
    raw = result.get(NG_TRAJECTORY_KEY)
    if not isinstance(raw, dict):
        return None
    try:
        trajectory = TrajectoryRecord.model_validate(raw)
    except Exception:
        return None
    if not trajectory.invocations:
        return None

    index = CallIndex(
        IndexedCall(
            position,
            call.model_call_id,
            call.response_metadata.model_ref,
            call.response_metadata.response_id,
        )
        for position, call in enumerate(trajectory.model_calls)
    )
    claimed: set[int] = set()
    owned: list[TrajectoryModelCall] = []
    owned_per_invocation: Counter[str] = Counter()
    for invocation in trajectory.invocations:
        for ref in invocation.model_calls:
            candidates = index.find(ref)
            if len(candidates) != 1 or candidates[0] in claimed:
                continue
            claimed.add(candidates[0])
            owned.append(trajectory.model_calls[candidates[0]])
            owned_per_invocation[invocation.invocation_id] += 1
    tools_per_invocation = Counter(tool.invocation_id for tool in trajectory.tool_calls)
    turns_per_invocation = Counter(turn.invocation_id for turn in trajectory.turns)
    num_turns = sum(
        turns_per_invocation[invocation.invocation_id] or owned_per_invocation[invocation.invocation_id] or 1
        for invocation in trajectory.invocations
    )
    perf: dict[str, Any] = {
        "num_turns": num_turns,
        "num_tool_calls": sum(
            tools_per_invocation[invocation.invocation_id] for invocation in trajectory.invocations
        ),
        "token_observability_coverage": min(1.0, len(owned) / num_turns),
    }
    perf.update(_token_sums(owned))
    if isinstance(rollout_latency_ms, int | float):
        perf["total_latency_ms"] = rollout_latency_ms
    return perf


def _token_sums(owned: list[TrajectoryModelCall]) -> dict[str, int]:
    """Each token count summed over the calls that report it (absent where none does)."""
    sums: dict[str, int] = {}
    for perf_key, stats_key in (
        ("prompt_tokens", "prompt_tokens"),
        ("cached_prompt_tokens", "cached_tokens"),
        ("completion_tokens", "completion_tokens"),
        ("reasoning_tokens", "reasoning_tokens"),
    ):
        known = [value for call in owned if (value := getattr(call.token_stats, stats_key)) is not None]
        if known:
            sums[perf_key] = sum(known)
    return sums


def _attach_ng_perf(
    result: dict[str, Any], *, observability_enabled: bool, rollout_latency_ms: float | None = None
) -> None:
    """Add `ng_perf` (only with observability on, and only when the trajectory allows it)."""
    if not observability_enabled:
        return
    try:
        perf = _build_ng_perf(result, rollout_latency_ms=rollout_latency_ms)
    except Exception:
        logger.warning("could not build ng_perf for a rollout", exc_info=True)
        return
    if perf is not None:
        result[NG_PERF_KEY] = perf
