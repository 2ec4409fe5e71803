"""Helpers for agents whose harness runs inside a sandbox and calls back out: the URLs it may
use, MCP tool servers seeded on the host, and verification of what it produced."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nemo_gym.base_resources_server import NEMO_GYM_MCP_METADATA_KEY, BaseRunRequest
from nemo_gym.config_types import ResourcesServerRef
from nemo_gym.openai_utils import NeMoGymResponse
from nemo_gym.server_utils import ServerClient, get_response_json, get_server_url, raise_for_status

try:
    from nemo_gym.failure_kinds import AGENT_RUN_ERROR
except ImportError:  # the shared failure vocabulary is a separate module; its name for this is fixed
    AGENT_RUN_ERROR = "agent_run_error"

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}


def _reachable_host(url: str) -> str:
    """The host of `url`, refusing ones a sandbox on another machine could not reach."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if (
        not host
        or host.lower().rstrip(".") == "localhost"
        or (address is not None and (address.is_loopback or address.is_unspecified))
    ):
        raise ValueError(
            f"{url} is only reachable from this host, not from a remote sandbox: bind the server to a "
            "routable address (or set use_absolute_ip=true) so it advertises one"
        )
    return host


def sandbox_server_url(name: str, *, require_reachable: bool = False) -> str:
    """The URL a sandboxed harness should use for server `name`.

    A wildcard bind address becomes loopback (right for sandboxes sharing the host's network);
    with `require_reachable`, loopback and wildcard addresses are refused instead, since a
    remote sandbox cannot use them."""
    base = get_server_url(name).rstrip("/")
    parts = urlsplit(base)
    if require_reachable:
        _reachable_host(base)
        return base
    if parts.hostname in _WILDCARDS:
        host = _WILDCARDS[parts.hostname]
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return base


def restricted_network_policy(provider_name: str, urls: list[str]) -> dict[str, object]:
    """An egress policy allowing only the hosts of `urls`. Only OpenSandbox enforces such a
    policy, so any other provider is refused rather than left silently open."""
    if provider_name != "opensandbox":
        raise ValueError(
            "restricted network access needs a provider that enforces egress policies "
            f"(OpenSandbox: `opensandbox`), not {provider_name!r}; the isolated provider with "
            "network: none blocks all egress instead"
        )
    hosts = sorted({_reachable_host(url) for url in urls})
    return {"defaultAction": "deny", "egress": [{"action": "allow", "target": host} for host in hosts]}


async def seed_mcp_servers(
    client: ServerClient,
    servers: list[ResourcesServerRef],
    body: BaseRunRequest,
    cookies: Mapping[str, str],
    *,
    timeout_s: float,
    require_reachable: bool = False,
) -> dict[str, dict[str, object]]:
    """Seed a session on each tool server and return MCP client entries for the harness: URL,
    the per-session auth headers the server returned, and a timeout in milliseconds."""
    entries: dict[str, dict[str, object]] = {}
    for server in servers:
        response = await client.post(
            server_name=server.name, url_path="/seed_session", json=body.model_dump(), cookies=cookies
        )
        await raise_for_status(response)
        mcp = (await get_response_json(response)).get(NEMO_GYM_MCP_METADATA_KEY)
        if not isinstance(mcp, dict) or not mcp.get("headers"):
            raise ValueError(
                f"tool server {server.name} returned no authenticated MCP endpoint from /seed_session "
                f"(expected {NEMO_GYM_MCP_METADATA_KEY!r} with headers)"
            )
        path = str(mcp.get("url_path", "/mcp")).lstrip("/")
        entries[server.name] = {
            "url": f"{sandbox_server_url(server.name, require_reachable=require_reachable)}/{path}",
            "headers": mcp["headers"],
            "enabled": True,
            "timeout": int(timeout_s * 1000),
        }
    return entries


async def verify_agent_response(
    client: ServerClient,
    server: ResourcesServerRef,
    body: BaseRunRequest,
    response: NeMoGymResponse,
    cookies: Mapping[str, str],
    *,
    force_zero_reward: bool,
) -> dict[str, Any]:
    """Ask the resources server to verify `response`.

    With `force_zero_reward` (the harness failed), the verifier grades an empty response and must
    answer an unmasked zero; the real response is put back in the result for inspection and the
    failure is labelled `agent_run_error`."""
    graded = response.model_copy(update={"output": []}) if force_zero_reward else response
    verified = await client.post(
        server_name=server.name,
        url_path="/verify",
        cookies=cookies,
        json=body.model_dump(mode="json") | {"response": graded.model_dump(mode="json")},
    )
    await raise_for_status(verified)
    result = await get_response_json(verified)
    if force_zero_reward:
        if result.get("reward") != 0 or result.get("mask_sample", False):
            raise ValueError(
                "execution_failure_reward_zero needs a verifier that gives an empty response an unmasked "
                f"reward of 0; {server.name} answered reward={result.get('reward')!r}, "
                f"mask_sample={result.get('mask_sample', False)!r}"
            )
        result.update(
            response=response.model_dump(mode="json"),
            failure_kind=AGENT_RUN_ERROR,
            failure_reason="the agent's harness failed; scored as an empty response (execution_failure_reward_zero)",
        )
    return result
