"""Per-server Prometheus metrics: requests by route and status, latency, cancellations.

Each server owns a registry (tests run many servers in one process). Hot-path counters are
cached label children, so a request costs a dict lookup and two increments; server-specific
state (upstreams, drift) is read by collectors at scrape time instead of on every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

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


class RequestMetrics:
    def __init__(self, server: str, collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"server": server}
        self._requests = Counter(
            "nemo_gym_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        ).labels
        self._latency = Histogram(
            "nemo_gym_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels
        self._cancelled = Counter(
            "nemo_gym_requests_cancelled",
            "Requests whose caller went away before the answer: the handler and its upstream calls were cancelled.",
            ["route"],
            registry=self.registry,
        ).labels
        self.in_flight = Gauge(
            "nemo_gym_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        Gauge(
            "nemo_gym_server_info", "The server this process runs.", list(labels), registry=self.registry
        ).labels(**labels).set(1)
        for collector in collectors:
            self.registry.register(collector)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = self._children[(route, status)] = (
                self._requests(route, str(status)),
                self._latency(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def cancelled(self, route: str) -> None:
        self._cancelled(route).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
