"""pass@k, pass@1[avg-of-k] and majority@k over the rollouts of each task, and their spread.

Metric names are flat strings (``pass@4/accuracy``, ``majority@2/accuracy``, ...) so they can be
logged to W&B / MLflow directly; the values are percentages (0-100).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

STAT_SEPARATOR = "/"
STD_DEV_ACROSS_RUNS_SUFFIX = f"{STAT_SEPARATOR}std_dev_across_runs"
STD_ERR_ACROSS_RUNS_SUFFIX = f"{STAT_SEPARATOR}std_err_across_runs"
AVG_SAMPLE_STD_DEV_SUFFIX = f"{STAT_SEPARATOR}avg_sample_std_dev"
PASS_MAJORITY_STAT_SUFFIXES = (
    STD_DEV_ACROSS_RUNS_SUFFIX,
    STD_ERR_ACROSS_RUNS_SUFFIX,
    AVG_SAMPLE_STD_DEV_SUFFIX,
)

ScoreFn = Callable[[dict[str, Any]], dict[str, Any]]
TaskScores = list[dict[str, float]]  # one task: the named scores of each of its rollouts


def _default_score(rollout: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": rollout["reward"]}


def _is_binary(values: list[Any]) -> bool:
    return all(v in (0, 1) for v in values)


def _pass_at_k(values: list[Any], k: int) -> float:
    """Unbiased combinatorial pass@k for 0/1 scores; best of the first k otherwise."""
    if _is_binary(values):
        failures = sum(1 for v in values if not v)
        if failures < k:
            return 1.0
        return 1.0 - math.comb(failures, k) / math.comb(len(values), k)
    return max(values[:k])


def _majority_at_k(answers: list[Any], scores: TaskScores, name: str, k: int) -> float:
    votes = [
        (a, s[name]) for a, s in zip(answers[:k], scores[:k], strict=False) if a is not None and name in s
    ]
    if not votes:
        return 0.0
    counts = Counter(votes)
    top = max(counts.values())
    winners = [score for (_, score), count in counts.items() if count == top]
    return sum(winners) / len(winners)


def _percent_mean(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def _score_tasks(
    tasks: list[list[dict[str, Any]]], score_fn: ScoreFn, answer_key: str | None
) -> tuple[list[TaskScores], list[list[Any]]]:
    """Each rollout's named scores (booleans as 0/1, `no_answer` with an answer key) and answer."""
    all_scores: list[TaskScores] = []
    all_answers: list[list[Any]] = []
    for rollouts in tasks:
        task_scores: TaskScores = []
        task_answers: list[Any] = []
        for rollout in rollouts:
            scores = {name: int(v) if isinstance(v, bool) else v for name, v in score_fn(rollout).items()}
            if answer_key is not None:
                answer = rollout.get(answer_key)
                task_answers.append(answer)
                scores["no_answer"] = int(answer is None)
            task_scores.append(scores)
        all_scores.append(task_scores)
        all_answers.append(task_answers)
    return all_scores, all_answers


def _metrics_at_k(
    all_scores: list[TaskScores], all_answers: list[list[Any]] | None, name: str, k: int
) -> dict[str, float]:
    """pass@k and pass@1[avg-of-k] of one score, and majority@k when answers are given."""
    passes = []
    averages = []
    for task_scores in all_scores:
        values = [s[name] for s in task_scores if name in s]
        if values and k <= len(values):
            passes.append(_pass_at_k(values, k))
        first_k = [s[name] for s in task_scores[:k] if name in s]
        if first_k:
            averages.append(sum(first_k) / len(first_k))
    metrics: dict[str, float] = {}
    if passes:
        metrics[f"pass@{k}/{name}"] = _percent_mean(passes)
    if averages:
        metrics[f"pass@1[avg-of-{k}]/{name}"] = _percent_mean(averages)
    if all_answers is not None:
        majorities = [
            _majority_at_k(answers, task_scores, name, k)
            for task_scores, answers in zip(all_scores, all_answers, strict=True)
        ]
        metrics[f"majority@{k}/{name}"] = _percent_mean(majorities)
    return metrics


def _per_sample_aggregate(
    all_scores: list[TaskScores], names: list[str], max_k: int
) -> dict[str, list[float]]:
    """For each score, the percentage over tasks using only rollout i, for each i."""
    per_sample: dict[str, list[float]] = {}
    for run in range(max_k):
        for name in names:
            values = [t[run][name] for t in all_scores if run < len(t) and name in t[run]]
            if values:
                per_sample.setdefault(name, []).append(_percent_mean(values))
    return per_sample


