"""`ng_collect_rollouts`: run every (task, repeat) through an agent's `/run`, at most
`concurrency` at a time, writing each result the moment it finishes.

Rows carry NeMo Gym's `_ng_task_index` and `_ng_rollout_index`, so `+resume_from_cache=true` can
skip what is done: an interrupted run loses nothing and repeats nothing. A failing rollout goes to
`<stem>_failures.jsonl` with `_ng_failure_class`/`_ng_failure_message`, and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from nemo_gym.http.server_client import ServerClient, message_from_body
from nemo_gym.rollouts.aggregate import (
    is_context_length_fallback,
    numeric_means,
    resources_server_aggregates,
)
from nemo_gym.rollouts.failures import (
    AGENT_REQUEST_FAILED,
    AGENT_RUN_ERROR,
    INVALID_INPUT_ROW,
    NO_AGENT,
    FailureTally,
    RolloutFailure,
    classify,
)
from nemo_gym.rollouts.jsonl import JsonlAppender, read_complete_rows
from nemo_gym.rollouts.keys import (
    AGENT_REF_KEY,
    FAILURE_CLASS_KEY,
    FAILURE_MESSAGE_KEY,
    ROLLOUT_KEY,
    TASK_KEY,
    agent_ref_name,
    aggregate_metrics_path_for,
    done_key,
    failures_path_for,
)


@dataclass
class CollectSettings:
    agent_name: str | None
    input_path: Path
    output_path: Path
    limit: int | None = None
    concurrency: int = 32
    num_repeats: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    max_failures: int | None = None
    agent_map: dict[str, str] = field(default_factory=dict)
    interleave_repeats: bool = False
    disable_aggregation: bool = False
    require_complete: bool = False

    @property
    def failures_path(self) -> Path:
        return failures_path_for(self.output_path)

    @property
    def metrics_path(self) -> Path:
        return aggregate_metrics_path_for(self.output_path)


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


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_agent(settings: CollectSettings, row: dict[str, Any]) -> str | None:
    """The agent a row goes to, with NeMo Gym's precedence (see `RolloutCollector.agent_for`)."""
    ref = agent_ref_name(row)
    if ref is not None and ref in settings.agent_map:
        return settings.agent_map[ref]
    return settings.agent_map.get("_default") or settings.agent_name or ref


def clear_previous_outputs(settings: CollectSettings) -> None:
    """Without resume, a previous run's files go, but never silently: say what is being dropped."""
    output = settings.output_path
    if output.exists() and output.stat().st_size > 0:
        count = sum(1 for _ in read_complete_rows(output))
        print(
            f"note: {output} already holds {count} rollouts; clearing it and its side files "
            "(pass +resume_from_cache=true to continue it instead)",
            file=sys.stderr,
            flush=True,
        )
    settings.metrics_path.unlink(missing_ok=True)


