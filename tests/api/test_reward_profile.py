"""nemo_gym.reward_profile: pass@k / majority@k numbers computed by hand, and /aggregate_metrics."""

from __future__ import annotations

import math
import sys

import pytest

from nemo_gym.config_types import AggregateMetrics
from nemo_gym.global_config import ROLLOUT_INDEX_KEY_NAME as R
from nemo_gym.global_config import TASK_INDEX_KEY_NAME as T
from nemo_gym.reward_profile import (
    AggregateMetricsMixin,
    add_avg_sample_std_dev,
    compute_aggregate_metrics,
    compute_pass_majority_metrics,
    compute_subset_metrics,
    highest_k_metrics,
)
from nemo_gym.rewards.stats import summarize, t_quantile

approx = pytest.approx

# Task A: 1 of 3 correct; task B: none; task C: 2 of 3.
TASKS = [
    [{"reward": 1.0}, {"reward": 0.0}, {"reward": 0.0}],
    [{"reward": 0.0}, {"reward": 0.0}, {"reward": 0.0}],
    [{"reward": 1.0}, {"reward": 1.0}, {"reward": 0.0}],
]


def test_pass_at_k_by_hand():
    metrics, scores, names, max_k = compute_pass_majority_metrics(TASKS)
    assert names == ["accuracy"] and max_k == 3
    assert scores[0] == [{"accuracy": 1.0}, {"accuracy": 0.0}, {"accuracy": 0.0}]
    # A: 1 - C(2,1)/C(3,1) = 1/3; B: 0; C: 1 - C(1,1)/C(3,1) = 2/3
    assert metrics["pass@1/accuracy"] == approx(100 * (1 / 3 + 0 + 2 / 3) / 3)
    # A: 1 - C(2,2)/C(3,2) = 2/3; B: 0; C: 1
    assert metrics["pass@2/accuracy"] == approx(100 * 5 / 9)
    assert metrics["pass@3/accuracy"] == approx(200 / 3)
    assert metrics["pass@1[avg-of-1]/accuracy"] == approx(200 / 3)
    assert metrics["pass@1[avg-of-2]/accuracy"] == approx(50.0)
    assert metrics["pass@1[avg-of-3]/accuracy"] == approx(100 / 3)
    assert metrics["per_sample_aggregate"] == {"accuracy": approx([200 / 3, 100 / 3, 0.0])}
    # runs [66.67, 33.33]: sample std 23.570, stderr 16.667
    assert metrics["pass@1[avg-of-2]/accuracy/std_dev_across_runs"] == approx(math.sqrt(2) * 50 / 3)
    assert metrics["pass@1[avg-of-2]/accuracy/std_err_across_runs"] == approx(50 / 3)
    assert metrics["pass@1[avg-of-3]/accuracy/std_dev_across_runs"] == approx(100 / 3)
    assert metrics["pass@1[avg-of-3]/accuracy/std_err_across_runs"] == approx(100 / 3 / math.sqrt(3))
    assert not any(k.startswith("majority@") for k in metrics)


def test_continuous_scores_use_max_of_first_k():
    metrics, *_ = compute_pass_majority_metrics([[{"reward": 0.2}, {"reward": 0.7}]])
    assert metrics["pass@1/accuracy"] == approx(20.0)
    assert metrics["pass@2/accuracy"] == approx(70.0)
    assert metrics["pass@1[avg-of-2]/accuracy"] == approx(45.0)


def test_majority_and_no_answer():
    tasks = [
        [{"reward": True, "ans": "a"}, {"reward": True, "ans": "a"}, {"reward": False, "ans": "b"}],
        [{"reward": 0, "ans": None}, {"reward": 0, "ans": "c"}, {"reward": 0, "ans": None}],
    ]
    metrics, scores, names, _ = compute_pass_majority_metrics(tasks, answer_key="ans")
    assert names == ["accuracy", "no_answer"]
    assert scores[1][0] == {"accuracy": 0, "no_answer": 1}
    for k in (1, 2, 3):
        assert metrics[f"majority@{k}/accuracy"] == approx(50.0)
    # no_answer: task 1 never; task 2 two of three -> pass@1 = (0 + 2/3) / 2
    assert metrics["pass@1/no_answer"] == approx(100 / 3)
    assert metrics["pass@1[avg-of-3]/no_answer"] == approx(100 / 3)


