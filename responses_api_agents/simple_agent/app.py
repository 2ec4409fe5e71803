"""simple_agent: call the model, run its tool calls on the resources server, repeat.

One rollout = one model session (the model's cookie is sent back on every call, so the
rollout stays on one vLLM upstream and its prefix cache) and one resources session.
Tool problems (bad JSON arguments, unknown tools, tool errors) are told to the model as
tool output; they never crash the rollout.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.base_responses_api_agent import BaseResponsesAPIAgentConfig, SimpleResponsesAPIAgent
from nemo_gym.http.server_client import error_message
from nemo_gym.server.errors import APIError


class ServerRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    name: str


class SimpleAgentConfig(BaseResponsesAPIAgentConfig):
    resources_server: ServerRef
    model_server: ServerRef
    max_steps: int | None = Field(default=None, ge=1)


def _as_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return list(value)
    raise APIError(400, "'input' must be a string or a list of items", param="input")


def _raise_for_upstream(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        status = response.status_code if response.status_code < 500 else 502
        raise APIError(status, f"{what} returned HTTP {response.status_code}: {error_message(response, 500)}")


class SimpleAgent(SimpleResponsesAPIAgent):
    config_class = SimpleAgentConfig
    config: SimpleAgentConfig

    async def _call_tool(self, call: dict[str, Any], tool_names: set[str], cookies: dict[str, str]) -> str:
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
                self.config.resources_server.name, f"/{name}", json=arguments, cookies=cookies
            )
        except httpx.HTTPError as exc:
            return f"Error: tool {name} could not be reached ({type(exc).__name__})."
        if response.status_code >= 400:
            return f"Error: tool {name} failed with HTTP {response.status_code}: {response.text[:1000]}"
        return response.text

    async def responses(self, body: dict[str, Any], cookies: dict[str, str]) -> dict[str, Any]:
        """The agent loop; `cookies` are the resources server's session cookies."""
        base_input = _as_items(body.get("input"))
        tool_names = {
            t.get("name")
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function"
        }
        new_items: list[dict[str, Any]] = []
        model_cookies: dict[str, str] = {}
        last: dict[str, Any] | None = None
        step = 0
        while self.config.max_steps is None or step < self.config.max_steps:
            step += 1
            response = await self.server_client.post(
                self.config.model_server.name,
                "/v1/responses",
                json={**body, "input": base_input + new_items},
                cookies=model_cookies,
            )
            _raise_for_upstream(response, f"model server {self.config.model_server.name!r}")
            model_cookies.update(response.cookies)
            last = response.json()
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

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        params = body.get("responses_create_params")
        if not isinstance(params, dict):
            raise APIError(
                400,
                "'responses_create_params' is required and must be an object",
                param="responses_create_params",
            )
        resources = self.config.resources_server.name
        seed = await self.server_client.post(resources, "/seed_session", json=body)
        _raise_for_upstream(seed, f"resources server {resources!r} /seed_session")
        cookies = dict(seed.cookies)
        response = await self.responses(params, cookies)
        verify = await self.server_client.post(
            resources, "/verify", json={**body, "response": response}, cookies=cookies
        )
        _raise_for_upstream(verify, f"resources server {resources!r} /verify")
        return verify.json()


if __name__ == "__main__":
    SimpleAgent.run_webserver()
