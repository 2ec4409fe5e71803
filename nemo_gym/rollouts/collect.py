"""A collection run: every (task, repeat) of an input file through `dispatch`, each result written
the moment it finishes.

Rows carry NeMo Gym's `_ng_task_index` (the input line) and `_ng_rollout_index`, so
`+resume_from_cache=true` can skip what is done: an interrupted run loses nothing and repeats
nothing. A failing rollout goes to `<stem>_failures.jsonl` with `_ng_failure_class` /
`_ng_failure_message`, and the run goes on. Trainers reach the same dispatch through
`RolloutCollectionHelper.run_examples`; this module adds the files around it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollouts.aggregate import (
    is_context_length_fallback,
    numeric_means,
    resources_server_aggregates,
)
from nemo_gym.rollouts.config import RolloutCollectionConfig
from nemo_gym.rollouts.dispatch import NO_PERSIST_KEY, DispatchOptions, dispatch
from nemo_gym.rollouts.environment_routing import EnvironmentRoutes, record_from_answer
from nemo_gym.rollouts.examples import DEFAULT_KEY, expand_rows
from nemo_gym.rollouts.failures import INVALID_INPUT_ROW, FailureTally
from nemo_gym.rollouts.jsonl import JsonlAppender, read_complete_rows
from nemo_gym.rollouts.keys import (
    AGENT_REF_KEY,
    FAILURE_CLASS_KEY,
    FAILURE_MESSAGE_KEY,
    ROLLOUT_KEY,
    TASK_KEY,
    agent_ref_name,
    done_key,
)
from nemo_gym.rollouts.trajectory import (
    NG_AGENT_OBSERVATIONS_KEY,
    NG_MODEL_CALL_CAPTURE_KEY,
    NG_TRAJECTORY_KEY,
    _attach_ng_perf,
    _attach_trajectory_record,
)


@dataclass
class InputRow:
    index: int
    row: dict[str, Any] | None
    error: str | None = None


def read_input_rows(path: Path, limit: int | None) -> Iterator[InputRow]:
    """Each line of the input; unusable lines come back with an error naming file and line."""
    with path.open("rb") as handle:
        index = 0
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if limit is not None and index >= limit:
                return
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield InputRow(index, None, f"{path}:{line_no}: invalid JSON ({exc})")
            else:
                if not isinstance(row, dict) or not isinstance(row.get("responses_create_params"), dict):
                    yield InputRow(
                        index, None, f"{path}:{line_no}: row has no 'responses_create_params' object"
                    )
                else:
                    yield InputRow(index, row)
            index += 1


def resolve_agent(config: RolloutCollectionConfig, row: dict[str, Any]) -> str | None:
    """The agent a row goes to: agent_map[row's agent_ref] > agent_map._default > agent_name > agent_ref."""
    ref = agent_ref_name(row)
    if ref is not None and ref in config.agent_map:
        return config.agent_map[ref]
    return config.agent_map.get(DEFAULT_KEY) or config.agent_name or ref


def attach_observability(row: dict[str, Any], result: dict[str, Any], latency_ms: float | None) -> None:
    """NeMo Gym's standard trajectory and `ng_perf` on a finished rollout, from what its agent
    (or environment server) recorded; nothing to do when it recorded nothing."""
    if any(
        key in result for key in (NG_TRAJECTORY_KEY, NG_AGENT_OBSERVATIONS_KEY, NG_MODEL_CALL_CAPTURE_KEY)
    ):
        _attach_trajectory_record(row, result)
    _attach_ng_perf(result, observability_enabled=True, rollout_latency_ms=latency_ms)


def clear_previous_outputs(config: RolloutCollectionConfig) -> None:
    """Without resume, a previous run's files go, but never silently: say what is being dropped."""
    output = config.output_path
    if output.exists() and output.stat().st_size > 0:
        count = sum(1 for _ in read_complete_rows(output))
        print(
            f"note: {output} already holds {count} rollouts; clearing it and its side files "
            "(pass +resume_from_cache=true to continue it instead)",
            file=sys.stderr,
            flush=True,
        )
    config.metrics_path.unlink(missing_ok=True)


class _Progress:
    """The run's output files and its progress bar (mean reward and failures so far)."""

    def __init__(self, config: RolloutCollectionConfig, tally: FailureTally, total: int) -> None:
        self.output = JsonlAppender(config.output_path, truncate=not config.resuming)
        self.failures = JsonlAppender(config.failures_path, truncate=True)
        self.tally = tally
        self.reward_sum, self.reward_count = 0.0, 0
        self.bar = tqdm(total=total, desc="rollouts", unit="rollout", dynamic_ncols=True, smoothing=0.1)

    def _show(self) -> None:
        mean = f"{self.reward_sum / self.reward_count:.3f}" if self.reward_count else "-"
        self.bar.set_postfix(mean_reward=mean, failed=self.tally.total, refresh=False)

    def failed(self, row: dict[str, Any], failure: dict[str, Any]) -> None:
        self.failures.write({**row, **failure})
        message = failure.get(FAILURE_MESSAGE_KEY) or failure.get("error_message", "")
        self.tally.add(failure[FAILURE_CLASS_KEY], str(message))
        self._show()
        self.bar.update(1)

    def succeeded(self, record: dict[str, Any]) -> None:
        self.output.write(record)
        reward = record.get("reward")
        if isinstance(reward, int | float) and not isinstance(reward, bool):
            self.reward_sum += reward
            self.reward_count += 1
            self._show()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self.output.close()
        self.failures.close()


class RolloutCollector:
    def __init__(self, config: RolloutCollectionConfig, server_client: ServerClient) -> None:
        self.config = config
        self.client = server_client
        self.failures = FailureTally()
        self.peak_in_flight = 0

    def _plan(self, done: set[tuple[Any, Any]]) -> tuple[list[InputRow], list[dict[str, Any]]]:
        """(unusable input lines, the rollouts still to run)."""
        c = self.config
        items = list(read_input_rows(c.input_path, c.limit))
        valid = [{**item.row, TASK_KEY: item.index} for item in items if item.row is not None]
        rollouts = [r for r in expand_rows(valid, c.expansion_plan()) if done_key(r) not in done]
        return [item for item in items if item.row is None], rollouts

    async def collect(self) -> dict[str, Any]:
        c = self.config
        done: set[tuple[Any, Any]] = set()
        if c.resuming:
            done = {done_key(r) for r in read_complete_rows(c.output_path)}
        else:
            clear_previous_outputs(c)
        invalid, rollouts = self._plan(done)
        invalid_jobs = [
            (item, r)
            for item in invalid
            for r in range(c.num_repeats if isinstance(c.num_repeats, int) else 1)
            if (item.index, r) not in done
        ]
        attempted = len(rollouts) + len(invalid_jobs)
        progress = _Progress(c, self.failures, attempted)
        started = time.monotonic()
        try:
            for item, repeat in invalid_jobs:
                progress.failed(
                    {TASK_KEY: item.index, ROLLOUT_KEY: repeat},
                    {FAILURE_CLASS_KEY: INVALID_INPUT_ROW, FAILURE_MESSAGE_KEY: item.error or ""},
                )
            await self._run(rollouts, progress)
        finally:
            progress.close()
        elapsed = time.monotonic() - started

        all_rows = list(read_complete_rows(c.output_path))
        metrics: dict[str, Any] = {
            **numeric_means(all_rows),
            "num_rollouts": len(all_rows),
            "num_failed": self.failures.total,
            "num_attempted_this_run": attempted,
            "num_skipped_already_done": len(done),
            "num_context_length_fallbacks": sum(is_context_length_fallback(r) for r in all_rows),
            "failure_classes": dict(self.failures.counts.most_common()),
            "wall_time_s": round(elapsed, 3),
        }
        if c.disable_aggregation:
            return metrics
        await self._aggregate(metrics, all_rows)
        c.metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics

    def _dispatch_options(self) -> DispatchOptions:
        c = self.config
        resident = c.max_resident_rollout_tasks or c.parallel
        return DispatchOptions(
            routes=EnvironmentRoutes.from_config(
                self.client.global_config, c.routing(self.client.global_config)
            ),
            semaphore=asyncio.Semaphore(c.parallel) if resident > c.parallel else None,
            route_failures_to_sidecar=c.route_failures_to_sidecar,
            max_resident_tasks=resident,
            dispatch_budget_s=c.dispatch_budget_s,
            drain_margin_s=c.drain_margin_s,
            rollout_timeout_s=c.rollout_timeout_s,
        )

    async def _run(self, rollouts: list[dict[str, Any]], progress: _Progress) -> None:
        """Each rollout's record goes to the output, or its failure to the failures file, as it finishes."""
        observability = bool(self.client.global_config.get("observability_enabled"))
        pending = dispatch(rollouts, self.client, self._dispatch_options(), unwrap=False)
        try:
            for awaitable in pending:
                finished = await awaitable
                row, result = finished.row, finished.result
                if finished.dispatch is not None and FAILURE_CLASS_KEY not in result:
                    result = record_from_answer(row, result, finished.dispatch)
                    if observability:
                        attach_observability(row, result, finished.latency_ms)
                keys = {TASK_KEY: row[TASK_KEY], ROLLOUT_KEY: row[ROLLOUT_KEY]}
                if result.get(NO_PERSIST_KEY):
                    progress.bar.update(1)
                elif FAILURE_CLASS_KEY in result:
                    progress.failed({**row, **keys}, result)
                else:
                    stamp = {AGENT_REF_KEY: {"type": "responses_api_agents", "name": agent_ref_name(row)}}
                    progress.succeeded({**result, **stamp, **keys})
        finally:
            await pending.aclose()
            self.peak_in_flight = pending.peak_resident

    async def _aggregate(self, metrics: dict[str, Any], all_rows: list[dict[str, Any]]) -> None:
        """Each resources server's own aggregate over the rows of its agents."""
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for row in all_rows:
            name = agent_ref_name(row) or self.config.agent_name
            if name:
                by_agent.setdefault(name, []).append(row)
        server_metrics = await resources_server_aggregates(self.client, by_agent)
        if server_metrics:
            metrics["resources_servers"] = server_metrics

    def exit_code(self, metrics: dict[str, Any]) -> int:
        """Non-zero when nothing worked, when failures passed `+max_failures`, or any is missing
        under `+require_complete`."""
        failed, attempted = metrics["num_failed"], metrics["num_attempted_this_run"]
        if attempted and failed == attempted:
            return 1
        if self.config.require_complete and failed:
            return 1
        if self.config.max_failures is not None and failed > self.config.max_failures:
            return 1
        return 0
