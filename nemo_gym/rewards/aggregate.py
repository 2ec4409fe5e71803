"""The `/aggregate_metrics` answer of a resources server or agent, shaped by its hooks.

``AggregateMetricsMixin`` gives a server the ``compute_metrics`` / ``compute_repeat_metrics`` /
``get_key_metrics`` hooks that ``compute_aggregate_metrics`` calls.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from nemo_gym.config_types import AggregateMetrics
from nemo_gym.global_config import AGENT_REF_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME
from nemo_gym.rewards.profile import ACROSS_REPEATS_MARKER, RewardProfiler, is_number
from nemo_gym.rewards.stats import percentile

MASK_SAMPLE_FIELD = "mask_sample"
TasksHook = Callable[[list[list[dict[str, Any]]]], dict[str, Any]]


class AggregateMetricsMixin:
    """Hooks a resources server (or agent) overrides to shape its ``/aggregate_metrics``."""

    def aggregate_with_hooks(self, verify_responses: list[dict[str, Any]]) -> AggregateMetrics:
        """The `/aggregate_metrics` answer, shaped by this server's own hook overrides."""
        return compute_aggregate_metrics(
            verify_responses,
            compute_metrics_fn=self.compute_metrics,
            get_key_metrics_fn=self.get_key_metrics,
            compute_repeat_metrics_fn=self.compute_repeat_metrics,
        )

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Extra run-level metrics from all verify responses grouped by task (merged into agent_metrics).

        A ``per_task_metrics`` list (dicts with ``_ng_task_index``) is merged into the per-task rows.
        """
        return {}

    def compute_repeat_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Metrics of one repeat (grouped by task); summarized across repeats."""
        return {}

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics; by default every ``mean/...`` entry."""
        return {k: v for k, v in agent_metrics.items() if k.startswith("mean/")}


def _is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(float(value))


def _group_by_task(verify_responses: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for vr in verify_responses:
        groups[vr.get(TASK_INDEX_KEY_NAME, 0)].append(vr)
    return [groups[k] for k in sorted(groups)]


def _coverage(
    all_responses: list[dict[str, Any]], scored: list[dict[str, Any]], masked: list[dict[str, Any]]
) -> dict[str, int]:
    if not masked:
        return {}
    total = {vr.get(TASK_INDEX_KEY_NAME, 0) for vr in all_responses}
    measured = {vr.get(TASK_INDEX_KEY_NAME, 0) for vr in scored}
    return {
        "coverage/measured_rollouts": len(scored),
        "coverage/masked_rollouts": len(masked),
        "coverage/measured_tasks": len(measured),
        "coverage/fully_masked_tasks": len(total - measured),
    }


_PERF_STATS: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.fmean,
    "median": lambda values: float(statistics.median(values)),
    "total": sum,
    "std": statistics.pstdev,
    "min": min,
    "max": max,
}


def _perf_stat(values: list[float], stat: str) -> float:
    """`stat` is a name of _PERF_STATS or a percentile, `p90`."""
    if stat in _PERF_STATS:
        return _PERF_STATS[stat](values)
    return percentile(values, int(stat[1:]))


def compute_perf_summary(records: list[dict[str, Any]], total_rollouts: int) -> dict[str, Any] | None:
    """Cross-rollout efficiency stats from each rollout's ``ng_perf`` dict (None when there are none)."""
    if total_rollouts <= 0 or not records:
        return None

    def values_of(key: str) -> list[float]:
        return [r[key] for r in records if is_number(r.get(key))]

    def add(name: str, values: list[float], stats: tuple[str, ...], template: str = "{stat}_{name}") -> None:
        for stat in stats if values else ():
            summary[template.format(stat=stat, name=name)] = _perf_stat(values, stat)

    summary: dict[str, Any] = {
        "overall_observability_coverage": len(records) / total_rollouts,
        "token_observability_coverage": sum(
            1
            for r in records
            if is_number(r.get("token_observability_coverage")) and r["token_observability_coverage"] > 0
        )
        / total_rollouts,
    }
    for field in ("prompt_tokens", "cached_prompt_tokens", "completion_tokens", "reasoning_tokens"):
        add(field, values_of(field), ("mean", "median", "total"))
    add("num_turns", values_of("num_turns"), ("mean", "median", "std", "min", "p90", "max"))
    per_turn = [
        r["completion_tokens"] / r["num_turns"]
        for r in records
        if is_number(r.get("completion_tokens")) and is_number(r.get("num_turns")) and r["num_turns"] > 0
    ]
    add("tokens_per_turn", per_turn, ("mean", "median"))
    add("total_latency", values_of("total_latency_ms"), ("p50", "p90", "p99", "mean"), "{name}_{stat}_ms")
    return summary


