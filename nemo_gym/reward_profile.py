"""Reward statistics over a run: pass@k / majority@k helpers and ``/aggregate_metrics``.

Metric names are flat strings (``mean/reward``, ``pass@4/accuracy``, ...) so they can be
logged to W&B / MLflow directly. Accuracy-like values of the pass/majority helpers are
percentages (0-100).

``AggregateMetricsMixin`` (defined here, import it from ``nemo_gym.reward_profile``) gives a
server the ``compute_metrics`` / ``compute_repeat_metrics`` / ``get_key_metrics`` hooks that
``compute_aggregate_metrics`` calls.
"""

from __future__ import annotations

import math
import re
import statistics
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from numbers import Real
from typing import Any

from nemo_gym.config_types import AggregateMetrics
from nemo_gym.global_config import AGENT_REF_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME

STAT_SEPARATOR = "/"
ACROSS_REPEATS_MARKER = f"_across_repeats{STAT_SEPARATOR}"
STD_DEV_ACROSS_RUNS_SUFFIX = f"{STAT_SEPARATOR}std_dev_across_runs"
STD_ERR_ACROSS_RUNS_SUFFIX = f"{STAT_SEPARATOR}std_err_across_runs"
AVG_SAMPLE_STD_DEV_SUFFIX = f"{STAT_SEPARATOR}avg_sample_std_dev"
PASS_MAJORITY_STAT_SUFFIXES = (
    STD_DEV_ACROSS_RUNS_SUFFIX,
    STD_ERR_ACROSS_RUNS_SUFFIX,
    AVG_SAMPLE_STD_DEV_SUFFIX,
)
MASK_SAMPLE_FIELD = "mask_sample"

ScoreFn = Callable[[dict[str, Any]], dict[str, Any]]


# ---------------------------------------------------------------------------------------
# pass@k / majority@k
# ---------------------------------------------------------------------------------------


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


def _majority_at_k(answers: list[Any], scores: list[dict[str, Any]], name: str, k: int) -> float:
    votes = [
        (a, s[name]) for a, s in zip(answers[:k], scores[:k], strict=False) if a is not None and name in s
    ]
    if not votes:
        return 0.0
    counts = Counter(votes)
    top = max(counts.values())
    winners = [score for (_, score), count in counts.items() if count == top]
    return sum(winners) / len(winners)


def _sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def compute_pass_majority_metrics(
    tasks: list[list[dict[str, Any]]],
    score_fn: ScoreFn | None = None,
    answer_key: str | None = None,
) -> tuple[dict[str, Any], list[list[dict[str, float]]], list[str], int]:
    """pass@k, pass@1[avg-of-k], majority@k (with ``answer_key``) and spread across runs.

    ``tasks[i]`` holds the rollouts of task i. ``score_fn(rollout)`` returns named scores
    (default ``{"accuracy": rollout["reward"]}``); booleans count as 0/1. With ``answer_key``
    a ``no_answer`` score (1 when the answer is None) is added and majority@k is computed.

    Returns ``(metrics, score dicts per task, sorted score names, max k)``. ``metrics`` also
    holds ``per_sample_aggregate``: for each score, the percentage using only rollout i.
    """
    if not tasks:
        return {}, [], [], 0
    score_fn = score_fn or _default_score
    max_k = max(len(rollouts) for rollouts in tasks)

    all_scores: list[list[dict[str, float]]] = []
    all_answers: list[list[Any]] = []
    for rollouts in tasks:
        task_scores: list[dict[str, float]] = []
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

    names = sorted({name for task_scores in all_scores for scores in task_scores for name in scores})
    metrics: dict[str, Any] = {}

    for k in range(1, max_k + 1):
        for name in names:
            passes = []
            averages = []
            for task_scores in all_scores:
                values = [s[name] for s in task_scores if name in s]
                if values and k <= len(values):
                    passes.append(_pass_at_k(values, k))
                first_k = [s[name] for s in task_scores[:k] if name in s]
                if first_k:
                    averages.append(sum(first_k) / len(first_k))
            if passes:
                metrics[f"pass@{k}/{name}"] = 100.0 * sum(passes) / len(passes)
            if averages:
                metrics[f"pass@1[avg-of-{k}]/{name}"] = 100.0 * sum(averages) / len(averages)
            if answer_key is not None:
                majorities = [
                    _majority_at_k(answers, task_scores, name, k)
                    for task_scores, answers in zip(all_scores, all_answers, strict=True)
                ]
                metrics[f"majority@{k}/{name}"] = 100.0 * sum(majorities) / len(majorities)

    per_sample: dict[str, list[float]] = {}
    for run in range(max_k):
        for name in names:
            values = [t[run][name] for t in all_scores if run < len(t) and name in t[run]]
            if values:
                per_sample.setdefault(name, []).append(100.0 * sum(values) / len(values))
    metrics["per_sample_aggregate"] = per_sample

    for k in range(2, max_k + 1):
        for name in names:
            runs = per_sample.get(name, [])[:k]
            if len(runs) >= 2:
                std = _sample_std(runs)
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_DEV_ACROSS_RUNS_SUFFIX}"] = std
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_ERR_ACROSS_RUNS_SUFFIX}"] = std / math.sqrt(len(runs))

    return metrics, all_scores, names, max_k


