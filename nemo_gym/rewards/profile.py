"""Descriptive statistics of rollout results per task, per agent and per repeat, and across repeats.

Every numeric (or boolean) top-level field of a result, and its response's usage counts, is a
column; each level reports the columns' statistics under flat names (``mean/reward``,
``std_across_repeats/mean/reward``, ...).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from numbers import Real
from typing import Any

from nemo_gym.global_config import AGENT_REF_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME
from nemo_gym.rewards.pass_at_k import PASS_MAJORITY_STAT_SUFFIXES, STAT_SEPARATOR
from nemo_gym.rewards.stats import summarize

ACROSS_REPEATS_MARKER = f"_across_repeats{STAT_SEPARATOR}"
# Names of per-repeat statistics that are spreads, not point estimates (never summarized again).
_STAT_PREFIXES = (
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
_EXCLUDED_SUFFIXES = (
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
    *PASS_MAJORITY_STAT_SUFFIXES,
)
_REPEAT_METADATA = (
    TASK_INDEX_KEY_NAME,
    ROLLOUT_INDEX_KEY_NAME,
    "_ng_attempt_index",
    "sample_count",
    "missing_count",
)


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _describe(columns: dict[str, list[float]]) -> dict[str, float]:
    """mean / max / min / median / std (sample; 0 for a single value) of each column."""
    summaries = {col: summarize(values) for col, values in columns.items() if values}
    out: dict[str, float] = {}
    for stat, attribute in (("mean", "mean"), ("max", "maximum"), ("min", "minimum"), ("median", "median")):
        out.update({f"{stat}/{col}": getattr(summary, attribute) for col, summary in summaries.items()})
    out.update({f"std/{col}": summary.std for col, summary in summaries.items()})
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
    if not isinstance(name, str) or ACROSS_REPEATS_MARKER in name or name in _REPEAT_METADATA:
        return False
    if name.startswith(_STAT_PREFIXES) or name.startswith("histogram"):
        return False
    return not name.endswith(_EXCLUDED_SUFFIXES)


def _rollout_key(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get(TASK_INDEX_KEY_NAME, 0), row.get(ROLLOUT_INDEX_KEY_NAME, 0)


def _repeat_statistics(columns: dict[str, list[float]]) -> dict[str, float]:
    """One repeat's statistics of each column (columns in name order)."""
    out: dict[str, float] = {}
    for col in sorted(columns):
        if not columns[col]:
            continue
        s = summarize(columns[col])
        out.update(
            {
                f"mean/{col}": s.mean,
                f"median/{col}": float(s.median),
                f"std/{col}": s.std,
                f"sem/{col}": s.sem,
                f"min/{col}": float(s.minimum),
                f"max/{col}": float(s.maximum),
                f"p25/{col}": s.percentile(25),
                f"p75/{col}": s.percentile(75),
            }
        )
        ci = s.confidence_interval()
        if ci:
            out[f"ci_low_95/{col}"], out[f"ci_high_95/{col}"] = ci
    return out


def _across_repeats(name: str, values: list[float]) -> dict[str, float]:
    """One metric's spread over the repeats."""
    s = summarize(values)
    out = {
        f"mean{ACROSS_REPEATS_MARKER}{name}": s.mean,
        f"median{ACROSS_REPEATS_MARKER}{name}": float(s.median),
        f"std{ACROSS_REPEATS_MARKER}{name}": s.std,
        f"min{ACROSS_REPEATS_MARKER}{name}": s.minimum,
        f"max{ACROSS_REPEATS_MARKER}{name}": s.maximum,
        f"se{ACROSS_REPEATS_MARKER}{name}": s.sem,
    }
    ci = s.confidence_interval()
    if ci:
        out[f"ci_low_95{ACROSS_REPEATS_MARKER}{name}"], out[f"ci_high_95{ACROSS_REPEATS_MARKER}{name}"] = ci
    return out


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
            entry.update(_repeat_statistics(_columns([r["values"] for r in group])))
            out.append(entry)
        if any(e["missing_count"] for e in out):
            warnings.warn(
                "some repeats are missing rollouts; repeat-level metrics use unequal samples", stacklevel=2
            )
        return out

    def _aggregate_repeat_level_metrics(
        self, repeat_level_metrics: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in repeat_level_metrics:
            by_agent[entry[AGENT_REF_KEY_NAME]["name"]].append(entry)
        out = []
        for agent, entries in by_agent.items():
            aggregate: dict[str, Any] = {AGENT_REF_KEY_NAME: {"name": agent}}
            names = dict.fromkeys(
                name
                for entry in entries
                for name, value in entry.items()
                if is_repeat_aggregatable_metric(name) and is_number(value)
            )
            for name in names:
                values = [
                    float(e[name]) for e in entries if is_number(e.get(name)) and not math.isnan(e[name])
                ]
                if values:
                    aggregate.update(_across_repeats(name, values))
            out.append(aggregate)
        return out

    def _records(
        self, rows: list[dict[str, Any]], results_by_key: dict[tuple[Any, Any], dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[Any, dict[str, Any]], dict[Any, list[dict[str, Any]]]]:
        """(one record per row with a result, each task's first row, each task's rollout infos)."""
        records: list[dict[str, Any]] = []
        first_row: dict[Any, dict[str, Any]] = {}
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
        return records, first_row, infos

    def _group_level(
        self,
        records: list[dict[str, Any]],
        first_row: dict[Any, dict[str, Any]],
        infos: dict[Any, list[dict[str, Any]]],
        expected: Counter[Any],
    ) -> list[dict[str, Any]]:
        group_level: list[dict[str, Any]] = []
        for task in sorted({r[TASK_INDEX_KEY_NAME] for r in records}):
            task_records = [r["values"] for r in records if r[TASK_INDEX_KEY_NAME] == task]
            sample = {
                k: v
                for k, v in first_row[task].items()
                if k not in (TASK_INDEX_KEY_NAME, ROLLOUT_INDEX_KEY_NAME)
            }
            n, exp = len(infos[task]), expected[task]
            group_level.append(
                {
                    TASK_INDEX_KEY_NAME: task,
                    **_describe(_columns(task_records)),
                    "sample": sample,
                    "num_rollouts": n,
                    "expected_num_rollouts": exp,
                    "missing_num_rollouts": exp - n,
                    "reward_profile_completion_pct": 100.0 if exp == 0 else 100.0 * n / exp,
                    "rollout_infos": sorted(infos[task], key=lambda i: i[ROLLOUT_INDEX_KEY_NAME]),
                }
            )
        return group_level

    def profile_from_data(
        self, rows: list[dict[str, Any]], results: list[dict[str, Any]], allow_partial_rollouts: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(per-task metrics, per-agent metrics, per-repeat metrics) of results aligned to rows."""
        results_by_key = {_rollout_key(r): r for r in results}
        if not allow_partial_rollouts:
            missing = [key for key in map(_rollout_key, rows) if key not in results_by_key]
            if missing:
                raise ValueError(f"{len(missing)} rollout(s) have no result, e.g. {missing[0]}")
        records, first_row, infos = self._records(rows, results_by_key)
        if not records:
            return [], [], []
        expected = Counter(row.get(TASK_INDEX_KEY_NAME, 0) for row in rows)
        group_level = self._group_level(records, first_row, infos, expected)

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
