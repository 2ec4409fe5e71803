"""`ng_reverify_rollouts +rollouts_jsonl_fpath=run.jsonl +output_jsonl_fpath=reverified.jsonl`.

Runs `/verify` again over a finished run's rollouts, against the servers ng_run has up (the same
resources servers, perhaps with a fixed verifier or another judge), and writes each rollout with
its new verification: the same row, the new reward and fields. Rows that fail go to
`<output stem>_failures.jsonl`; `<output stem>_aggregate_metrics.json` has the new means. The model
is never called.
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
from nemo_gym.rollouts.jsonl import JsonlAppender, read_complete_rows
from nemo_gym.rollouts.keys import (
    FAILURE_CLASS_KEY,
    ROLLOUT_KEY,
    TASK_KEY,
    aggregate_metrics_path_for,
    done_key,
    failures_path_for,
)
from nemo_gym.rollouts.reverify import ReverifyError, reverify, verify_payload
from nemo_gym.rollouts.shards import run_metrics, server_metrics

COMMAND = "ng_reverify_rollouts"
SUMMARY = "run /verify again over saved rollouts against the running servers; write the new rewards."


class ReverifyKeys(ConfigCommandKeys):
    """ng_reverify_rollouts' keys (NeMo Gym's names)."""

    rollouts_jsonl_fpath: str | None = Field(None, description="The rollouts to verify again. Required.")
    output_jsonl_fpath: str | None = Field(None, description="Where the re-verified rollouts go. Required.")
    materialized_inputs_jsonl_fpath: str | None = Field(
        None,
        description="The rows the run was given (matched by task and rollout index); default: the rollouts'.",
    )
    num_samples_in_parallel: int = Field(32, ge=1, description="Most /verify calls in flight at once.")
    limit: int | None = Field(None, ge=1, description="Verify only the first N rollouts.")
    overwrite: bool = Field(False, description="Replace an existing output file (default: refuse).")
    disable_aggregation: bool = Field(False, description="Write no aggregate-metrics file.")


KEYS = ReverifyKeys


def _file(value: str | None, key: str, *, must_exist: bool = True) -> Path:
    if not value:
        raise ConfigError(f"is required (+{key}=...)", key=key, source="command line")
    path = Path(value)
    if must_exist and not path.is_file():
        raise ConfigError(f"file {path} does not exist", key=key, source="command line")
    return path


def _pairs(keys: ReverifyKeys, rollouts: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    inputs: dict[tuple[Any, Any], dict[str, Any]] = {}
    if keys.materialized_inputs_jsonl_fpath:
        path = _file(keys.materialized_inputs_jsonl_fpath, "materialized_inputs_jsonl_fpath")
        inputs = {done_key(row): row for row in read_complete_rows(path)}
    pairs = []
    for rollout in rollouts:
        source = None
        if inputs:
            source = inputs.get(done_key(rollout))
            if source is None:
                task, repeat = done_key(rollout)
                raise ConfigError(
                    f"has no row for task {task}, rollout {repeat} of the rollouts",
                    key="materialized_inputs_jsonl_fpath",
                    source="command line",
                )
        try:
            pairs.append((rollout, verify_payload(rollout, source)))
        except ReverifyError as exc:
            raise ConfigError(str(exc), key="rollouts_jsonl_fpath", source="command line") from None
    return pairs


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, ReverifyKeys, args)
    rollouts_path = _file(keys.rollouts_jsonl_fpath, "rollouts_jsonl_fpath")
    output = _file(keys.output_jsonl_fpath, "output_jsonl_fpath", must_exist=False)
    if output.exists() and not keys.overwrite:
        raise ConfigError(
            f"{output} already exists; pass +overwrite=true to replace it", key="output_jsonl_fpath"
        )
    rollouts = list(read_complete_rows(rollouts_path))[: keys.limit]
    pairs = _pairs(keys, rollouts)
    head = dict(load_config(args).config.head_server)
    try:
        client = ServerClient.load_from_global_config(head)
    except HeadServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failures_path = failures_path_for(output)
    changed = 0

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        nonlocal changed
        written, failed = [], []
        out, side = JsonlAppender(output, truncate=True), JsonlAppender(failures_path, truncate=True)
        try:
            async for rollout, answer in reverify(pairs, client, keys.num_samples_in_parallel):
                keys_of = {TASK_KEY: rollout.get(TASK_KEY), ROLLOUT_KEY: rollout.get(ROLLOUT_KEY)}
                if FAILURE_CLASS_KEY in answer:
                    record = {**rollout, **answer, **keys_of}
                    side.write(record)
                    failed.append(record)
                    continue
                row = {**rollout, **answer, **keys_of}
                changed += row.get("reward") != rollout.get("reward")
                out.write(row)
                written.append(row)
            servers = {} if keys.disable_aggregation else await server_metrics(client, written)
            return written, failed, servers
        finally:
            out.close()
            side.close()
            await close_shared_client()

    written, failed, servers = asyncio.run(run())
    metrics = run_metrics(written, failed, num_rewards_changed=changed)
    if servers:
        metrics["resources_servers"] = servers
    if not keys.disable_aggregation:
        aggregate_metrics_path_for(output).write_text(json.dumps(metrics, indent=2) + "\n")
    before = [r["reward"] for r in rollouts if isinstance(r.get("reward"), int | float)]
    print(json.dumps(metrics, indent=2))
    if before and "reward" in metrics:
        print(f"mean reward: {sum(before) / len(before):.4f} before, {metrics['reward']:.4f} now")
    print(f"{len(written)} re-verified ({changed} rewards changed), {len(failed)} failed")
    print(f"Rollouts: {output}\nFailures: {failures_path} ({len(failed)})")
    return 0 if written or not pairs else 1


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