def test_majority_tie_averages_tied_answers():
    tasks = [[{"reward": 1, "ans": "x"}, {"reward": 0, "ans": "y"}]]
    metrics, *_ = compute_pass_majority_metrics(tasks, answer_key="ans")
    assert metrics["majority@2/accuracy"] == approx(50.0)


def test_custom_score_fn():
    tasks = [[{"reward": 1, "sym": False}], [{"reward": 0, "sym": True}]]
    metrics, *_ = compute_pass_majority_metrics(
        tasks, score_fn=lambda r: {"acc": r["reward"], "sym": r["sym"]}
    )
    assert metrics["pass@1/acc"] == approx(50.0)
    assert metrics["pass@1/sym"] == approx(50.0)


def test_empty_tasks():
    assert compute_pass_majority_metrics([]) == ({}, [], [], 0)


def test_avg_sample_std_dev_by_hand():
    metrics, scores, names, max_k = compute_pass_majority_metrics(TASKS)
    add_avg_sample_std_dev(metrics, scores, names, max_k)
    # k=2: stds A=sqrt(.5), B=0, C=0
    assert metrics["pass@1[avg-of-2]/accuracy/avg_sample_std_dev"] == approx(math.sqrt(0.5) / 3)
    # k=3: A and C have std sqrt(1/3), B 0
    assert metrics["pass@1[avg-of-3]/accuracy/avg_sample_std_dev"] == approx(2 * math.sqrt(1 / 3) / 3)


def test_highest_k_metrics():
    metrics, *_ = compute_pass_majority_metrics(TASKS)
    assert highest_k_metrics(metrics, "pass@{k}") == {"pass@3/accuracy": approx(200 / 3)}
    assert highest_k_metrics(metrics, "pass@1[avg-of-{k}]") == {"pass@1[avg-of-3]/accuracy": approx(100 / 3)}
    assert highest_k_metrics(metrics, "pass@{k}", score_names=["other"]) == {}
    assert highest_k_metrics(metrics, "pass@{k}", exclude_names=["accuracy"]) == {}
    assert highest_k_metrics({}, "majority@{k}") == {}


def test_subset_metrics():
    tasks = [
        [{"reward": 1, "level": "easy"}, {"reward": 1, "level": "easy"}],
        [{"reward": 0}, {"reward": 1, "level": "hard"}],
        [{"reward": 1}],
    ]
    metrics = compute_subset_metrics(tasks, "level")
    assert metrics["easy/pass@1/accuracy"] == approx(100.0)
    assert metrics["hard/pass@1/accuracy"] == approx(50.0)
    assert metrics["hard/pass@2/accuracy"] == approx(100.0)
    assert not any("per_sample_aggregate" in k for k in metrics)
    assert not any(k.startswith("None/") for k in metrics)


def test_student_t_quantiles():
    assert t_quantile(0.975, 1) == approx(12.706204736, rel=1e-6)
    assert t_quantile(0.975, 10) == approx(2.228138852, rel=1e-6)
    assert t_quantile(0.975, 1000) == approx(1.962339, rel=1e-5)


def _vr(task, repeat, reward, **extra):
    return {T: task, R: repeat, "reward": reward, **extra}


