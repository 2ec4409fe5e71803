"""simple_agent: call the model, run its tool calls on the resources server, repeat.

One rollout = one model session (the model's cookie is sent back on every call, so the
rollout stays on one vLLM upstream and its prefix cache) and one resources session.
Tool problems (bad JSON arguments, unknown tools, tool errors) are told to the model as
tool output; they never crash the rollout.

The config keys are NeMo Gym's, so its environment configs that name
`responses_api_agents/simple_agent` start this agent unchanged. Bodies are validated once
on the way in; what other servers answer is passed on as parsed JSON, not re-validated.

Two ways in:
- `/run` with a dataset row: seed the resources server, loop, verify (NeMo Gym's legacy path).
- An episode session from an environment server (`/v1/agent_sessions`, then
  `/ng-rollout/<id>/v1/responses`, then `/v1/agent_sessions/close`): tools are called through
  the session's direct-HTTP grant, and the close answers with what the agent observed.

With `observability_enabled` in the running config, a rollout that has an id (its row's
`_ng_rollout_id`, or `_ng_task_index` + `_ng_rollout_index`) is recorded as NeMo Gym's
`ng_trajectory` on the `/run` result, and as invocations in a session's observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import orjson
from fastapi import Body, Request
from pydantic import ConfigDict, Field
from starlette.responses import Response

from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyRequest, BaseVerifyResponse
from nemo_gym.base_responses_api_agent import (
    AgentCloseSessionResponse,
    AgentSeedSessionRequest,
    AgentSessionState,
    BaseResponsesAPIAgentConfig,
    SimpleResponsesAPIAgent,
)
from nemo_gym.config_types import ModelServerRef, ResourcesServerRef
from nemo_gym.http.server_client import message_from_body
from nemo_gym.http.server_client import request as http_request
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.rollout_correlation import maybe_rollout_id_from_run_body
from nemo_gym.server.errors import APIError
from nemo_gym.tool_access import DirectHTTPToolAccess, MCPToolAccess
from nemo_gym.trajectory_recorder import TrajectoryRecorder, trajectory_task_id

# Where a self-call's trajectory travels inside a /v1/responses answer (NeMo Gym's key).
INTERNAL_TRAJECTORY_KEY = "_ng_trajectory"
OBSERVATION_SOURCE = "simple_agent"


class SimpleAgentConfig(BaseResponsesAPIAgentConfig):
    strict_keys: ClassVar[bool] = True
    resources_server: ResourcesServerRef | None = None
    model_server: ModelServerRef
    max_steps: int | None = Field(default=None, ge=1, description="Model calls per rollout at most.")
    # False: stop at the model's first tool calls and return them unexecuted (episode sessions
    # only, where the environment server executes them).
    execute_tools: bool = True


def _as_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return list(value)
    raise APIError(400, "'input' must be a string or a list of items", param="input")


async def _read_ok(response: aiohttp.ClientResponse, what: str) -> bytes:
    content = await response.read()
    if response.status >= 400:
        status = response.status if response.status < 500 else 502
        raise APIError(status, f"{what} returned HTTP {response.status}: {message_from_body(content, 500)}")
    return content


def _json_response(content: bytes | Any) -> Response:
    if not isinstance(content, bytes):
        content = orjson.dumps(content)
    return Response(content, media_type="application/json")


def _params_dict(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    return body.model_dump(mode="json", exclude_unset=True)


def _cookie_dict(cookies: Any) -> dict[str, str]:
    if not cookies:
        return {}
    return {str(name): str(getattr(value, "value", value)) for name, value in cookies.items()}


class SimpleAgentRunRequest(BaseRunRequest):
    """A whole dataset row: every field reaches /seed_session and /verify unchanged."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class SimpleAgentVerifyRequest(BaseVerifyRequest):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class SimpleAgentVerifyResponse(BaseVerifyResponse):
    """A `/run` result as a typed object: what `run()` returns to a subclass that overrides it."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")


@dataclass
class SimpleAgentSessionState(AgentSessionState):
    tool_access: DirectHTTPToolAccess | None
    resources_cookies: dict[str, str]
    observations: dict[str, Any] | None = None
    activations: int = 0


@dataclass
class _Tools:
    """Where one loop's tool calls go: a session's direct-HTTP grant, or the configured server."""

    names: set[str]
    cookies: Any
    access: DirectHTTPToolAccess | None = None
    in_session: bool = False
    track_cookies: bool = False


class SimpleAgent(SimpleResponsesAPIAgent):
    config: SimpleAgentConfig
    # A subclass that overrides run() and awaits super().run() gets a SimpleAgentVerifyResponse,
    # as NeMo Gym's agents built on this one expect; this class itself answers with the JSON bytes.
    typed_run_results: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.typed_run_results = cls.run is not SimpleAgent.run

    def _run_answer(self, result: bytes | dict[str, Any]) -> Any:
        if self.typed_run_results:
            return SimpleAgentVerifyResponse.model_validate(
                orjson.loads(result) if isinstance(result, bytes) else result
            )
        return _json_response(result)

    def _resources_name(self) -> str:
        if self.config.resources_server is None:
            raise APIError(400, "this agent has no resources_server configured, so it cannot run rollouts")
        return self.config.resources_server.name

    async def _post_tool(self, tools: _Tools, name: str, arguments: dict[str, Any]) -> aiohttp.ClientResponse:
        if tools.access is not None:
            url = f"{str(tools.access.base_url).rstrip('/')}/{name}"
            return await http_request(
                "POST", url, json=arguments, cookies=tools.cookies, headers=dict(tools.access.headers)
            )
        if tools.in_session:
            raise APIError(
                400, f"the model called tool {name!r}, but this agent session has no direct HTTP tool access"
            )
        return await self.server_client.post(
            self._resources_name(), f"/{name}", json=arguments, cookies=tools.cookies
        )

    async def _call_tool(self, call: dict[str, Any], tools: _Tools) -> tuple[str, str | None]:
        """The tool's output text for the model, and an error type when the call failed."""
        name = call.get("name")
        if name not in tools.names:
            available = ", ".join(sorted(tools.names)) or "none"
            return f"Error: unknown tool {name!r}. Available tools: {available}.", "unknown_tool"
        try:
            arguments = orjson.loads(call.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            return (
                f"Error: the arguments of {name} are not valid JSON ({exc}). Call the tool again with a JSON object.",
                "JSONDecodeError",
            )
        if not isinstance(arguments, dict):
            return (
                f"Error: the arguments of {name} must be a JSON object, got {type(arguments).__name__}.",
                "invalid_arguments",
            )
        try:
            response = await self._post_tool(tools, name, arguments)
            text = (await response.read()).decode(errors="replace")
        except aiohttp.ClientError as exc:
            return f"Error: tool {name} could not be reached ({type(exc).__name__}).", type(exc).__name__
        if tools.track_cookies and response.cookies:
            tools.cookies = {**_cookie_dict(tools.cookies), **_cookie_dict(response.cookies)}
        if response.status >= 400:
            return (
                f"Error: tool {name} failed with HTTP {response.status}: {text[:1000]}",
                f"http_{response.status}",
            )
        return text, None

    async def agent_loop(
        self,
        body: dict[str, Any],
        cookies: Any,
        *,
        recorder: TrajectoryRecorder | None = None,
        tools: _Tools | None = None,
    ) -> dict[str, Any]:
        """The loop itself; `cookies` are the resources server's session cookies."""
        base_input = _as_items(body.get("input"))
        if tools is None:
            tools = _Tools(names=set(), cookies=cookies)
        tools.names = {
            t.get("name")
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function"
        }
        new_items: list[dict[str, Any]] = []
        model_cookies: dict[str, str] = {}
        last: dict[str, Any] | None = None
        step = 0
        while True:
            if self.config.max_steps is not None and step >= self.config.max_steps:
                if recorder is not None:
                    recorder.status = "incomplete"
                break
            step += 1
            last = await self._model_turn(body, base_input + new_items, model_cookies, recorder)
            output = last.get("output") or []
            new_items.extend(output)
            calls = [item for item in output if item.get("type") == "function_call"]
            if last.get("status") == "incomplete" or not calls:
                if recorder is not None and (
                    last.get("status") == "incomplete"
                    or not any(item.get("type") == "message" for item in output)
                ):
                    recorder.status = "incomplete"
                break
            if not self.config.execute_tools:
                break
            new_items.extend(await self._tool_outputs(calls, tools, recorder))
        assert last is not None
        if recorder is not None:
            recorder.conversation_prefix = base_input
        return {**last, "output": new_items}

    async def _model_turn(
        self,
        body: dict[str, Any],
        request_input: list[dict[str, Any]],
        model_cookies: dict[str, str],
        recorder: TrajectoryRecorder | None,
    ) -> dict[str, Any]:
        """One model call over the conversation so far; the model server's cookies carry over."""
        model = self.config.model_server.name
        if recorder is not None:
            recorder.model_call_started()
        response = await self.server_client.post(
            model, "/v1/responses", json={**body, "input": request_input}, cookies=model_cookies
        )
        content = await _read_ok(response, f"model server {model!r}")
        model_cookies.update({name: morsel.value for name, morsel in response.cookies.items()})
        answer = orjson.loads(content)
        if recorder is not None:
            recorder.model_call_done(request_input, answer)
        return answer

    async def _tool_outputs(
        self, calls: list[dict[str, Any]], tools: _Tools, recorder: TrajectoryRecorder | None
    ) -> list[dict[str, Any]]:
        """Each call's output item, the tools called one after another in the model's order."""
        outputs = []
        for call in calls:
            if recorder is not None:
                recorder.tool_call_started()
            text, error_type = await self._call_tool(call, tools)
            if recorder is not None:
                recorder.tool_call_done(call, text, error_type)
            outputs.append({"type": "function_call_output", "call_id": call.get("call_id"), "output": text})
        return outputs

    # ---- /v1/responses ----------------------------------------------------------------
    async def responses(
        self, request: Request, body: NeMoGymResponseCreateParamsNonStreaming = Body()
    ) -> NeMoGymResponse:
        params = _params_dict(body)
        session_id = self._agent_session_id_from_request(request)
        state = self._require_agent_session(session_id) if session_id is not None else None
        if state is None and not self.config.execute_tools:
            raise APIError(
                400,
                "execute_tools: false works only inside an agent session; seed one at /v1/agent_sessions "
                "before calling /v1/responses",
            )
        rollout_id = request.path_params.get("rollout_id")
        recorder = None
        if rollout_id is not None and self._model_call_capture_enabled():
            invocation_id = "root"
            if isinstance(state, SimpleAgentSessionState):
                # One invocation per activation of a session; the first keeps "root".
                state.activations += 1
                if state.activations > 1:
                    invocation_id = f"activation-{state.activations}"
            recorder = TrajectoryRecorder(
                self.config.model_server.name,
                invocation_id=invocation_id,
                task_id="unscoped",
                rollout_id=rollout_id,
            )
        if isinstance(state, SimpleAgentSessionState):
            tools = _Tools(
                names=set(),
                cookies=state.resources_cookies,
                access=state.tool_access,
                in_session=True,
                track_cookies=True,
            )
        else:
            tools = _Tools(names=set(), cookies=dict(request.cookies))
        result = await self.agent_loop(params, tools.cookies, recorder=recorder, tools=tools)
        if isinstance(state, SimpleAgentSessionState):
            state.resources_cookies = _cookie_dict(tools.cookies)
            if recorder is not None:
                self._add_observations(state, recorder, result["output"])
        elif recorder is not None:
            result[INTERNAL_TRAJECTORY_KEY] = recorder.record(
                [*recorder.conversation_prefix, *result["output"]]
            )
        return _json_response(result)  # type: ignore[return-value]

    @staticmethod
    def _add_observations(
        state: SimpleAgentSessionState, recorder: TrajectoryRecorder, output: list[Any]
    ) -> None:
        previous = state.observations or {"source": OBSERVATION_SOURCE, "records": [], "gaps": []}
        state.observations = {
            "source": OBSERVATION_SOURCE,
            "records": [
                *previous["records"],
                recorder.invocation([*recorder.conversation_prefix, *output]),
                *recorder.tool_observations(),
            ],
            "gaps": [*previous["gaps"], *recorder.gaps],
        }

    # ---- /run ---------------------------------------------------------------------------
    async def run(self, request: Request, body: SimpleAgentRunRequest = Body()) -> BaseVerifyResponse:
        if not self.config.execute_tools:
            raise APIError(400, "execute_tools: false works only inside agent sessions; /run needs it true")
        row = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
        resources = self._resources_name()
        seed = await self.server_client.post(resources, "/seed_session", json=row)
        await _read_ok(seed, f"resources server {resources!r} /seed_session")
        cookies = seed.cookies
        recorder = None
        if self._model_call_capture_enabled():
            rollout_id = maybe_rollout_id_from_run_body(row)
            if rollout_id is not None:
                recorder = TrajectoryRecorder(
                    self.config.model_server.name,
                    invocation_id="root",
                    task_id=trajectory_task_id(row),
                    rollout_id=rollout_id,
                )
        response = await self.agent_loop(row["responses_create_params"], cookies, recorder=recorder)
        if self.config.skip_verification:
            result: Any = {
                **row,
                "response": response,
                "reward": float(self.config.skip_verification_reward),
                "verification_skipped": True,
            }
        else:
            verify = await self.server_client.post(
                resources, "/verify", json={**row, "response": response}, cookies=cookies
            )
            content = await _read_ok(verify, f"resources server {resources!r} /verify")
            if recorder is None:
                return self._run_answer(content)
            result = orjson.loads(content)
        if recorder is not None and isinstance(result, dict):
            recorder.set_resolved(result.get("resolved"))
            result["ng_trajectory"] = recorder.record([*recorder.conversation_prefix, *response["output"]])
        return self._run_answer(result)

    # ---- episode sessions ---------------------------------------------------------------
    async def _seed_agent_session_state(self, body: AgentSeedSessionRequest) -> SimpleAgentSessionState:
        if body.sandbox_access is not None:
            raise APIError(400, "simple_agent does not support sandbox access")
        accesses = self.effective_tool_accesses(body)
        mcp_required = [a.name for a in accesses if isinstance(a, MCPToolAccess) and a.required]
        if mcp_required:
            raise APIError(
                400, f"simple_agent does not support required MCP tool access: {', '.join(mcp_required)}"
            )
        direct = [a for a in accesses if isinstance(a, DirectHTTPToolAccess)]
        if len(direct) > 1:
            raise APIError(400, "simple_agent supports at most one direct HTTP tool access per session")
        access = direct[0] if direct else None
        return SimpleAgentSessionState(
            request=body, tool_access=access, resources_cookies=dict(access.cookies) if access else {}
        )

    async def _close_agent_session_state(self, state: AgentSessionState) -> AgentCloseSessionResponse:
        assert isinstance(state, SimpleAgentSessionState)
        return AgentCloseSessionResponse.model_validate(
            {
                "agent_session_id": state.request.agent_session_id,
                "agent_observations": state.observations,
                "resources_cookies": state.resources_cookies,
            }
        )


if __name__ == "__main__":
    SimpleAgent.run_webserver()
