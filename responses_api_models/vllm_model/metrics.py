"""The adapter's own metrics, beside the pool's: context-length fallbacks, token drift and splice outcomes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from nemo_gym.conversion.prefix import SpliceOutcome
from nemo_gym.upstream.pool import UpstreamPool
from responses_api_models.vllm_model.ledger import DriftCounts
from responses_api_models.vllm_model.serving import VLLMServing


class AdapterCollector(Collector):
    def __init__(self, serving: VLLMServing, pool: UpstreamPool) -> None:
        self.serving = serving
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        fallbacks = CounterMetricFamily(
            "nemo_gym_context_length_fallbacks",
            "Prompts that did not fit the context, answered with an empty result so collection goes on.",
        )
        fallbacks.add_metric([], self.serving.context_length_fallbacks)
        yield fallbacks
        if not self.serving.token_mode:
            return
        drift = CounterMetricFamily(
            "nemo_gym_token_drift",
            "Token-mode requests carrying an earlier turn's tokens, by upstream and outcome: measured, "
            "extends (the prompt extends the carried tokens), diverged, spliced, fallbacks (not spliced).",
            labels=["upstream", "outcome"],
        )
        splices = CounterMetricFamily(
            "nemo_gym_token_splice",
            "Token-mode requests carrying an earlier turn's tokens, by upstream and splice outcome: spliced, "
            "conversation_changed, template_unaligned (refused), upstream_ignores, off.",
            labels=["upstream", "outcome"],
        )
        for upstream in self.pool.upstreams:
            counts = self.serving.drift_counts(upstream.index)
            for name in DriftCounts.FIELDS:
                drift.add_metric([upstream.base_url, name], counts[name])
            for outcome in SpliceOutcome:
                splices.add_metric([upstream.base_url, outcome.value], counts["outcomes"][outcome.value])
        yield drift
        yield splices
