"""Dispatch and row expansion without servers: admission, budgets, failures, routing, repeats."""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import pytest

from nemo_gym.rollouts.dispatch import (
    DispatchOptions,
    DrainTracker,
    RolloutRunError,
    completions,
    dispatch,
)
from nemo_gym.rollouts.examples import ExpansionPlan, expand_rows


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def read(self) -> bytes:
        return self._body


class FakeClient:
    """Answers `/run` by a function of the row; counts calls in flight."""

    def __init__(self, answer: Any, delay: float = 0.0) -> None:
        self.answer, self.delay = answer, delay
        self.in_flight = self.peak = self.calls = 0

    def url_for(self, name: str) -> str:
        return f"http://agents/{name}"

    async def post(self, name: str, path: str, json: Any = None) -> FakeResponse:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self.answer(json)
        finally:
            self.in_flight -= 1


def ok(row: dict) -> FakeResponse:
    return FakeResponse(200, {"reward": 1.0, "echo": row["_rowidx"]})


def batch(n: int) -> list[dict]:
    return [{"agent_ref": {"name": "agent"}, "_rowidx": i} for i in range(n)]


async def take_all(pending: Any) -> list:
    return [await task for task in pending]


async def test_admission_is_bounded_and_results_keep_the_callers_fields() -> None:
    client = FakeClient(ok, delay=0.01)
    pending = dispatch(batch(50), client, DispatchOptions(max_resident_tasks=5))  # type: ignore[arg-type]
    assert len(pending) == 50 and client.calls == 0  # nothing starts before the first await
    got = await take_all(pending)
    assert sorted(row["_rowidx"] for row, _ in got) == list(range(50))
    assert all(result["echo"] == row["_rowidx"] for row, result in got)
    assert (client.peak, pending.peak_resident) == (5, 5)


async def test_a_semaphore_bounds_calls_while_all_rows_are_admitted() -> None:
    client = FakeClient(ok, delay=0.01)
    got = await take_all(dispatch(batch(20), client, DispatchOptions(semaphore=asyncio.Semaphore(3))))  # type: ignore[arg-type]
    assert len(got) == 20 and client.peak == 3


async def test_a_failed_run_raises_or_becomes_a_failure_row() -> None:
    def answer(row: dict) -> FakeResponse:
        if row["_rowidx"] == 1:
            return FakeResponse(503, {"error": {"message": "overloaded"}})
        return ok(row)

    with pytest.raises(RolloutRunError) as info:
        await take_all(dispatch(batch(3), FakeClient(answer), DispatchOptions()))  # type: ignore[arg-type]
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.status, str(copy)) == (
        503,
        "agent 'agent' /run returned HTTP 503: overloaded (POST http://agents/agent/run; _rowidx=1)",
    )
    got = await take_all(
        dispatch(batch(3), FakeClient(answer), DispatchOptions(route_failures_to_sidecar=True))  # type: ignore[arg-type]
    )
    failed = {row["_rowidx"]: result for row, result in got}[1]
    assert failed == {
        "_ng_failure_class": "agent_request_failed",  # a gateway status: the rollout may not have run
        "_ng_failure_type": "RolloutRunError",
        "_ng_failure_message": str(copy),
        "_ng_failure_http_status": 503,
        "_ng_failure_response_body": '{"error": {"message": "overloaded"}}',
    }


async def test_a_spent_budget_drains_rows_without_calling() -> None:
    client = FakeClient(ok)
    got = await take_all(dispatch(batch(3), client, DispatchOptions(dispatch_budget_s=0)))  # type: ignore[arg-type]
    assert client.calls == 0
    assert [r["_ng_failure_class"] for _, r in got] == ["cancelled"] * 3
    assert all(r["_ng_no_persist"] and r["_ng_dispatch_drained"] for _, r in got)
    tracker = DrainTracker()
    tracker.record(30.0)  # rollouts take 30 s: a 10 s budget cannot fit one more
    got = await take_all(
        dispatch(batch(2), client, DispatchOptions(dispatch_budget_s=10, tracker=tracker))  # type: ignore[arg-type]
    )
    assert client.calls == 0 and tracker.drained == 2
    assert got[0][1]["error_message"].endswith("below the 30s drain margin")


async def test_leaving_early_cancels_what_is_still_running() -> None:
    started: list[int] = []

    def slow(row: dict) -> FakeResponse:
        started.append(row["_rowidx"])
        return ok(row)

    client = FakeClient(slow, delay=0.05)
    async for _row, _result in completions(batch(10), client, DispatchOptions(max_resident_tasks=4)):  # type: ignore[arg-type]
        break
    await asyncio.sleep(0.1)
    assert client.in_flight == 0 and len(started) <= 5


def test_routing_repeats_and_indices_follow_nemo_gym() -> None:
    rows = [
        {"agent_ref": {"name": "a"}, "q": 1},
        {"q": 2},
        {"agent_ref": {"name": "a"}, "q": 1},  # the same content: the same task
        {"agent_ref": {"name": "b"}, "q": 3, "_ng_task_index": 9},  # the caller's index is kept
    ]
    plan = ExpansionPlan(
        agent_map={"_default": "d"},
        fan_out={"b": ["x", "y"]},
        num_repeats={"a": 2, "_default": 1},
        num_repeats_add_seed=True,
        responses_create_params={"temperature": 0.5},
    )
    got = expand_rows(rows, plan)
    summary = [(r["agent_ref"]["name"], r["q"], r["_ng_task_index"], r["_ng_rollout_index"]) for r in got]
    assert summary == [
        ("d", 1, 0, 0),  # _default re-routes every row; num_repeats matches its own name "a"
        ("d", 1, 0, 1),
        ("d", 2, 1, 0),
        ("d", 1, 0, 2),
        ("d", 1, 0, 3),
        ("x", 3, 9, 0),
        ("y", 3, 9, 1),
    ]
    assert got[1]["responses_create_params"] == {
        "temperature": 0.5,
        "metadata": {"extra_body": '{"seed": 1}'},
    }
    assert rows[1] == {"q": 2}  # inputs untouched
    interleaved = expand_rows(
        rows[:2], ExpansionPlan(agent_map={"_default": "d"}, num_repeats=2, interleave_repeats=True)
    )
    assert [(r["q"], r["_ng_rollout_index"]) for r in interleaved] == [(1, 0), (2, 0), (1, 1), (2, 1)]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (ExpansionPlan(), r"no agent for rows 1: give agent_name"),
        (
            ExpansionPlan(agent_map={"_default": "d"}, num_repeats={"a": 2}),
            r"num_repeats has no entry for \['d'\]",
        ),
    ],
)
def test_rows_that_cannot_be_routed_are_named(plan: ExpansionPlan, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_rows([{"agent_ref": {"name": "a"}}, {"q": 2}], plan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_repeats": 0}, "num_repeats must be >= 1"),
        ({"fan_out": {"a": []}}, r"fan_out\['a'\] lists no agent"),
        ({"fan_out": {"a": ["x", "x"]}}, r"fan_out\['a'\] lists an agent twice"),
    ],
)
def test_bad_plans_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExpansionPlan(**kwargs)
