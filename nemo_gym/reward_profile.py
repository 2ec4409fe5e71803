"""NeMo Gym's import path for reward statistics: pass@k / majority@k helpers, the reward
profiler and ``/aggregate_metrics`` (they live in ``nemo_gym/rewards/``).

Metric names are flat strings (``mean/reward``, ``pass@4/accuracy``, ...) so they can be
logged to W&B / MLflow directly. Accuracy-like values of the pass/majority helpers are
percentages (0-100). Confidence intervals need scipy (``pip install 'nemo-gym[stats]'``).
"""

from __future__ import annotations

from nemo_gym.config_types import AggregateMetrics
from nemo_gym.global_config import AGENT_REF_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME
from nemo_gym.rewards.aggregate import (
    MASK_SAMPLE_FIELD,
    AggregateMetricsMixin,
    compute_aggregate_metrics,
    compute_perf_summary,
)
from nemo_gym.rewards.pass_at_k import (
    AVG_SAMPLE_STD_DEV_SUFFIX,
    PASS_MAJORITY_STAT_SUFFIXES,
    STAT_SEPARATOR,
    STD_DEV_ACROSS_RUNS_SUFFIX,
    STD_ERR_ACROSS_RUNS_SUFFIX,
    ScoreFn,
    add_avg_sample_std_dev,
    compute_pass_majority_metrics,
    compute_subset_metrics,
    highest_k_metrics,
)
from nemo_gym.rewards.profile import ACROSS_REPEATS_MARKER, RewardProfiler, is_repeat_aggregatable_metric

__all__ = [
    "ACROSS_REPEATS_MARKER",
    "AGENT_REF_KEY_NAME",
    "AVG_SAMPLE_STD_DEV_SUFFIX",
    "MASK_SAMPLE_FIELD",
    "PASS_MAJORITY_STAT_SUFFIXES",
    "ROLLOUT_INDEX_KEY_NAME",
    "STAT_SEPARATOR",
    "STD_DEV_ACROSS_RUNS_SUFFIX",
    "STD_ERR_ACROSS_RUNS_SUFFIX",
    "TASK_INDEX_KEY_NAME",
    "AggregateMetrics",
    "AggregateMetricsMixin",
    "RewardProfiler",
    "ScoreFn",
    "add_avg_sample_std_dev",
    "compute_aggregate_metrics",
    "compute_pass_majority_metrics",
    "compute_perf_summary",
    "compute_subset_metrics",
    "highest_k_metrics",
    "is_repeat_aggregatable_metric",
]
