"""`ng_collect_rollouts`: run every (row, repeat) through an agent's `/run`, at most
`concurrency` at a time, writing each result the moment it finishes.

Rows carry `_ng_row_index` and `_ng_repeat_index`, so `+resume=true` can skip what is done:
an interrupted run loses nothing and repeats nothing. A failing rollout goes to
`<stem>_failures.jsonl` with its error and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from nemo_gym.http.server_client import ServerClient, message_from_body
from nemo_gym.rollouts.jsonl import JsonlAppender, read_complete_rows

ROW_KEY = "_ng_row_index"
REPEAT_KEY = "_ng_repeat_index"


@dataclass
class CollectSettings:
    agent_name: str
    input_path: Path
    output_path: Path
    limit: int | None = None
    concurrency: int = 32
    num_repeats: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False

    @property
    def failures_path(self) -> Path:
        return self.output_path.with_name(f"{self.output_path.stem}_failures.jsonl")

    @property
    def metrics_path(self) -> Path:
        return self.output_path.with_name(f"{self.output_path.stem}_metrics.json")


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


def numeric_means(rows: list[dict[str, Any]]) -> dict[str, float]:
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


class RolloutCollector:
    def __init__(self, settings: CollectSettings, server_client: ServerClient) -> None:
        self.settings = settings
        self.client = server_client
        self.in_flight = 0
        self.max_in_flight = 0

    async def _run_one(self, row: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(self.settings.agent_name, "/run", json=row)
        content = await response.read()
        if response.status >= 400:
            message = message_from_body(content)
            raise RuntimeError(
                f"agent {self.settings.agent_name!r} /run returned HTTP {response.status}: {message}"
            )
        result = orjson.loads(content)
        if not isinstance(result, dict):
            raise RuntimeError(
                f"agent {self.settings.agent_name!r} /run returned {type(result).__name__}, not an object"
            )
        return result

    async def collect(self) -> dict[str, Any]:
        s = self.settings
        done: set[tuple[int, int]] = set()
        if s.resume:
            done = {(r.get(ROW_KEY), r.get(REPEAT_KEY)) for r in read_complete_rows(s.output_path)}  # type: ignore[misc]
        output = JsonlAppender(s.output_path, truncate=not s.resume)
        failures = JsonlAppender(s.failures_path, truncate=True)

        jobs: list[tuple[InputRow, int]] = []
        for item in read_input_rows(s.input_path, s.limit):
            for repeat in range(s.num_repeats):
                if (item.index, repeat) not in done:
                    jobs.append((item, repeat))

        reward_sum, reward_count, n_failed = 0.0, 0, 0
        bar = tqdm(total=len(jobs), desc="rollouts", unit="rollout", dynamic_ncols=True, smoothing=0.1)

        async def run_job(item: InputRow, repeat: int) -> None:
            nonlocal reward_sum, reward_count, n_failed
            keys = {ROW_KEY: item.index, REPEAT_KEY: repeat}
            if item.row is None:
                failures.write({**keys, "error": item.error})
                n_failed += 1
                return
            row = {
                **item.row,
                "responses_create_params": deep_merge(item.row["responses_create_params"], s.overrides),
            }
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                result = await self._run_one(row)
            except Exception as exc:  # any failure of one rollout is recorded; the run goes on
                message = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
                failures.write({**keys, "error": message, "row": row})
                n_failed += 1
            else:
                output.write({**result, **keys})
                reward = result.get("reward")
                if isinstance(reward, int | float) and not isinstance(reward, bool):
                    reward_sum += reward
                    reward_count += 1
                    bar.set_postfix(mean_reward=f"{reward_sum / reward_count:.3f}", refresh=False)
            finally:
                self.in_flight -= 1

        # A fixed pool of `concurrency` workers pulling from one iterator: memory stays bounded
        # however many (row, repeat) jobs there are (one coroutine per job would not).
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
        metrics = {
            **numeric_means(all_rows),
            "num_rollouts": len(all_rows),
            "num_failed": n_failed,
            "num_attempted_this_run": len(jobs),
            "num_skipped_already_done": len(done),
            "wall_time_s": round(elapsed, 3),
        }
        s.metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