def _spread_across_runs(per_sample: dict[str, list[float]], names: list[str], max_k: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for k in range(2, max_k + 1):
        for name in names:
            runs = per_sample.get(name, [])[:k]
            if len(runs) >= 2:
                std = statistics.stdev(runs)
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_DEV_ACROSS_RUNS_SUFFIX}"] = std
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_ERR_ACROSS_RUNS_SUFFIX}"] = std / math.sqrt(len(runs))
    return metrics


def compute_pass_majority_metrics(
    tasks: list[list[dict[str, Any]]],
    score_fn: ScoreFn | None = None,
    answer_key: str | None = None,
) -> tuple[dict[str, Any], list[TaskScores], list[str], int]:
    """pass@k, pass@1[avg-of-k], majority@k (with ``answer_key``) and spread across runs.

    ``tasks[i]`` holds the rollouts of task i. ``score_fn(rollout)`` returns named scores
    (default ``{"accuracy": rollout["reward"]}``); booleans count as 0/1. With ``answer_key``
    a ``no_answer`` score (1 when the answer is None) is added and majority@k is computed.

    Returns ``(metrics, score dicts per task, sorted score names, max k)``, NeMo Gym's shape.
    ``metrics`` also holds ``per_sample_aggregate``: for each score, the percentage using only
    rollout i.
    """
    if not tasks:
        return {}, [], [], 0
    all_scores, all_answers = _score_tasks(tasks, score_fn or _default_score, answer_key)
    max_k = max(len(rollouts) for rollouts in tasks)
    names = sorted({name for task_scores in all_scores for scores in task_scores for name in scores})
    answers = all_answers if answer_key is not None else None
    metrics: dict[str, Any] = {}
    for k in range(1, max_k + 1):
        for name in names:
            metrics.update(_metrics_at_k(all_scores, answers, name, k))
    per_sample = _per_sample_aggregate(all_scores, names, max_k)
    metrics["per_sample_aggregate"] = per_sample
    metrics.update(_spread_across_runs(per_sample, names, max_k))
    return metrics, all_scores, names, max_k


def add_avg_sample_std_dev(
    metrics: dict[str, Any],
    all_score_dicts: list[TaskScores],
    score_names: list[str],
    max_k: int,
) -> None:
    """Add, in place, the mean over tasks of the within-task std of the first k scores."""
    for k in range(2, max_k + 1):
        for name in score_names:
            stds = []
            for task_scores in all_score_dicts:
                values = [s[name] for s in task_scores[:k] if name in s]
                if len(values) >= 2:
                    stds.append(statistics.stdev(values))
            if stds:
                metrics[f"pass@1[avg-of-{k}]/{name}{AVG_SAMPLE_STD_DEV_SUFFIX}"] = sum(stds) / len(stds)


def compute_subset_metrics(
    tasks: list[list[dict[str, Any]]],
    subset_key: str,
    score_fn: ScoreFn | None = None,
    answer_key: str | None = None,
) -> dict[str, Any]:
    """pass/majority metrics per value of ``subset_key``, named ``<value>/<metric>``.

    A task's subset is taken from the first of its rollouts that has a truthy value.
    """
    subsets: dict[Any, list[list[dict[str, Any]]]] = {}
    for rollouts in tasks:
        value = next((r[subset_key] for r in rollouts if r.get(subset_key)), None)
        if value:
            subsets.setdefault(value, []).append(rollouts)
    metrics: dict[str, Any] = {}
    for value, subset_tasks in subsets.items():
        subset_metrics = compute_pass_majority_metrics(
            subset_tasks, score_fn=score_fn, answer_key=answer_key
        )[0]
        for key, metric in subset_metrics.items():
            if key != "per_sample_aggregate":
                metrics[f"{value}/{key}"] = metric
    return metrics


def highest_k_metrics(
    agent_metrics: dict[str, Any],
    pattern: str,
    score_names: list[str] | None = None,
    exclude_names: list[str] | None = None,
) -> dict[str, Any]:
    """The entries matching ``pattern`` (``{k}`` marks k, e.g. ``"pass@{k}"``) at their largest k.

    Spread statistics (std_dev / std_err across runs, avg_sample_std_dev) are never returned.
    """
    regex = re.compile("^" + re.escape(pattern).replace(r"\{k\}", r"(\d+)") + "/(.+)$")
    found: list[tuple[int, str]] = []
    for key in agent_metrics:
        match = regex.match(key)
        if match is None:
            continue
        name = match.group(2)
        if name.endswith(PASS_MAJORITY_STAT_SUFFIXES):
            continue
        if score_names is not None and name not in score_names:
            continue
        if exclude_names is not None and name in exclude_names:
            continue
        found.append((int(match.group(1)), key))
    if not found:
        return {}
    top = max(k for k, _ in found)
    return {key: agent_metrics[key] for k, key in found if k == top}