def add_avg_sample_std_dev(
    metrics: dict[str, Any],
    all_score_dicts: list[list[dict[str, float]]],
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
                    stds.append(_sample_std(values))
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


# ---------------------------------------------------------------------------------------
# Server hooks
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Descriptive statistics
# ---------------------------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def _student_t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    log_front = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - math.lgamma(0.5) + (df / 2) * math.log(x)
    log_front += 0.5 * math.log1p(-x) if x < 1 else 0.0
    a, b = df / 2, 0.5
    if x < (a + 1) / (a + b + 2):
        tail = math.exp(log_front) * _betacf(a, b, x) / a
    else:
        tail = 1.0 - math.exp(log_front) * _betacf(b, a, 1 - x) / b
    half = 0.5 * tail
    return 1.0 - half if t > 0 else half


def _student_t_ppf(p: float, df: float) -> float:
    low, high = 0.0, 1e6
    for _ in range(200):
        mid = (low + high) / 2
        if _student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _confidence_interval(
    mean: float, sem: float, n: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    if n <= 1:
        return None
    if sem == 0:
        return mean, mean
    half_width = _student_t_ppf(0.5 + confidence / 2, n - 1) * sem
    return mean - half_width, mean + half_width


def _describe(columns: dict[str, list[float]]) -> dict[str, float]:
    """mean / max / min / median / std (sample; 0 for a single value) of each column."""
    out: dict[str, float] = {}
    for stat in ("mean", "max", "min", "median", "std"):
        for col, values in columns.items():
            if not values:
                continue
            if stat == "mean":
                value = statistics.fmean(values)
            elif stat == "max":
                value = max(values)
            elif stat == "min":
                value = min(values)
            elif stat == "median":
                value = statistics.median(values)
            else:
                value = statistics.stdev(values) if len(values) > 1 else 0.0
            out[f"{stat}/{col}"] = value
    return out


def _numeric_fields(result: dict[str, Any]) -> dict[str, float]:
    """The numeric (bool as int) top-level fields of a result plus its response usage counts."""
    response = result.get("response")
    usage = (response.get("usage") if isinstance(response, dict) else None) or {}
    out: dict[str, float] = {}
    for key, value in {**result, **usage}.items():
        if key.startswith("_"):
            continue
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (int, float)):
            out[key] = value
    return out


def _columns(records: list[dict[str, float]]) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            columns.setdefault(key, []).append(value)
    return {
        k: [v for v in vals if not (isinstance(v, float) and math.isnan(v))] for k, vals in columns.items()
    }


def is_repeat_aggregatable_metric(name: Any) -> bool:
    """A per-repeat point estimate (``mean/...`` or a custom metric), not a spread or metadata."""
    if not isinstance(name, str) or ACROSS_REPEATS_MARKER in name:
        return False
    if name in (
        TASK_INDEX_KEY_NAME,
        ROLLOUT_INDEX_KEY_NAME,
        "_ng_attempt_index",
        "sample_count",
        "missing_count",
    ):
        return False
    stat_prefixes = (
        "max/",
        "min/",
        "median/",
        "std/",
        "sem/",
        "se/",
        "p25/",
        "p75/",
        "ci_low_95/",
        "ci_high_95/",
    )
    if name.startswith(stat_prefixes) or name.startswith("histogram"):
        return False
    excluded_suffixes = (
        "/max",
        "/min",
        "/median",
        "/p5",
        "/p25",
        "/p75",
        "/p95",
        "/ci_low_95",
        "/ci_high_95",
        "/ci_lower",
        "/ci_upper",
        "_ci_lower",
        "_ci_upper",
        "_ci95_lower",
        "_ci95_upper",
    ) + PASS_MAJORITY_STAT_SUFFIXES
    return not name.endswith(excluded_suffixes)


def _rollout_key(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get(TASK_INDEX_KEY_NAME, 0), row.get(ROLLOUT_INDEX_KEY_NAME, 0)


class RewardProfiler:
    """Per-task, overall and per-repeat descriptive statistics of rollout results."""

    def rollout_info_from_result(self, result: dict[str, Any]) -> dict[str, Any]:
        task_idx, rollout_idx = _rollout_key(result)
        info: dict[str, Any] = {
            "rollout_id": f"{task_idx}:{rollout_idx}",
            TASK_INDEX_KEY_NAME: task_idx,
            ROLLOUT_INDEX_KEY_NAME: rollout_idx,
        }
        if "reward" in result:
            info["reward"] = result["reward"]
        for key, value in _numeric_fields({k: v for k, v in result.items() if k != "reward"}).items():
            info.setdefault(key, value)
        return info

    def _repeat_level_metrics(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        repeats = sorted({r[ROLLOUT_INDEX_KEY_NAME] for r in records})
        if len(repeats) <= 1:
            return []
        total_tasks = len({r[TASK_INDEX_KEY_NAME] for r in records})
        out = []
        for repeat in repeats:
            group = [r for r in records if r[ROLLOUT_INDEX_KEY_NAME] == repeat]
            present = len({r[TASK_INDEX_KEY_NAME] for r in group})
            entry: dict[str, Any] = {
                AGENT_REF_KEY_NAME: {"name": group[0]["agent_name"]},
                ROLLOUT_INDEX_KEY_NAME: int(repeat),
                "sample_count": present,
                "missing_count": total_tasks - present,
            }
            columns = _columns([r["values"] for r in group])
            for col in sorted(columns):
                values = columns[col]
                n = len(values)
                if n == 0:
                    continue
                mean = statistics.fmean(values)
                std = statistics.stdev(values) if n > 1 else 0.0
                sem = std / math.sqrt(n)
                entry.update(
                    {
                        f"mean/{col}": mean,
                        f"median/{col}": float(statistics.median(values)),
                        f"std/{col}": std,
                        f"sem/{col}": sem,
                        f"min/{col}": float(min(values)),
                        f"max/{col}": float(max(values)),
                        f"p25/{col}": _quantile(values, 0.25),
                        f"p75/{col}": _quantile(values, 0.75),
                    }
                )
                ci = _confidence_interval(mean, sem, n)
                if ci:
                    entry[f"ci_low_95/{col}"], entry[f"ci_high_95/{col}"] = ci
            out.append(entry)
        if any(e["missing_count"] for e in out):
            warnings.warn(
                "some repeats are missing rollouts; repeat-level metrics use unequal samples", stacklevel=2
            )
        return out

    def _aggregate_repeat_level_metrics(
        self, repeat_level_metrics: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if not repeat_level_metrics:
            return []
        by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in repeat_level_metrics:
            by_agent[entry[AGENT_REF_KEY_NAME]["name"]].append(entry)
        out = []
        for agent, entries in by_agent.items():
            aggregate: dict[str, Any] = {AGENT_REF_KEY_NAME: {"name": agent}}
            names: list[str] = []
            for entry in entries:
                for name, value in entry.items():
                    if name not in names and is_repeat_aggregatable_metric(name) and _is_number(value):
                        names.append(name)
            for name in names:
                values = [
                    float(e[name]) for e in entries if _is_number(e.get(name)) and not math.isnan(e[name])
                ]
                n = len(values)
                if n == 0:
                    continue
                mean = statistics.fmean(values)
                std = statistics.stdev(values) if n > 1 else 0.0
                se = std / math.sqrt(n)
                aggregate[f"mean{ACROSS_REPEATS_MARKER}{name}"] = mean
                aggregate[f"median{ACROSS_REPEATS_MARKER}{name}"] = float(statistics.median(values))
                aggregate[f"std{ACROSS_REPEATS_MARKER}{name}"] = std
                aggregate[f"min{ACROSS_REPEATS_MARKER}{name}"] = min(values)
                aggregate[f"max{ACROSS_REPEATS_MARKER}{name}"] = max(values)
                aggregate[f"se{ACROSS_REPEATS_MARKER}{name}"] = se
                ci = _confidence_interval(mean, se, n)
                if ci:
                    aggregate[f"ci_low_95{ACROSS_REPEATS_MARKER}{name}"] = ci[0]
                    aggregate[f"ci_high_95{ACROSS_REPEATS_MARKER}{name}"] = ci[1]
            out.append(aggregate)
        return out

    def profile_from_data(
        self, rows: list[dict[str, Any]], results: list[dict[str, Any]], allow_partial_rollouts: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(per-task metrics, per-agent metrics, per-repeat metrics) of results aligned to rows."""
        results_by_key = {_rollout_key(r): r for r in results}
        if not allow_partial_rollouts:
            missing = [key for key in map(_rollout_key, rows) if key not in results_by_key]
            if missing:
                raise ValueError(f"{len(missing)} rollout(s) have no result, e.g. {missing[0]}")
        records: list[dict[str, Any]] = []
        first_row: dict[Any, dict[str, Any]] = {}
        expected = Counter(row.get(TASK_INDEX_KEY_NAME, 0) for row in rows)
        infos: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            key = _rollout_key(row)
            result = results_by_key.get(key)
            if result is None:
                continue
            agent = (row.get(AGENT_REF_KEY_NAME) or {}).get("name")
            infos[key[0]].append(self.rollout_info_from_result(result))
            records.append(
                {
                    "agent_name": agent,
                    TASK_INDEX_KEY_NAME: key[0],
                    ROLLOUT_INDEX_KEY_NAME: key[1],
                    "values": _numeric_fields(result),
                }
            )
            first_row.setdefault(key[0], row)
        if not records:
            return [], [], []

        group_level: list[dict[str, Any]] = []
        for task in sorted({r[TASK_INDEX_KEY_NAME] for r in records}):
            task_records = [r["values"] for r in records if r[TASK_INDEX_KEY_NAME] == task]
            entry: dict[str, Any] = {TASK_INDEX_KEY_NAME: task, **_describe(_columns(task_records))}
            sample = {
                k: v
                for k, v in first_row[task].items()
                if k not in (TASK_INDEX_KEY_NAME, ROLLOUT_INDEX_KEY_NAME)
            }
            n, exp = len(infos[task]), expected[task]
            entry.update(
                {
                    "sample": sample,
                    "num_rollouts": n,
                    "expected_num_rollouts": exp,
                    "missing_num_rollouts": exp - n,
                    "reward_profile_completion_pct": 100.0 if exp == 0 else 100.0 * n / exp,
                    "rollout_infos": sorted(infos[task], key=lambda i: i[ROLLOUT_INDEX_KEY_NAME]),
                }
            )
            group_level.append(entry)

        agent_level: list[dict[str, Any]] = []
        repeat_level: list[dict[str, Any]] = []
        for agent in dict.fromkeys(r["agent_name"] for r in records):
            agent_records = [r for r in records if r["agent_name"] == agent]
            agent_entry = {
                AGENT_REF_KEY_NAME: {"name": agent},
                **_describe(_columns([r["values"] for r in agent_records])),
            }
            agent_repeats = self._repeat_level_metrics(agent_records)
            for aggregate in self._aggregate_repeat_level_metrics(agent_repeats):
                agent_entry.update({k: v for k, v in aggregate.items() if k != AGENT_REF_KEY_NAME})
            agent_level.append(agent_entry)
            repeat_level.extend(agent_repeats)
        return group_level, agent_level, repeat_level

    def prepare_for_serialization(self, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if not k.startswith("histogram")} for row in metrics]


# ---------------------------------------------------------------------------------------
# /aggregate_metrics
# ---------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(float(value))


def _group_by_task(verify_responses: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for vr in verify_responses:
        groups[vr.get(TASK_INDEX_KEY_NAME, 0)].append(vr)
    return [groups[k] for k in sorted(groups)]


def _coverage(
    all_responses: list[dict[str, Any]], scored: list[dict[str, Any]], masked: list[dict[str, Any]]
):
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


def _perf_stat(values: list[float], stat: str) -> float:
    if stat == "mean":
        return statistics.fmean(values)
    if stat == "median":
        return float(statistics.median(values))
    if stat == "total":
        return sum(values)
    if stat == "std":
        return statistics.pstdev(values)
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    return _quantile(values, int(stat[1:]) / 100)


def compute_perf_summary(records: list[dict[str, Any]], total_rollouts: int) -> dict[str, Any] | None:
    """Cross-rollout efficiency stats from each rollout's ``ng_perf`` dict (None when there are none)."""
    if total_rollouts <= 0 or not records:
        return None

    def values_of(key: str) -> list[float]:
        return [r[key] for r in records if _is_number(r.get(key))]

    summary: dict[str, Any] = {
        "overall_observability_coverage": len(records) / total_rollouts,
        "token_observability_coverage": sum(
            1
            for r in records
            if _is_number(r.get("token_observability_coverage")) and r["token_observability_coverage"] > 0
        )
        / total_rollouts,
    }
    for field in ("prompt_tokens", "cached_prompt_tokens", "completion_tokens", "reasoning_tokens"):
        values = values_of(field)
        for stat in ("mean", "median", "total") if values else ():
            summary[f"{stat}_{field}"] = _perf_stat(values, stat)
    turns = values_of("num_turns")
    for stat in ("mean", "median", "std", "min", "p90", "max") if turns else ():
        summary[f"{stat}_num_turns"] = _perf_stat(turns, stat)
    per_turn = [
        r["completion_tokens"] / r["num_turns"]
        for r in records
        if _is_number(r.get("completion_tokens")) and _is_number(r.get("num_turns")) and r["num_turns"] > 0
    ]
    if per_turn:
        summary["mean_tokens_per_turn"] = _perf_stat(per_turn, "mean")
        summary["median_tokens_per_turn"] = _perf_stat(per_turn, "median")
    latency = values_of("total_latency_ms")
    for stat in ("p50", "p90", "p99", "mean") if latency else ():
        summary[f"total_latency_{stat}_ms"] = _perf_stat(latency, stat)
    return summary


def _apply_repeat_hook(
    profiler: RewardProfiler,
    scored: list[dict[str, Any]],
    repeat_level: list[dict[str, Any]],
    agent_metrics: dict[str, Any],
    custom: dict[str, Any],
    hook: Callable[[list[list[dict[str, Any]]]], dict[str, Any]],
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


def compute_aggregate_metrics(
    verify_responses: list[dict[str, Any]],
    compute_metrics_fn: Callable[[list[list[dict[str, Any]]]], dict[str, Any]] | None = None,
    get_key_metrics_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    compute_repeat_metrics_fn: Callable[[list[list[dict[str, Any]]]], dict[str, Any]] | None = None,
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

    custom: dict[str, Any] = {}
    if compute_metrics_fn:
        custom = compute_metrics_fn(_group_by_task(scored))
        per_task = custom.pop("per_task_metrics", None)
        if per_task:
            by_task = {m[TASK_INDEX_KEY_NAME]: m for m in per_task}
            for group in groups:
                extra = by_task.get(group.get(TASK_INDEX_KEY_NAME))
                if extra:
                    group.update({k: v for k, v in extra.items() if k != TASK_INDEX_KEY_NAME})
        agent_metrics.update(custom)

    agent_metrics["num_repeats"] = len({vr.get(ROLLOUT_INDEX_KEY_NAME, 0) for vr in verify_responses})

    if get_key_metrics_fn:
        key_metrics = dict(get_key_metrics_fn(agent_metrics))
    else:
        key_metrics = {k: v for k, v in agent_metrics.items() if k.startswith("mean/")}
    key_metrics.update(coverage)

    if (
        compute_repeat_metrics_fn is not None
        and getattr(compute_repeat_metrics_fn, "__func__", None)
        is not AggregateMetricsMixin.compute_repeat_metrics
    ):
        _apply_repeat_hook(profiler, scored, repeat_level, agent_metrics, custom, compute_repeat_metrics_fn)

    return AggregateMetrics(
        group_level_metrics=groups,
        agent_metrics=agent_metrics,
        key_metrics=key_metrics,
        perf_summary=perf_summary,
        repeat_level_metrics=[{k: v for k, v in e.items() if k != AGENT_REF_KEY_NAME} for e in repeat_level],
    )
