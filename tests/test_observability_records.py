"""NeMo Gym 0.7.0's observability records: episode and failure types, the observation and
trajectory models, joining references to captured calls, and what collection attaches
(`ng_trajectory`, `ng_perf`, episode records, terminal failures)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from nemo_gym.base_responses_api_model import ModelCallRecord, build_model_call_record
from nemo_gym.episode_types import (
    BaseEpisodeResponse,
    EpisodeFailure,
    EpisodeId,
    TaskId,
    is_materialized_task_row,
)
from nemo_gym.failure_kinds import is_namespaced, is_registered, validate_failure_kind
from nemo_gym.rollout_observability import (
    AgentInvocation,
    AgentObservationBundle,
    ContextCompactionObservation,
    ModelCallRef,
    ToolCallObservation,
    TrajectoryRecord,
    TrajectoryTurn,
    join_model_call_observations,
)
from nemo_gym.rollouts.trajectory import (
    NG_FAILURE_CLASS_KEY,
    NG_TERMINAL_KEY,
    _attach_ng_perf,
    _attach_trajectory_record,
    _build_trajectory_record,
    _episode_record,
    _trajectory_identity,
    is_terminal_failure,
)

MODEL = {"type": "responses_api_models", "name": "policy_model"}


# ---------------------------------------------------------------------------- episode and failure types


def test_episode_id_capture_key_and_reserved_suffix() -> None:
    assert EpisodeId(rollout_id="4-1").capture_key == "4-1"
    assert EpisodeId(rollout_id="4-1", attempt=2).capture_key == "4-1-a2"
    with pytest.raises(ValidationError, match="reserved for attempt numbers"):
        EpisodeId(rollout_id="4-1-a3")
    with pytest.raises(ValidationError):
        EpisodeId(rollout_id="has/slash")
    with pytest.raises(ValidationError):
        TaskId(taskset="", task_id="1")


def test_episode_failure_drops_unknown_metadata_and_response_needs_one_outcome() -> None:
    assert EpisodeFailure(failure_reason="lost", terminal=False).model_dump() == {
        "failure_reason": "lost",
        "terminal": False,
    }
    assert EpisodeFailure(failure_reason="x", terminal=True, stage="seed").model_dump()["stage"] == "seed"
    identity = {"episode_id": {"rollout_id": "1-0"}, "task_id": {"taskset": "t", "task_id": "1"}}
    with pytest.raises(ValidationError, match="exactly one of result or failure"):
        BaseEpisodeResponse.model_validate(identity)
    with pytest.raises(ValidationError, match="exactly one of result or failure"):
        BaseEpisodeResponse.model_validate(
            {**identity, "result": {"reward": 1}, "failure": {"failure_reason": "x", "terminal": True}}
        )
    assert is_materialized_task_row({"task_id": {"taskset": "t"}, "task_input": None})
    assert not is_materialized_task_row({"task_id": "3", "task_input": {}})


def test_failure_kinds_vocabulary(caplog: pytest.LogCaptureFixture) -> None:
    assert is_registered("judge_failed") and not is_registered("judge_fail")
    assert is_namespaced("gdpval:reference_missing") and not is_namespaced("Gdpval:x")
    with caplog.at_level(logging.WARNING, logger="nemo_gym.failure_kinds"):
        assert validate_failure_kind("made_up_kind_for_test") == "made_up_kind_for_test"
        assert validate_failure_kind("made_up_kind_for_test") == "made_up_kind_for_test"
        assert validate_failure_kind("verifier_error") == "verifier_error"
    assert [r.getMessage() for r in caplog.records].count(
        "failure_kind 'made_up_kind_for_test' is not in nemo_gym.failure_kinds; use a shared kind or "
        "'<server>:<kind>' (this is logged once per name)"
    ) == 1


# ---------------------------------------------------------------------------- the models


def test_model_call_ref_needs_a_join_key() -> None:
    assert ModelCallRef(model_call_id="c1").model_call_id == "c1"
    assert ModelCallRef(model_ref=MODEL, response_id="r1").response_id == "r1"
    with pytest.raises(ValidationError, match="needs model_call_id, or both model_ref and response_id"):
        ModelCallRef(response_id="r1")


def test_bundle_rejects_duplicate_invocations_and_cycles() -> None:
    def inv(name: str, parent: str | None = None) -> dict[str, Any]:
        return {"kind": "agent_invocation", "invocation_id": name, "parent_invocation_id": parent}

    AgentObservationBundle(source="s", records=[inv("root"), inv("child", "root"), inv("orphan", "absent")])
    with pytest.raises(ValidationError, match="must be unique"):
        AgentObservationBundle(source="s", records=[inv("a"), inv("a")])
    with pytest.raises(ValidationError, match="must not form a cycle"):
        AgentObservationBundle(source="s", records=[inv("a", "b"), inv("b", "a")])
    with pytest.raises(ValidationError, match="completed_at must not be before started_at"):
        ToolCallObservation(invocation_id="a", tool_call_id="t", started_at=2.0, completed_at=1.0)
    with pytest.raises(ValidationError):
        AgentObservationBundle(
            source="s", records=[{"kind": "agent_invocation", "invocation_id": "a", "typo": 1}]
        )


def test_trajectory_record_identity_rules() -> None:
    turn = {
        "invocation_id": "root",
        "task_id": "t",
        "rollout_id": "r",
        "turn_no": 1,
        "timestamp": 1.0,
        "step_count": 0,
    }
    TrajectoryRecord(task_id="t", rollout_id="r", turns=[turn])
    with pytest.raises(ValidationError, match="every turn must carry"):
        TrajectoryRecord(task_id="t", rollout_id="other", turns=[turn])
    with pytest.raises(ValidationError, match="turn numbers must be unique"):
        TrajectoryRecord(task_id="t", rollout_id="r", turns=[turn, turn])
    with pytest.raises(ValidationError, match="model_call_id must be unique"):
        TrajectoryRecord(
            task_id="t", rollout_id="r", model_calls=[{"model_call_id": "c"}, {"model_call_id": "c"}]
        )


def call(
    index: int, call_id: str | None, response_id: str | None, session: str | None = None
) -> ModelCallRecord:
    return ModelCallRecord(
        call_index=index,
        model_call_id=call_id,
        response_id=response_id,
        model_ref=MODEL,
        client_session_id=session,
    )


def test_join_resolves_unique_references_and_reports_the_rest() -> None:
    bundle = AgentObservationBundle(
        source="harness",
        records=[
            AgentInvocation(
                invocation_id="root",
                model_calls=[
                    ModelCallRef(model_ref=MODEL, response_id="r1"),  # unique: resolved to its call id
                    ModelCallRef(model_call_id="missing"),  # no such call
                    ModelCallRef(model_ref=MODEL, response_id="dup"),  # two calls answer it
                ],
            ),
            AgentInvocation(
                invocation_id="sub", model_calls=[ModelCallRef(model_call_id="c1")]
            ),  # root owns c1
            ContextCompactionObservation(
                invocation_id="root", model_calls=[ModelCallRef(model_call_id="c1")], after_model_call=None
            ),
        ],
    )
    calls = [
        call(0, "c1", "r1"),
        call(1, "c2", "dup"),
        call(2, "c3", "dup"),
        call(3, "c4", "r4", session="sub"),  # the model server attributed it to "sub"
        call(4, "c5", "r5"),  # nobody's
    ]
    joined = join_model_call_observations(bundle, calls)
    root, sub, compaction = joined.records
    assert root.model_calls[0] == ModelCallRef(model_call_id="c1", model_ref=MODEL, response_id="r1")
    assert [ref.model_call_id for ref in sub.model_calls] == ["c1", "c4"]
    assert compaction.model_calls == [ModelCallRef(model_call_id="c1", model_ref=MODEL, response_id="r1")]
    assert [(g.code, g.invocation_id, g.detail) for g in joined.gaps] == [
        ("model_call_reference_unmatched", "root", "missing"),
        ("model_call_reference_ambiguous", "root", "dup"),
        ("model_call_reference_conflict", "sub", "c1"),
        ("model_call_ownership_unavailable", None, "capture:c2:call_index=1"),
        ("model_call_ownership_unavailable", None, "capture:c3:call_index=2"),
        ("model_call_ownership_unavailable", None, "capture:c5:call_index=4"),
    ]
    # The input bundle is unchanged, and joining again gives the same answer.
    assert bundle.records[0].model_calls[0].model_call_id is None
    assert join_model_call_observations(joined, calls).gaps == joined.gaps


# ---------------------------------------------------------------------------- what collection attaches


def test_trajectory_identity_prefers_the_rows_own_ids() -> None:
    assert _trajectory_identity({"_ng_task_index": 3, "_ng_rollout_index": 2}) == ("3", "3-2")
    row = {"instance_id": "django-1", "_ng_task_index": 3, "_ng_rollout_index": 2, "_ng_attempt_index": 1}
    assert _trajectory_identity(row) == ("django-1", "3-2-a1")
    assert _trajectory_identity({"_ng_rollout_id": "given", "_ng_task_index": 0, "_ng_rollout_index": 0}) == (
        "0",
        "given",
    )


def capture_call(call_id: str, response_id: str, *, tokens_in: int, started: float) -> dict[str, Any]:
    return {
        "model_call_id": call_id,
        "response_id": response_id,
        "model_ref": MODEL,
        "started_at": started,
        "completed_at": started + 1,
        "latency_total_ms": 1000.0,
        "tokens_in": tokens_in,
        "tokens_out": 5,
        "request": {"input": [{"role": "user", "content": f"q-{call_id}"}]},
        "response": {
            "status": "completed",
            "output": [
                {"type": "reasoning", "summary": []},
                {"type": "function_call", "call_id": "t", "name": "f", "arguments": "{}"},
            ],
        },
    }


def test_turns_come_from_captured_calls_the_invocations_own() -> None:
    row = {"_ng_task_index": 1, "_ng_rollout_index": 0}
    result: dict[str, Any] = {
        "reward": 1.0,
        "resolved": False,
        "ng_agent_observations": {
            "source": "harness",
            "records": [
                {
                    "kind": "agent_invocation",
                    "invocation_id": "root",
                    "status": "completed",
                    "model_calls": [{"model_call_id": "m1"}, {"model_call_id": "m2"}],
                    "conversation": [{"role": "user", "content": "q"}],
                },
                {
                    "kind": "tool_call",
                    "invocation_id": "root",
                    "tool_call_id": "t",
                    "tool_name": "f",
                    "status": "failed",
                },
            ],
            "gaps": [],
        },
        "ng_model_call_capture": {
            "calls": [
                capture_call("m1", "r1", tokens_in=10, started=100.0),
                capture_call("judge", "rj", tokens_in=99, started=101.0),  # not the agent's: no turn
                capture_call("m2", "r2", tokens_in=20, started=102.0),
            ]
        },
    }
    _attach_trajectory_record(row, result)
    trajectory = TrajectoryRecord.model_validate(result["ng_trajectory"])
    assert [(t.turn_no, t.step_count, t.timestamp, t.resolved) for t in trajectory.turns] == [
        (1, 0, 100.0, None),
        (2, 1, 102.0, False),
    ]
    assert trajectory.turns[0].question == [{"type": "message", "role": "user", "content": "q-m1"}]
    assert [c.model_call_id for c in trajectory.model_calls] == ["m1", "judge", "m2"]
    assert trajectory.model_calls[0].response_metadata.response_status == "completed"
    assert trajectory.tool_calls[0].status == "failed" and trajectory.tool_calls[0].tool_name == "f"
    assert trajectory.gaps == []
    # Payload copies leave the capture once the trajectory holds them.
    assert "request" not in result["ng_model_call_capture"]["calls"][0]
    _attach_ng_perf(result, observability_enabled=True)
    assert result["ng_perf"] == {
        "num_turns": 2,
        "num_tool_calls": 1,
        "token_observability_coverage": 1.0,
        "prompt_tokens": 30,
        "completion_tokens": 10,
    }


def test_producer_identity_mismatch_and_missing_evidence_are_gaps() -> None:
    row = {"_ng_task_index": 5, "_ng_rollout_index": 0}
    produced = TrajectoryRecord(
        task_id="wrong",
        rollout_id="5-0",
        turns=[
            TrajectoryTurn(
                invocation_id="root",
                task_id="wrong",
                rollout_id="5-0",
                turn_no=1,
                timestamp=1.0,
                step_count=0,
            )
        ],
    ).model_dump(mode="json")
    record = _build_trajectory_record(row, {"ng_trajectory": produced})
    assert record.task_id == "5" and record.turns[0].task_id == "5"
    assert [(g.code, g.detail) for g in record.gaps] == [
        ("producer_trajectory_identity_mismatch", "task_id"),
        ("model_calls_unavailable", None),
        ("conversation_unavailable", None),
    ]
    bare = _build_trajectory_record(row, {"ng_trajectory": {"task_id": 1}})
    assert [g.code for g in bare.gaps] == [
        "producer_trajectory_invalid",
        "model_calls_unavailable",
        "turns_unavailable",
        "conversation_unavailable",
    ]


def test_ng_perf_only_with_observability_and_invocations() -> None:
    result = {"ng_trajectory": TrajectoryRecord(task_id="1", rollout_id="1-0").model_dump(mode="json")}
    _attach_ng_perf(result, observability_enabled=True)
    assert "ng_perf" not in result
    result["ng_trajectory"]["invocations"] = [{"kind": "agent_invocation", "invocation_id": "root"}]
    _attach_ng_perf(result, observability_enabled=False)
    assert "ng_perf" not in result
    _attach_ng_perf(result, observability_enabled=True, rollout_latency_ms=3.0)
    assert result["ng_perf"] == {
        "num_turns": 1,
        "num_tool_calls": 0,
        "token_observability_coverage": 0.0,
        "total_latency_ms": 3.0,
    }


def test_episode_records_and_terminal_failures() -> None:
    task = {"taskset": "t", "task_id": "1"}
    failure = {
        "failure_reason": "seed lost",
        "terminal": False,
        "stage": "seed",
        "partial_response": {"id": "r"},
    }
    assert _episode_record({"task_id": task, "failure": failure}) == {
        "_ng_task_id": task,
        NG_FAILURE_CLASS_KEY: "environment_server_failed",
        NG_TERMINAL_KEY: False,
        "_ng_failure_message": "seed lost",
        "_ng_failure_stage": "seed",
        "_ng_failure_partial_response": {"id": "r"},
    }
    assert _episode_record({"task_id": task, "result": {"reward": 0.5}}) == {
        "reward": 0.5,
        "_ng_task_id": task,
    }
    with pytest.raises(
        ValueError, match=r"uses keys rollout collection writes: \['_ng_task_index', 'ng_perf'\]"
    ):
        _episode_record({"task_id": task, "result": {"reward": 1, "ng_perf": {}, "_ng_task_index": 0}})
    assert is_terminal_failure({NG_TERMINAL_KEY: True})
    assert not is_terminal_failure(
        {NG_FAILURE_CLASS_KEY: "timeout_exceeded", NG_TERMINAL_KEY: True}, retry_terminal_timeouts=True
    )
    assert is_terminal_failure({NG_FAILURE_CLASS_KEY: "skipped"}, retry_terminal_timeouts=True)
    assert not is_terminal_failure({NG_FAILURE_CLASS_KEY: "skipped"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("tokens_in", -1), ("cached_tokens", -3), ("latency_ttft_ms", -0.5), ("status_code", 42)],
)
def test_captured_call_refuses_impossible_counts_latencies_and_statuses(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelCallRecord(call_index=0, **{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_captured_call_from_usage_with_a_negative_count_reads_it_as_unknown() -> None:
    record = build_model_call_record(
        {"response": {"usage": {"input_tokens": -4, "output_tokens": 7}}, "status_code": 200}, call_index=3
    )
    assert (record.tokens_in, record.tokens_out, record.status_code, record.call_index) == (None, 7, 200, 3)
