"""`ng_status`: the running instances and their health, via the head server."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
from pydantic import Field

from nemo_gym.cli.common import command_entry, format_table
from nemo_gym.cli.keys import ConfigCommandKeys, read_keys
from nemo_gym.config import load_config

COMMAND = "ng_status"
SUMMARY = "list the running server instances and their health (and their upstreams'), via the head server."


class StatusKeys(ConfigCommandKeys):
    """ng_status needs only the head server's address."""

    json_format: bool = Field(False, alias="json", description="Print one JSON object instead of tables.")


KEYS = StatusKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    as_json = read_keys(COMMAND, StatusKeys, args).json_format
    head = load_config(args).config.head_server
    base = f"http://{head.host}:{head.port}"
    try:
        instances = httpx.get(f"{base}/server_instances", timeout=5).json()
    except httpx.HTTPError as exc:
        print(
            f"error: cannot reach the head server at {base} ({type(exc).__name__}); is ng_run running?",
            file=sys.stderr,
        )
        return 1
    rows = []
    unhealthy = 0
    with httpx.Client(timeout=5) as client:
        for inst in instances:
            try:
                ok = client.get(inst["url"] + "/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            unhealthy += not ok
            rows.append(
                [
                    inst["name"],
                    inst["implementation"],
                    inst["url"],
                    str(inst["pid"]),
                    "healthy" if ok else "UNHEALTHY",
                ]
            )
        upstream_rows = _upstream_rows(client, instances)
    down = [r for r in upstream_rows if r[2] != "healthy"]
    if as_json:
        print(json.dumps(_as_json(instances, rows, upstream_rows)))
        return 0 if unhealthy == 0 and not down else 1
    print(format_table(["name", "implementation", "url", "pid", "health"], rows))
    print(f"{len(rows) - unhealthy}/{len(rows)} healthy")
    if upstream_rows:
        print()
        print(format_table(["model server", "upstream", "health", "detail"], upstream_rows))
        print(f"{len(upstream_rows) - len(down)}/{len(upstream_rows)} upstreams healthy")
    return 0 if unhealthy == 0 and not down else 1


def _as_json(
    instances: list[dict[str, Any]], rows: list[list[str]], upstream_rows: list[list[str]]
) -> dict[str, Any]:
    servers = [
        {
            "name": inst["name"],
            "server_type": inst.get("server_type"),
            "implementation": inst["implementation"],
            "url": inst["url"],
            "pid": inst["pid"],
            "healthy": row[4] == "healthy",
        }
        for inst, row in zip(instances, rows, strict=True)
    ]
    upstreams = [
        {"model_server": r[0], "url": r[1], "status": r[2], "error": r[3] or None} for r in upstream_rows
    ]
    return {"servers": servers, "upstreams": upstreams}


def _upstream_rows(client: httpx.Client, instances: list[dict[str, Any]]) -> list[list[str]]:
    """Each model server's own view of its upstreams (`/health?upstream=true`).

    A model server can be up while the vLLM behind it is down; that is the failure users hit.
    Servers that do not report upstreams (no `upstreams` in the answer) add no rows.
    """
    rows = []
    for inst in instances:
        if inst.get("server_type") != "responses_api_models":
            continue
        try:
            body = client.get(inst["url"] + "/health", params={"upstream": "true"}, timeout=15).json()
        except (httpx.HTTPError, ValueError):
            continue  # the server itself is already reported UNHEALTHY above
        for upstream in body.get("upstreams") or [] if isinstance(body, dict) else []:
            status = str(upstream.get("status", "unknown"))
            rows.append([inst["name"], str(upstream.get("url")), status, str(upstream.get("error") or "")])
    return rows


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
