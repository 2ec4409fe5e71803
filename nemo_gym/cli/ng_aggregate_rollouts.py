"""`ng_aggregate_rollouts +input_glob='results/shard*.jsonl' +output_jsonl_fpath=results/all.jsonl`.

Puts sharded collections back together: the shards' rollouts (and their `_failures.jsonl` sidecars)
merged into one file, and `<output stem>_aggregate_metrics.json` computed over all of them, as one
run would have written it. When the servers that scored them are still running (ng_run), each
resources server's own `/aggregate_metrics` is asked too; without them our own metrics stand alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import ConfigCommandKeys, read_keys
from nemo_gym.config import ConfigError, load_config
from nemo_gym.http.server_client import HeadServerUnreachable, ServerClient, close_shared_client
from nemo_gym.rollouts.keys import aggregate_metrics_path_for, failures_path_for
from nemo_gym.rollouts.shards import expand_globs, read_shards, run_metrics, server_metrics, write_rows

COMMAND = "ng_aggregate_rollouts"
SUMMARY = "merge rollout shards and compute their aggregate metrics (resources servers' too, if running)."


class AggregateRolloutsKeys(ConfigCommandKeys):
    """ng_aggregate_rollouts' keys (NeMo Gym's names)."""

    input_glob: str = Field(description="Glob, or comma-separated globs, of the shards.")
    output_jsonl_fpath: str = Field(
        description="Merged rollouts; the metrics go to <stem>_aggregate_metrics.json."
    )
    merge_shards: bool = Field(True, description="Write the merged rollouts (false: only the metrics).")


KEYS = AggregateRolloutsKeys


def _servers_answer(args: list[str], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The running resources servers' metrics, or None when no head server answers."""
    head = dict(load_config(args).config.head_server)
    try:
        client = ServerClient.load_from_global_config(head)
    except HeadServerUnreachable:
        return None

    async def ask() -> dict[str, Any]:
        try:
            return await server_metrics(client, rows)
        finally:
            await close_shared_client()

    return asyncio.run(ask())


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, AggregateRolloutsKeys, args)
    output = Path(keys.output_jsonl_fpath)
    shards = [p for p in expand_globs(keys.input_glob) if p.resolve() != output.resolve()]
    if not shards:
        raise ConfigError(
            f"matches no rollout file ({keys.input_glob!r})", key="input_glob", source="command line"
        )
    rows, failures = read_shards(shards)
    print(f"Aggregating {len(rows)} rollouts and {len(failures)} failures from {len(shards)} shards:")
    for shard in shards:
        print(f"  {shard}")
    if keys.merge_shards:
        write_rows(output, rows)
        write_rows(failures_path_for(output), failures)
    metrics = run_metrics(rows, failures, num_shards=len(shards))
    answers = _servers_answer(args, rows)
    if answers:
        metrics["resources_servers"] = answers
    elif answers is None:
        print(
            "note: no head server answers, so only our own metrics were computed "
            "(start the servers with ng_run to add each resources server's /aggregate_metrics)",
            file=sys.stderr,
        )
    metrics_path = aggregate_metrics_path_for(output)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    if keys.merge_shards:
        print(f"Rollouts: {output}")
        print(f"Failures: {failures_path_for(output)} ({len(failures)})")
    print(f"Metrics:  {metrics_path}")
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
