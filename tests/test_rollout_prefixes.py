"""Rollout path prefixes (`/ng-rollout/<id>/…`), as NeMo Gym agents built on our base use them
when a run correlates rollouts: the paths they build, and our servers serving them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx

from nemo_gym.base_resources_server import BaseResourcesServerConfig, BaseVerifyRequest, SimpleResourcesServer
from nemo_gym.base_responses_api_agent import BaseResponsesAPIAgentConfig, SimpleResponsesAPIAgent
from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollout_correlation import current_rollout_id, split_rollout_path
from nemo_gym.server.base import BaseServerConfig, SimpleServer
from nemo_gym.server_utils import apply_rollout_prefix, rollout_path_prefix

MODEL = {"policy_model": {"responses_api_models": {"vllm_model": {"host": "127.0.0.1", "port": 9}}}}
ROW = {"_ng_task_index": 1, "_ng_rollout_index": 2, "_ng_attempt_index": 1}


def agent(**global_config: Any) -> SimpleResponsesAPIAgent:
    client = ServerClient({**MODEL, **global_config})
    return SimpleResponsesAPIAgent(
        config=BaseResponsesAPIAgentConfig(token_id_capture=True), server_client=client
    )


def test_prefix_helpers() -> None:
    assert rollout_path_prefix(None) == "" and apply_rollout_prefix("http://m/", None) == "http://m/"
    assert rollout_path_prefix("7-0", token_capture=True) == "/ng-rollout/7-0/training-token-capture"
    assert apply_rollout_prefix("http://m/", "7-0") == "http://m/ng-rollout/7-0"
    assert split_rollout_path("/ng-rollout/7-0/training-token-capture/v1/responses") == (
        "7-0",
        "/v1/responses",
    )
    assert split_rollout_path("/ng-rollout/bad id/v1") is None and split_rollout_path("/v1/responses") is None


def test_agent_paths_follow_the_runs_correlation_settings() -> None:
    off = agent()
    assert off.url_path_for_run("/v1/responses", ROW) == "/v1/responses"
    observed = agent(observability_enabled=True)
    assert observed.url_path_for_run("/v1/responses", ROW) == "/ng-rollout/1-2-a1/v1/responses"
    assert observed.base_url_for_run("http://m", ROW) == "http://m/ng-rollout/1-2-a1"
    assert observed.resolve_model_base_url("policy_model", "1-2") == "http://127.0.0.1:9/ng-rollout/1-2/v1"
    capture = agent(token_id_capture={"enabled": True})
    assert (
        capture.url_path_for_run("/v1/responses", ROW)
        == "/ng-rollout/1-2-a1/training-token-capture/v1/responses"
    )
    inbound = SimpleNamespace(
        path_params={"rollout_id": "1-2"},
        url=SimpleNamespace(path="/ng-rollout/1-2/training-token-capture/v1/responses"),
    )
    assert (
        off.url_path_for_request("/v1/responses", inbound)
        == "/ng-rollout/1-2/training-token-capture/v1/responses"
    )


class HotServer(SimpleServer):
    config: BaseServerConfig

    def fast_routes(self) -> dict[str, Any]:
        async def hot(body: bytes, session_id: str) -> dict[str, Any]:
            return {"rollout": current_rollout_id(), "body": body.decode()}

        return {"/v1/responses": hot}


class Resources(SimpleResourcesServer):
    config: BaseResourcesServerConfig

    async def verify(self, body: BaseVerifyRequest) -> dict[str, Any]:
        return {"reward": 1.0, "rollout": current_rollout_id()}


async def test_servers_serve_prefixed_paths_in_the_rollouts_context() -> None:
    hot = httpx.ASGITransport(app=HotServer(config=BaseServerConfig(name="m")).build_asgi())
    async with httpx.AsyncClient(transport=hot, base_url="http://m") as client:
        prefixed = await client.post("/ng-rollout/3-0/v1/responses", content=b"{}")
        plain = await client.post("/v1/responses", content=b"{}")
        unknown = await client.post("/ng-rollout/3-0/v1/nothing", content=b"{}")
    assert prefixed.json() == {"rollout": "3-0", "body": "{}"}
    assert plain.json() == {"rollout": None, "body": "{}"}
    assert unknown.status_code == 404
    resources = httpx.ASGITransport(app=Resources(config=BaseResourcesServerConfig(name="r")).build_asgi())
    response = {
        "id": "r",
        "object": "response",
        "created_at": 1.0,
        "model": "m",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    async with httpx.AsyncClient(transport=resources, base_url="http://r") as client:
        verified = await client.post(
            "/ng-rollout/3-0/verify", json={"responses_create_params": {"input": "x"}, "response": response}
        )
    assert verified.json() == {"reward": 1.0, "rollout": "3-0"}
