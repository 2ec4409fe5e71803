"""Prometheus view of an upstream pool, read at scrape time from the pool's own counters.

The hot path only bumps plain ints (in-flight, retries by reason) and one histogram child per
upstream; this collector turns them into metric families when `/metrics` is asked.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nemo_gym.server.metrics import LATENCY_BUCKETS, counter_family, gauge
from nemo_gym.upstream.pool import UpstreamPool


class PoolCollector(Collector):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        # Not in any registry: collect() yields its samples beside the others.
        self.latency = Histogram(
            "nemo_gym_upstream_request_duration_seconds",
            "Time from sending a request to an upstream to having its whole answer, by upstream.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )

    def attach(self) -> None:
        """Give each started upstream its histogram child (call after `pool.start()`)."""
        for upstream in self.pool.upstreams:
            upstream.latency = self.latency.labels(upstream.base_url)

    def collect(self) -> Iterator[Metric]:
        pool = self.pool
        in_flight = GaugeMetricFamily(
            "nemo_gym_upstream_in_flight",
            "Requests sent to an upstream and not yet answered.",
            labels=["upstream"],
        )
        routed = GaugeMetricFamily(
            "nemo_gym_upstream_routed",
            "1 while an upstream receives traffic, 0 while it is suspect (until its health probe answers).",
            labels=["upstream"],
        )
        for upstream in pool.upstreams:
            in_flight.add_metric([upstream.base_url], upstream.in_flight)
            routed.add_metric([upstream.base_url], 0 if upstream.index in pool.router.down else 1)
        yield in_flight
        yield routed
        yield counter_family(
            "nemo_gym_upstream_retries",
            "Requests sent again, by the reason for the retry.",
            ["reason"],
            (([reason], count) for reason, count in sorted(pool.retries.items())),
        )
        yield gauge("nemo_gym_sessions_tracked", "Sessions pinned to an upstream now.", len(pool.router))
        yield from self.latency.collect()
