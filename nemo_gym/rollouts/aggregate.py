"""What goes into `<stem>_aggregate_metrics.json` beyond our own means and counts."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import orjson

from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollouts.keys import ROLLOUT_KEY, TASK_KEY, done_key

# Heavy per-rollout payloads a resources server does not need to aggregate rewards.
_STRIPPED = ("response", "responses_create_params")


def numeric_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every top-level finite number (reward and any other score), collector keys excluded."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and not key.startswith("_ng_")
                and math.isfinite(value)
            ):
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def is_context_length_fallback(row: dict[str, Any]) -> bool:
    """The adapter's answer when the prompt filled the context: incomplete, and not one token generated.

    A genuine `max_output_tokens` cut also says incomplete, but it has generated tokens; telling the
    two apart matters because the fallback means the dataset row is too long for the model.
    """
    response = row.get("response")
    if not isinstance(response, dict) or response.get("status") != "incomplete":
        return False
    usage = response.get("usage") or {}
    return isinstance(usage, dict) and usage.get("output_tokens") == 0


def resources_server_of(global_config: dict[str, Any], agent_name: str) -> str | None:
    """The resources server an agent instance is wired to (`resources_server: {name: …}`)."""
    instance = global_config.get(agent_name)
    if not isinstance(instance, dict):
        return None
    for impls in instance.values():
        if not isinstance(impls, dict):
            continue
        for impl in impls.values():
            ref = impl.get("resources_server") if isinstance(impl, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                return ref["name"]
    return None


def _stripped(row: dict[str, Any]) -> dict[str, Any]:
    task, rollout = done_key(row)
    slim = {k: v for k, v in row.items() if k not in _STRIPPED}
    slim[TASK_KEY], slim[ROLLOUT_KEY] = task, rollout
    return slim


async def resources_server_aggregates(
    client: ServerClient, rows_by_agent: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Each resources server's own `/aggregate_metrics` answer, keyed by server name.

    Servers without the route (404) or that answer with something other than JSON are skipped:
    the route is optional, and our own metrics stand without it.
    """
    answers: dict[str, Any] = {}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for agent, rows in rows_by_agent.items():
        server = resources_server_of(client.global_config, agent)
        if server is not None:
            grouped.setdefault(server, []).extend(_stripped(r) for r in rows)
    for server, rows in grouped.items():
        try:
            response = await client.post(server, "/aggregate_metrics", json={"verify_responses": rows})
            content = await response.read()
            if response.status != 200:
                continue
            answers[server] = orjson.loads(content)
        except (TimeoutError, aiohttp.ClientError, KeyError, ValueError):
            continue
    return answers