def test_aggregate_metrics_baseline():
    responses = [_vr(0, 0, 1.0), _vr(0, 1, 0.0), _vr(1, 0, 1.0), _vr(1, 1, True)]
    result = compute_aggregate_metrics(responses)
    assert isinstance(result, AggregateMetrics)
    agent = result.agent_metrics
    assert agent["mean/reward"] == approx(0.75)
    assert agent["max/reward"] == 1.0 and agent["min/reward"] == 0.0
    assert agent["median/reward"] == 1.0
    assert agent["std/reward"] == approx(0.5)
    assert agent["num_repeats"] == 2
    assert result.key_metrics == {"mean/reward": approx(0.75)}
    groups = {g[T]: g for g in result.group_level_metrics}
    assert groups[0]["mean/reward"] == approx(0.5)
    assert groups[0]["std/reward"] == approx(math.sqrt(0.5))
    assert groups[1]["std/reward"] == 0.0
    assert groups[0]["num_rollouts"] == 2 and groups[0]["missing_num_rollouts"] == 0
    repeats = {r[R]: r for r in result.repeat_level_metrics}
    assert repeats[0]["mean/reward"] == 1.0 and repeats[1]["mean/reward"] == 0.5
    assert repeats[0]["sample_count"] == 2
    assert agent["mean_across_repeats/mean/reward"] == approx(0.75)
    assert agent["std_across_repeats/mean/reward"] == approx(math.sqrt(0.125))
    assert agent["se_across_repeats/mean/reward"] == approx(0.25)
    assert agent["ci_low_95_across_repeats/mean/reward"] == approx(0.75 - 12.706204736 * 0.25, rel=1e-6)
    assert result.perf_summary is None


def test_aggregate_metrics_empty_and_masked():
    assert compute_aggregate_metrics([]) == AggregateMetrics()
    responses = [_vr(0, 0, 1.0), _vr(0, 1, 0.0, mask_sample=True), _vr(1, 0, 0.0, mask_sample=True)]
    result = compute_aggregate_metrics(responses)
    assert result.agent_metrics["mean/reward"] == 1.0
    assert "mean/mask_sample" not in result.agent_metrics
    coverage = {
        "coverage/measured_rollouts": 1,
        "coverage/masked_rollouts": 2,
        "coverage/measured_tasks": 1,
        "coverage/fully_masked_tasks": 1,
    }
    assert {k: result.key_metrics[k] for k in coverage} == coverage
    all_masked = compute_aggregate_metrics([_vr(0, 0, 0.0, mask_sample=True)])
    assert all_masked.agent_metrics == {
        "coverage/measured_rollouts": 0,
        "coverage/masked_rollouts": 1,
        "coverage/measured_tasks": 0,
        "coverage/fully_masked_tasks": 1,
    }


class _Server(AggregateMetricsMixin):
    def compute_metrics(self, tasks):
        metrics, *_ = compute_pass_majority_metrics(tasks)
        metrics.pop("per_sample_aggregate")
        metrics["per_task_metrics"] = [{T: 0, "hardness": 7}]
        return metrics

    def get_key_metrics(self, agent_metrics):
        return highest_k_metrics(agent_metrics, "pass@{k}")

    def compute_repeat_metrics(self, tasks):
        return {"repeat_acc": 100.0 * sum(r["reward"] for t in tasks for r in t) / len(tasks)}


def test_aggregate_metrics_with_hooks():
    server = _Server()
    responses = [_vr(0, 0, 1.0), _vr(0, 1, 0.0), _vr(1, 0, 1.0), _vr(1, 1, 1.0)]
    result = compute_aggregate_metrics(
        responses,
        compute_metrics_fn=server.compute_metrics,
        get_key_metrics_fn=server.get_key_metrics,
        compute_repeat_metrics_fn=server.compute_repeat_metrics,
    )
    # pass@2: task 0 has one of two correct -> 1; task 1 -> 1
    assert result.key_metrics == {"pass@2/accuracy": 100.0}
    assert result.agent_metrics["pass@1/accuracy"] == approx(75.0)
    assert {g[T]: g.get("hardness") for g in result.group_level_metrics} == {0: 7, 1: None}
    assert [r["repeat_acc"] for r in result.repeat_level_metrics] == [100.0, 50.0]
    assert result.agent_metrics["mean_across_repeats/repeat_acc"] == approx(75.0)