class RolloutCollector:
    def __init__(self, settings: CollectSettings, server_client: ServerClient) -> None:
        self.settings = settings
        self.client = server_client
        self.in_flight = 0
        self.max_in_flight = 0
        self.failures = FailureTally()

    def agent_for(self, row: dict[str, Any]) -> str:
        """agent_map[row's agent_ref] > agent_map._default > `+agent_name` > the row's own agent_ref."""
        agent = resolve_agent(self.settings, row)
        if not agent:
            raise RolloutFailure(NO_AGENT, "row has no agent_ref and +agent_name was not given")
        return agent

    async def _run_one(self, agent: str, row: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(agent, "/run", json=row)
        content = await response.read()
        if response.status >= 400:
            message = message_from_body(content)
            raise RolloutFailure(
                AGENT_REQUEST_FAILED, f"agent {agent!r} /run returned HTTP {response.status}: {message}"
            )
        result = orjson.loads(content)
        if not isinstance(result, dict):
            raise RolloutFailure(
                AGENT_RUN_ERROR, f"agent {agent!r} /run returned {type(result).__name__}, not an object"
            )
        return result

    async def collect(self) -> dict[str, Any]:
        s = self.settings
        done: set[tuple[Any, Any]] = set()
        if s.resume:
            done = {done_key(r) for r in read_complete_rows(s.output_path)}
        else:
            clear_previous_outputs(s)
        output = JsonlAppender(s.output_path, truncate=not s.resume)
        failures = JsonlAppender(s.failures_path, truncate=True)

        items = list(read_input_rows(s.input_path, s.limit))
        order = (
            [(item, r) for r in range(s.num_repeats) for item in items]
            if s.interleave_repeats
            else [(item, r) for item in items for r in range(s.num_repeats)]
        )
        jobs = [(item, repeat) for item, repeat in order if (item.index, repeat) not in done]

        reward_sum, reward_count = 0.0, 0
        tally = self.failures
        bar = tqdm(total=len(jobs), desc="rollouts", unit="rollout", dynamic_ncols=True, smoothing=0.1)

        def show() -> None:
            mean = f"{reward_sum / reward_count:.3f}" if reward_count else "-"
            bar.set_postfix(mean_reward=mean, failed=tally.total, refresh=False)

        def record_failure(
            keys: dict[str, int], base: dict[str, Any], failure_class: str, message: str
        ) -> None:
            failures.write({**base, **keys, FAILURE_CLASS_KEY: failure_class, FAILURE_MESSAGE_KEY: message})
            tally.add(failure_class, message)
            show()

        async def run_job(item: InputRow, repeat: int) -> None:
            nonlocal reward_sum, reward_count
            keys = {TASK_KEY: item.index, ROLLOUT_KEY: repeat}
            if item.row is None:
                record_failure(keys, {}, INVALID_INPUT_ROW, item.error or "unusable input row")
                return
            row = {
                **item.row,
                "responses_create_params": deep_merge(item.row["responses_create_params"], s.overrides),
            }
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                agent = self.agent_for(row)
                result = await self._run_one(agent, row)
            except Exception as exc:  # any failure of one rollout is recorded; the run goes on
                failure_class, message = classify(exc)
                record_failure(keys, row, failure_class, message)
            else:
                # Tagged with the agent that produced it (after any agent_map re-route), as NeMo Gym does.
                stamp = {AGENT_REF_KEY: {"type": "responses_api_agents", "name": agent}}
                output.write({**result, **stamp, **keys})
                reward = result.get("reward")
                if isinstance(reward, int | float) and not isinstance(reward, bool):
                    reward_sum += reward
                    reward_count += 1
                    show()
            finally:
                self.in_flight -= 1

        # A fixed pool of `concurrency` workers pulling from one iterator: memory stays bounded
        # however many (task, repeat) jobs there are (one coroutine per job would not).
        pending = iter(jobs)

        async def worker() -> None:
            for item, repeat in pending:
                await run_job(item, repeat)
                bar.update(1)

        started = time.monotonic()
        try:
            await asyncio.gather(*(worker() for _ in range(min(s.concurrency, len(jobs)) or 1)))
        finally:
            bar.close()
            output.close()
            failures.close()
        elapsed = time.monotonic() - started

        all_rows = list(read_complete_rows(s.output_path))
        metrics: dict[str, Any] = {
            **numeric_means(all_rows),
            "num_rollouts": len(all_rows),
            "num_failed": tally.total,
            "num_attempted_this_run": len(jobs),
            "num_skipped_already_done": len(done),
            "num_context_length_fallbacks": sum(is_context_length_fallback(r) for r in all_rows),
            "failure_classes": dict(tally.counts.most_common()),
            "wall_time_s": round(elapsed, 3),
        }
        if s.disable_aggregation:
            return metrics
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for row in all_rows:
            name = agent_ref_name(row) or s.agent_name
            if name:
                by_agent.setdefault(name, []).append(row)
        server_metrics = await resources_server_aggregates(self.client, by_agent)
        if server_metrics:
            metrics["resources_servers"] = server_metrics
        s.metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics

    def exit_code(self, metrics: dict[str, Any]) -> int:
        """Non-zero when nothing worked, when failures passed `+max_failures`, or any is missing
        under `+require_complete`."""
        failed, attempted = metrics["num_failed"], metrics["num_attempted_this_run"]
        if attempted and failed == attempted:
            return 1
        if self.settings.require_complete and failed:
            return 1
        if self.settings.max_failures is not None and failed > self.settings.max_failures:
            return 1
        return 0
