"""Rollout shards merged into one run: the rows, their failure sidecars, and the metrics the
collector would have written had one run produced them all.

Sharded collections (`+disable_aggregation=true` per shard) are put back together by
`ng_aggregate_rollouts` / `gym eval aggregate`, which reads the shards named by globs.
"""

from __future__ import annotations

import glob
from collections import Counter
from pathlib import Path
from typing import Any

from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollouts.aggregate import is_context_length_fallback, numeric_means, resources_server_aggregates
from nemo_gym.rollouts.jsonl import JsonlAppender, read_complete_rows
from nemo_gym.rollouts.keys import FAILURE_CLASS_KEY, agent_ref_name, done_key, failures_path_for

_SIDE_FILE_SUFFIXES = ("_failures", "_aggregate_metrics", "_materialized_inputs", "_reward_profiling")


def expand_globs(patterns: str) -> list[Path]:
    """Files matched by a glob or comma-separated globs, each once, sorted; side files left out."""
    found: dict[Path, None] = {}
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        for match in sorted(glob.glob(pattern, recursive=True)):
            path = Path(match)
            if path.is_file() and not path.stem.endswith(_SIDE_FILE_SUFFIXES):
                found.setdefault(path, None)
    return list(found)


def _order(row: dict[str, Any]) -> tuple[int, Any, Any]:
    task, rollout = done_key(row)
    numeric = isinstance(task, int) and isinstance(rollout, int)
    return (0, task, rollout) if numeric else (1, str(task), str(rollout))


def read_shards(paths: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every finished rollout, sorted by task and rollout; every failure of every shard's sidecar)."""
    rows = [row for path in paths for row in read_complete_rows(path)]
    rows.sort(key=_order)
    failures = [row for path in paths for row in read_complete_rows(failures_path_for(path))]
    return rows, failures


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    out = JsonlAppender(path, truncate=True)
    try:
        for row in rows:
            out.write(row)
    finally:
        out.close()


def run_metrics(rows: list[dict[str, Any]], failures: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Means of every numeric field, counts, and failure classes: the collector's own metrics."""
    classes = Counter(str(f.get(FAILURE_CLASS_KEY, "unknown")) for f in failures)
    return {
        **numeric_means(rows),
        "num_rollouts": len(rows),
        "num_failed": len(failures),
        "num_context_length_fallbacks": sum(is_context_length_fallback(r) for r in rows),
        "failure_classes": dict(classes.most_common()),
        **extra,
    }


async def server_metrics(client: ServerClient, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each resources server's `/aggregate_metrics` over the rows of the agents wired to it."""
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = agent_ref_name(row)
        if name:
            by_agent.setdefault(name, []).append(row)
    return await resources_server_aggregates(client, by_agent)
