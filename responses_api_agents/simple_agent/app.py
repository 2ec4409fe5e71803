"""simple_agent: call the model, run its tool calls on the resources server, repeat.

One rollout = one model session (the model's cookie is sent back on every call, so the
rollout stays on one vLLM upstream and its prefix cache) and one resources session.
Tool problems (bad JSON arguments, unknown tools, tool errors) are told to the model as
tool output; they never crash the rollout.

The config keys are NeMo Gym's, so its environment configs that name
`responses_api_agents/simple_agent` start this agent unchanged. Bodies are validated once
on the way in; what other servers answer is passed on as parsed JSON, not re-validated.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import orjson
from fastapi import Body, Request
from pydantic import ConfigDict, Field
from starlette.responses import Response

from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyResponse
from nemo_gym.base_responses_api_agent import BaseResponsesAPIAgentConfig, SimpleResponsesAPIAgent
from nemo_gym.config_types import ModelServerRef, ResourcesServerRef
from nemo_gym.http.server_client import message_from_body
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.server.errors import APIError


class SimpleAgentConfig(BaseResponsesAPIAgentConfig):
    strict_keys: ClassVar[bool] = True
    unsupported_keys: ClassVar[dict[str, tuple[Any, str]]] = {
        "execute_tools": (True, "remove it (this agent always runs the model's tool calls)"),
        "tool_accesses": ([], "remove it (tools come from each row's responses_create_params.tools)"),
    }
    resources_server: ResourcesServerRef | None = None
    model_server: ModelServerRef
    max_steps: int | None = Field(default=None, ge=1, description="Model calls per rollout at most.")


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


class SimpleAgentRunRequest(BaseRunRequest):
    """A whole dataset row: every field reaches /seed_session and /verify unchanged."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class SimpleAgent(SimpleResponsesAPIAgent):
    config: SimpleAgentConfig

    def _resources_name(self) -> str:
        if self.config.resources_server is None:
            raise APIError(400, "this agent has no resources_server configured, so it cannot run rollouts")
        return self.config.resources_server.name

    async def _call_tool(self, call: dict[str, Any], tool_names: set[str], cookies: Any) -> str:
        name = call.get("name")
        if name not in tool_names:
            return (
                f"Error: unknown tool {name!r}. Available tools: {', '.join(sorted(tool_names)) or 'none'}."
            )
        try:
            arguments = orjson.loads(call.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            return f"Error: the arguments of {name} are not valid JSON ({exc}). Call the tool again with a JSON object."
        if not isinstance(arguments, dict):
            return f"Error: the arguments of {name} must be a JSON object, got {type(arguments).__name__}."
        try:
            response = await self.server_client.post(
                self._resources_name(), f"/{name}", json=arguments, cookies=cookies
            )
            text = (await response.read()).decode(errors="replace")
        except aiohttp.ClientError as exc:
            return f"Error: tool {name} could not be reached ({type(exc).__name__})."
        if response.status >= 400:
            return f"Error: tool {name} failed with HTTP {response.status}: {text[:1000]}"
        return text

    async def agent_loop(self, body: dict[str, Any], cookies: Any) -> dict[str, Any]:
        """The loop itself; `cookies` are the resources server's session cookies."""
        base_input = _as_items(body.get("input"))
        tool_names = {
            t.get("name")
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function"
        }
        model = self.config.model_server.name
        new_items: list[dict[str, Any]] = []
        model_cookies: dict[str, str] = {}
        last: dict[str, Any] | None = None
        step = 0
        while self.config.max_steps is None or step < self.config.max_steps:
            step += 1
            response = await self.server_client.post(
                model, "/v1/responses", json={**body, "input": base_input + new_items}, cookies=model_cookies
            )
            content = await _read_ok(response, f"model server {model!r}")
            model_cookies.update({name: morsel.value for name, morsel in response.cookies.items()})
            last = orjson.loads(content)
            output = last.get("output") or []
            new_items.extend(output)
            calls = [item for item in output if item.get("type") == "function_call"]
            if last.get("status") == "incomplete" or not calls:
                break
            for call in calls:
                text = await self._call_tool(call, tool_names, cookies)
                new_items.append(
                    {"type": "function_call_output", "call_id": call.get("call_id"), "output": text}
                )
        assert last is not None
        return {**last, "output": new_items}

    async def responses(
        self, request: Request, body: NeMoGymResponseCreateParamsNonStreaming = Body()
    ) -> NeMoGymResponse:
        result = await self.agent_loop(_params_dict(body), dict(request.cookies))
        return _json_response(result)  # type: ignore[return-value]

    async def run(self, request: Request, body: SimpleAgentRunRequest = Body()) -> BaseVerifyResponse:
        row = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
        resources = self._resources_name()
        seed = await self.server_client.post(resources, "/seed_session", json=row)
        await _read_ok(seed, f"resources server {resources!r} /seed_session")
        cookies = seed.cookies
        response = await self.agent_loop(row["responses_create_params"], cookies)
        verify = await self.server_client.post(
            resources, "/verify", json={**row, "response": response}, cookies=cookies
        )
        content = await _read_ok(verify, f"resources server {resources!r} /verify")
        return _json_response(content)  # type: ignore[return-value]


if __name__ == "__main__":
    SimpleAgent.run_webserver()