def _apply_repeat_hook(
    profiler: RewardProfiler,
    scored: list[dict[str, Any]],
    repeat_level: list[dict[str, Any]],
    agent_metrics: dict[str, Any],
    custom: dict[str, Any],
    hook: TasksHook,
) -> None:
    """Per-repeat custom metrics replace generic ones of the same name, and are re-summarized."""
    if not repeat_level:
        return
    by_repeat: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for vr in scored:
        by_repeat[vr.get(ROLLOUT_INDEX_KEY_NAME, 0)].append(vr)
    per_repeat = [hook(_group_by_task(by_repeat[row[ROLLOUT_INDEX_KEY_NAME]])) for row in repeat_level]
    names = {name for metrics in per_repeat for name in metrics}
    if not names:
        return
    for name in names:
        values = [metrics.get(name) for metrics in per_repeat]
        for row in repeat_level:
            row.pop(name, None)
        full_run_ok = name not in custom or _is_finite_number(custom[name])
        if full_run_ok and all(_is_finite_number(v) for v in values):
            for row, value in zip(repeat_level, values, strict=True):
                row[name] = float(value)
    for key in list(agent_metrics):
        if ACROSS_REPEATS_MARKER in key and key.split(ACROSS_REPEATS_MARKER, 1)[1] in names:
            del agent_metrics[key]
    for aggregate in profiler._aggregate_repeat_level_metrics(repeat_level):
        agent_metrics.update({k: v for k, v in aggregate.items() if k != AGENT_REF_KEY_NAME})


def _apply_metrics_hook(
    scored: list[dict[str, Any]], groups: list[dict[str, Any]], agent_metrics: dict[str, Any], hook: TasksHook
) -> dict[str, Any]:
    """The hook's run-level metrics go into agent_metrics, its ``per_task_metrics`` into the task rows."""
    custom = hook(_group_by_task(scored))
    per_task = custom.pop("per_task_metrics", None)
    if per_task:
        by_task = {m[TASK_INDEX_KEY_NAME]: m for m in per_task}
        for group in groups:
            extra = by_task.get(group.get(TASK_INDEX_KEY_NAME))
            if extra:
                group.update({k: v for k, v in extra.items() if k != TASK_INDEX_KEY_NAME})
    agent_metrics.update(custom)
    return custom


def _overrides_repeat_hook(hook: TasksHook | None) -> bool:
    """A server's own compute_repeat_metrics (the mixin's default does nothing)."""
    return (
        hook is not None
        and getattr(hook, "__func__", None) is not AggregateMetricsMixin.compute_repeat_metrics
    )


def compute_aggregate_metrics(
    verify_responses: list[dict[str, Any]],
    compute_metrics_fn: TasksHook | None = None,
    get_key_metrics_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    compute_repeat_metrics_fn: TasksHook | None = None,
) -> AggregateMetrics:
    """The ``/aggregate_metrics`` answer for a run's verify responses.

    Baseline stats (mean/max/min/median/std of every numeric field) per task, overall and
    per repeat; then the optional hooks: ``compute_metrics_fn`` (all responses grouped by task,
    merged into agent_metrics), ``get_key_metrics_fn`` (headline subset) and
    ``compute_repeat_metrics_fn`` (one repeat grouped by task, summarized across repeats).
    Samples with ``mask_sample`` set are left out of quality metrics and reported as coverage.
    """
    if not verify_responses:
        return AggregateMetrics()
    scored = [vr for vr in verify_responses if not vr.get(MASK_SAMPLE_FIELD)]
    masked = [vr for vr in verify_responses if vr.get(MASK_SAMPLE_FIELD)]
    coverage = _coverage(verify_responses, scored, masked)
    perf_summary = compute_perf_summary(
        [vr["ng_perf"] for vr in verify_responses if isinstance(vr.get("ng_perf"), dict)],
        total_rollouts=len(verify_responses),
    )
    if not scored:
        return AggregateMetrics(
            agent_metrics=dict(coverage), key_metrics=dict(coverage), perf_summary=perf_summary
        )

    profiler = RewardProfiler()
    results = [{k: v for k, v in vr.items() if k != MASK_SAMPLE_FIELD} for vr in scored]
    rows = [
        {
            TASK_INDEX_KEY_NAME: vr.get(TASK_INDEX_KEY_NAME, 0),
            ROLLOUT_INDEX_KEY_NAME: vr.get(ROLLOUT_INDEX_KEY_NAME, 0),
            AGENT_REF_KEY_NAME: {"name": "agent"},
        }
        for vr in scored
    ]
    group_level, agent_level, repeat_level = profiler.profile_from_data(
        rows, results, allow_partial_rollouts=True
    )

    agent_metrics: dict[str, Any] = {}
    for entry in agent_level:
        agent_metrics.update({k: v for k, v in entry.items() if k != AGENT_REF_KEY_NAME})
    groups = profiler.prepare_for_serialization(group_level)
    agent_metrics = profiler.prepare_for_serialization([agent_metrics])[0]
    agent_metrics.update(coverage)

    custom = (
        _apply_metrics_hook(scored, groups, agent_metrics, compute_metrics_fn) if compute_metrics_fn else {}
    )
    agent_metrics["num_repeats"] = len({vr.get(ROLLOUT_INDEX_KEY_NAME, 0) for vr in verify_responses})

    if get_key_metrics_fn:
        key_metrics = dict(get_key_metrics_fn(agent_metrics))
    else:
        key_metrics = {k: v for k, v in agent_metrics.items() if k.startswith("mean/")}
    key_metrics.update(coverage)

    if compute_repeat_metrics_fn is not None and _overrides_repeat_hook(compute_repeat_metrics_fn):
        _apply_repeat_hook(profiler, scored, repeat_level, agent_metrics, custom, compute_repeat_metrics_fn)

    return AggregateMetrics(
        group_level_metrics=groups,
        agent_metrics=agent_metrics,
        key_metrics=key_metrics,
        perf_summary=perf_summary,
        repeat_level_metrics=[{k: v for k, v in e.items() if k != AGENT_REF_KEY_NAME} for e in repeat_level],
    )