def test_default_mixin_hooks():
    mixin = AggregateMetricsMixin()
    assert mixin.compute_metrics([[{"reward": 1}]]) == {}
    assert mixin.compute_repeat_metrics([]) == {}
    assert mixin.get_key_metrics({"mean/reward": 1, "max/reward": 1}) == {"mean/reward": 1}


def test_perf_summary():
    responses = [
        _vr(
            0,
            0,
            1.0,
            ng_perf={"prompt_tokens": 10, "completion_tokens": 6, "num_turns": 2, "total_latency_ms": 100},
        ),
        _vr(
            1,
            0,
            0.0,
            ng_perf={"prompt_tokens": 30, "completion_tokens": 4, "num_turns": 1, "total_latency_ms": 300},
        ),
        _vr(2, 0, 0.0),
    ]
    perf = compute_aggregate_metrics(responses).perf_summary
    assert perf["overall_observability_coverage"] == approx(2 / 3)
    assert perf["token_observability_coverage"] == 0.0
    assert perf["mean_prompt_tokens"] == 20 and perf["total_prompt_tokens"] == 40
    assert perf["mean_tokens_per_turn"] == approx(3.5)
    assert perf["total_latency_p50_ms"] == approx(200.0)
    assert perf["total_latency_p90_ms"] == approx(280.0)


def test_without_scipy_the_confidence_intervals_are_left_out(monkeypatch, caplog):
    from nemo_gym.rewards import stats

    stats._t_quantile_function.cache_clear()
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `from scipy.stats import t` fails
    try:
        responses = [_vr(0, 0, 1.0), _vr(0, 1, 0.0), _vr(1, 0, 1.0), _vr(1, 1, True)]
        agent = compute_aggregate_metrics(responses).agent_metrics
        repeats = compute_aggregate_metrics(responses).repeat_level_metrics
    finally:
        stats._t_quantile_function.cache_clear()
    assert agent["se_across_repeats/mean/reward"] == approx(0.25)
    assert not any(k.startswith("ci_") for k in agent)
    assert repeats[1]["sem/reward"] == approx(0.5) and "ci_low_95/reward" not in repeats[1]
    assert [r.message for r in caplog.records] == [
        "scipy is not installed: confidence intervals are left out (pip install 'nemo-gym[stats]')"
    ]


def test_percentiles_and_spread_of_one_column():
    s = summarize([3, 1, 2, 10])
    assert (s.n, s.mean, s.median, s.minimum, s.maximum) == (4, 4.0, 2.5, 1, 10)
    assert s.std == approx(math.sqrt(50 / 3)) and s.sem == approx(math.sqrt(50 / 3) / 2)
    # numpy's linear method: position (n - 1) * p / 100 in the sorted values [1, 2, 3, 10]
    assert (s.percentile(25), s.percentile(50), s.percentile(90)) == approx((1.75, 2.5, 7.9))
    assert s.confidence_interval() == approx((4.0 - 3.182446305 * s.sem, 4.0 + 3.182446305 * s.sem))
    one = summarize([7])
    assert (one.std, one.sem, one.percentile(75), one.confidence_interval()) == (0.0, 0.0, 7.0, None)
    assert summarize([2.0, 2.0]).confidence_interval() == (2.0, 2.0)


def test_nemo_gym_names_stay_importable_from_reward_profile():
    import nemo_gym.reward_profile as facade

    for name in (
        "AggregateMetricsMixin",
        "RewardProfiler",
        "compute_aggregate_metrics",
        "compute_pass_majority_metrics",
        "compute_subset_metrics",
        "highest_k_metrics",
        "add_avg_sample_std_dev",
        "compute_perf_summary",
        "is_repeat_aggregatable_metric",
        "ACROSS_REPEATS_MARKER",
        "PASS_MAJORITY_STAT_SUFFIXES",
        "MASK_SAMPLE_FIELD",
    ):
        assert name in facade.__all__ and getattr(facade, name) is not None
