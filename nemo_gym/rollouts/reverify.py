"""Saved rollouts scored again: each one's `/verify` request rebuilt and sent to the resources server
its agent is wired to, on servers started by ng_run. A changed verifier (a fixed parser, another
judge) can then be applied to a finished run without calling the model again.

The request is the row the rollout ran (from the materialized inputs when given, else the
rollout's own fields) plus the response it produced; what the old verification added (reward,
observability records, failure marks) is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from nemo_gym.http.server_client import ServerCallError, ServerClient, message_from_body
from nemo_gym.rollouts.aggregate import resources_server_of
from nemo_gym.rollouts.keys import FAILURE_CLASS_KEY, FAILURE_MESSAGE_KEY, agent_ref_name, done_key

# Fields a verification (or our collector) added to a rollout; a new verification recomputes them.
VERIFY_OUTPUT_FIELDS = frozenset(
    {"reward", "ng_trajectory", "ng_perf", FAILURE_CLASS_KEY, FAILURE_MESSAGE_KEY}
)
VERIFY_FAILED = "verify_failed"


class ReverifyError(ValueError):
    """A rollout that cannot be verified again (no response, no server to send it to)."""


def verify_payload(rollout: Mapping[str, Any], input_row: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `/verify` request for a saved rollout."""
    if "response" not in rollout:
        task, repeat = done_key(dict(rollout))
        raise ReverifyError(f"rollout (task {task}, rollout {repeat}) has no `response` to verify")
    source = input_row if input_row is not None else rollout
    payload = {k: v for k, v in source.items() if k not in VERIFY_OUTPUT_FIELDS}
    payload["response"] = rollout["response"]
    return payload


def resources_servers(global_config: Mapping[str, Any]) -> list[str]:
    return [
        name
        for name, block in global_config.items()
        if isinstance(block, Mapping) and isinstance(block.get("resources_servers"), Mapping)
    ]


def server_for(row: Mapping[str, Any], global_config: dict[str, Any]) -> str:
    """The resources server that verifies a row: its agent's, or the only one there is."""
    agent = agent_ref_name(dict(row))
    if agent is not None:
        server = resources_server_of(global_config, agent)
        if server is not None:
            return server
    servers = resources_servers(global_config)
    if len(servers) == 1:
        return servers[0]
    named = f"agent {agent!r}" if agent else "no agent_ref"
    raise ReverifyError(
        f"cannot tell which resources server verifies a row with {named} (running: {', '.join(servers) or 'none'})"
    )


async def reverify(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]], client: ServerClient, parallel: int
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(rollout, new verify answer or a failure record) for each (rollout, payload), as they finish."""
    gate = asyncio.Semaphore(parallel)

    async def one(rollout: dict[str, Any], payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        async with gate:
            try:
                server = server_for(rollout, client.global_config)
                response = await client.post(server, "/verify", json=payload)
                content = await response.read()
                if response.status >= 400:
                    message = f"/verify on {server} answered {response.status}: {message_from_body(content)}"
                    return rollout, {FAILURE_CLASS_KEY: VERIFY_FAILED, FAILURE_MESSAGE_KEY: message}
                return rollout, orjson.loads(content)
            except (
                ReverifyError,
                ServerCallError,
                aiohttp.ClientError,
                orjson.JSONDecodeError,
                TimeoutError,
            ) as exc:
                message = str(exc) or type(exc).__name__
                return rollout, {FAILURE_CLASS_KEY: VERIFY_FAILED, FAILURE_MESSAGE_KEY: message}

    for finished in asyncio.as_completed([one(r, p) for r, p in pairs]):
        yield await finished
