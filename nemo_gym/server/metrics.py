"""Per-server Prometheus metrics: requests by route and status, latency, cancellations.

Each server owns a registry (tests run many servers in one process). A request costs a dict
increment and one histogram observation; server-specific state (upstreams, drift) is read by
collectors at scrape time instead of on every request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector


def counter_family(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> CounterMetricFamily:
    """A counter read at scrape time from a plain dict the hot path bumps: (label values, count)."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in samples:
        family.add_metric(values, count)
    return family


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge with no labels, read at scrape time."""
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


# Generation calls run from milliseconds to minutes; verify/run calls sit in between.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class RequestMetrics(Collector):
    """Counts live in plain ints and dicts (no locks on the hot path: one event loop per
    process); only the latency histogram is a prometheus object. All are read at scrape time."""

    def __init__(self, server: str, collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.server = server
        self.in_flight = 0
        self._requests: dict[tuple[str, int], int] = {}
        self._cancelled: dict[str, int] = {}
        self._latency = Histogram(
            "nemo_gym_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._latency_children: dict[str, Any] = {}
        self.registry.register(self)
        for collector in collectors:
            self.registry.register(collector)

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        child = self._latency_children.get(route)
        if child is None:
            child = self._latency_children[route] = self._latency.labels(route)
        child.observe(seconds)

    def cancelled(self, route: str) -> None:
        self._cancelled[route] = self._cancelled.get(route, 0) + 1

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("nemo_gym_server_info", "The server this process runs.", labels=["server"])
        info.add_metric([self.server], 1)
        requests = counter_family(
            "nemo_gym_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            (([route, str(status)], count) for (route, status), count in list(self._requests.items())),
        )
        yield info
        yield requests
        yield gauge("nemo_gym_requests_in_flight", "Requests being handled now.", self.in_flight)
        yield counter_family(
            "nemo_gym_requests_cancelled",
            "Requests whose caller went away before the answer: the handler and its upstream calls were cancelled.",
            ["route"],
            (([route], count) for route, count in list(self._cancelled.items())),
        )
        yield from self._latency.collect()

    def render(self) -> bytes:
        return generate_latest(self.registry)
