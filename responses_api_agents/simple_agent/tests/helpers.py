"""A simple_agent served in process (ASGI) in front of the scripted servers of `conftest.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from nemo_gym.http.server_client import ServerClient
from nemo_gym.server.context import RuntimeContext
from nemo_gym.testing.scripted_server import ScriptedServer
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig


@asynccontextmanager
async def agent_client(
    servers: tuple[ScriptedServer, ScriptedServer],
    *,
    resources_name: str = "simple_weather",
    observability: bool | None = None,
    **config: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the agent; `observability` None leaves the global key out; `config` goes to
    SimpleAgentConfig."""
    model, res = servers
    global_config: dict[str, Any] = {
        "policy_model": {"responses_api_models": {"vllm_model": model.address}},
        resources_name: {"resources_servers": {"simple_weather": res.address}},
    }
    if observability is not None:
        global_config["observability_enabled"] = observability
    agent_config = SimpleAgentConfig(
        resources_server={"type": "resources_servers", "name": resources_name},
        model_server={"type": "responses_api_models", "name": "policy_model"},
        **config,
    )
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="agent", session_secret="s"
    )
    server = SimpleAgent(config=agent_config, server_client=ServerClient(global_config)).bind_context(context)
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        yield client
