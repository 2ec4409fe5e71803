"""The episode lifecycle every environment server shares: admission, deadline, handled and
unexpected failures, cleanup in reverse order (also on cancellation), identity checks."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from nemo_gym.base_environment_server import (
    BaseEnvironmentServer,
    BaseEnvironmentServerConfig,
    CleanupContext,
    HandledEpisodeError,
)
from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.episode_types import BaseEpisodeRequest, BaseEpisodeResponse, EpisodeFailure
from nemo_gym.rollout_correlation import current_rollout_id


class ToyInput(BaseModel):
    mode: Literal["ok", "wait", "handled", "boom", "wrong_identity"]


class ToyRequest(BaseEpisodeRequest[ToyInput]):
    pass


class ToyResponse(BaseEpisodeResponse[dict[str, Any]]):
    pass


class ToyServer(BaseEnvironmentServer[ToyRequest, ToyResponse]):
    config: BaseEnvironmentServerConfig
    request_model: ClassVar[type[ToyRequest]] = ToyRequest
    response_model: ClassVar[type[ToyResponse]] = ToyResponse
    events: ClassVar[list[str]] = []
    release: ClassVar[asyncio.Event | None] = None

    async def run(self, request: ToyRequest, cleanup: CleanupContext) -> ToyResponse:
        mode = request.task.task_input.mode
        seen = current_rollout_id()

        async def close(name: str) -> None:
            self.events.append(f"close {name}")

        async def failing_close() -> None:
            self.events.append("close failing")
            raise RuntimeError("release failed")

        cleanup.register_cleanup("first", lambda: close("first"))
        cleanup.register_cleanup("failing", failing_close)
        second = cleanup.register_cleanup("second", lambda: close("second"))
        if mode == "wait":
            assert self.release is not None
            await self.release.wait()
        if mode == "handled":
            raise HandledEpisodeError(
                EpisodeFailure(failure_reason="seed lost", terminal=False, stage="seed")
            )
        if mode == "boom":
            raise KeyError("missing")
        await second.close()  # closed early at a protocol boundary: not again during unwinding
        task_id = request.task.task_id if mode != "wrong_identity" else {"taskset": "x", "task_id": "y"}
        return ToyResponse(episode_id=request.episode_id, task_id=task_id, result={"rollout": seen})

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        return AggregateMetrics(agent_metrics={"n": len(body.verify_responses)})


def make(**limits: Any) -> ToyServer:
    ToyServer.events = []
    ToyServer.release = asyncio.Event()
    return ToyServer(config=BaseEnvironmentServerConfig(name="toy", cleanup_timeout_seconds=5, **limits))


def body(mode: str, rollout: str = "9-0", attempt: int = 1) -> dict[str, Any]:
    return {
        "episode_id": {"rollout_id": rollout, "attempt": attempt},
        "task": {"task_id": {"taskset": "toys", "task_id": "9"}, "task_input": {"mode": mode}},
    }


async def post(server: ToyServer, payload: dict[str, Any], path: str = "/run") -> httpx.Response:
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://env") as client:
        return await client.post(path, json=payload)


async def test_success_runs_under_the_capture_key_and_unwinds_in_reverse() -> None:
    server = make()
    answer = await post(server, body("ok"))
    assert answer.json() == {
        "episode_id": {"rollout_id": "9-0", "attempt": 1},
        "task_id": {"taskset": "toys", "task_id": "9"},
        "result": {"rollout": "9-0-a1"},
        "failure": None,
    }
    assert server.events == ["close second", "close failing", "close first"]


@pytest.mark.parametrize(
    ("mode", "failure"),
    [
        ("handled", {"failure_reason": "seed lost", "terminal": False, "stage": "seed"}),
        (
            "boom",
            {"failure_reason": "Unhandled environment server error: KeyError: 'missing'", "terminal": True},
        ),
    ],
)
async def test_failures_are_answers_and_cleanup_still_runs(mode: str, failure: dict[str, Any]) -> None:
    server = make()
    answer = await post(server, body(mode))
    assert answer.status_code == 200
    assert answer.json()["failure"] == failure and answer.json()["result"] is None
    assert server.events == ["close second", "close failing", "close first"]


async def test_deadline_and_admission_limits() -> None:
    server = make(default_episode_timeout_seconds=0.05)
    timed_out = await post(server, body("wait"))
    assert timed_out.json()["failure"] == {
        "failure_reason": "Episode timed out",
        "terminal": False,
    }
    assert server.events == ["close second", "close failing", "close first"]

    server = make(max_concurrent_episodes=1, queue_timeout_seconds=0.05)
    first = asyncio.ensure_future(server.run_request(ToyRequest.model_validate(body("wait"))))
    await asyncio.sleep(0)  # the first episode takes the only slot
    second = await server.run_request(ToyRequest.model_validate(body("ok", rollout="10-0")))
    assert second.failure is not None and second.failure.stage == "admission"
    assert second.failure.failure_reason == "Episode admission timed out"
    assert server.release is not None
    server.release.set()
    assert (await first).result == {"rollout": "9-0-a1"}


async def test_cancellation_propagates_after_cleanup() -> None:
    server = make()
    task = asyncio.ensure_future(server.run_request(ToyRequest.model_validate(body("wait"))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.events == ["close second", "close failing", "close first"]


async def test_identity_mismatch_is_an_error_and_aggregate_route() -> None:
    server = make()
    with pytest.raises(ValueError, match="different task_id"):
        await server.run_request(ToyRequest.model_validate(body("wrong_identity")))
    metrics = await post(server, {"verify_responses": [{"reward": 1}, {"reward": 0}]}, "/aggregate_metrics")
    assert metrics.json()["agent_metrics"] == {"n": 2}
    bad = await post(server, {"episode_id": {"rollout_id": "bad/id"}, "task": {}})
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request_error"


def test_config_rules() -> None:
    with pytest.raises(
        ValidationError, match="queue_timeout_seconds must be set when max_concurrent_episodes is"
    ):
        BaseEnvironmentServerConfig(cleanup_timeout_seconds=1, max_concurrent_episodes=2)
    with pytest.raises(ValidationError):
        BaseEnvironmentServerConfig(cleanup_timeout_seconds=0)


def test_a_misspelt_environment_server_key_names_key_file_and_suggestion() -> None:
    from environment_servers.single_agent_turn.app import SingleAgentTurnEnvironmentServer
    from nemo_gym.config import ConfigError
    from nemo_gym.server.context import RuntimeContext

    impl = {
        "entrypoint": "app.py",
        "port": 3,
        "resource_server": {"type": "resources_servers", "name": "weather"},
        "agent_server": {"type": "responses_api_agents", "name": "agent"},
    }
    context = RuntimeContext(
        global_config={"turn": {"environment_servers": {"single_agent_turn": impl}}},
        origins={"turn": "configs/turn.yaml"},
        instance_name="turn",
        session_secret="s",
    )
    with pytest.raises(ConfigError) as caught:
        SingleAgentTurnEnvironmentServer.from_context(context)
    assert str(caught.value) == (
        "config key 'turn.environment_servers.single_agent_turn.resource_server' (from configs/turn.yaml): "
        "is not a key of this server (SingleAgentTurnEnvironmentServer); did you mean `resources_server`?"
    )
