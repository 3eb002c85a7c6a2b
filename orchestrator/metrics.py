"""Prometheus metrics, one registry per app so several apps can share a process (tests, benchmarks)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "orchestrator_http_requests",
            "HTTP requests served, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP request duration, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.updates = Counter(
            "orchestrator_updates",
            "Client updates, by outcome (recorded, duplicate, conflict, closed).",
            ["outcome"],
            registry=self.registry,
        )
        self.triggers = Counter(
            "orchestrator_aggregation_triggers",
            "Jobs moved to AGGREGATING by this process.",
            registry=self.registry,
        )
        self.jobs = Gauge(
            "orchestrator_jobs",
            "Jobs currently in each status (read from Redis at scrape time).",
            ["status"],
            registry=self.registry,
        )
        self.redis_memory = Gauge(
            "orchestrator_redis_memory_bytes",
            "Redis memory as the guard last sampled it: used (used_memory), limit (maxmemory, else "
            "MAX_REDIS_MEMORY_BYTES; 0: none) and threshold (where new jobs get 507; 0: guard off).",
            ["kind"],
            registry=self.registry,
        )
        self.redis_seconds = Histogram(
            "orchestrator_redis_duration_seconds",
            "Redis call latency, by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "orchestrator_redis_errors",
            "Redis calls that failed (unreachable, timed out, or refused: out of memory, read-only...), by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.aggregations = Counter(
            "orchestrator_aggregations",
            "Jobs this process finished aggregating, by outcome (COMPLETED, FAILED).",
            ["outcome"],
            registry=self.registry,
        )
        self.aggregation_seconds = Histogram(
            "orchestrator_aggregation_duration_seconds",
            "From the move to AGGREGATING to the stored result.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=self.registry,
        )
        self.deliveries = Counter(
            "orchestrator_delivery_attempts",
            "Result delivery attempts, by destination and outcome (delivered, retry, rejected).",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "orchestrator_delivery_dead_letters",
            "Deliveries given up on (rejected, or out of attempts), by destination.",
            ["destination"],
            registry=self.registry,
        )
        self.expired = Counter(
            "orchestrator_jobs_expired",
            "Jobs expired by this process's janitor.",
            registry=self.registry,
        )
        # The connection edge (orchestrator/edge.py, protocol.py) and the event loop.
        self.connections_open = Gauge(
            "orchestrator_http_connections_open", "HTTP connections open on this process.", registry=self.registry
        )
        self.connections_refused = Counter(
            "orchestrator_http_connections_refused",
            "Connections refused, by reason (per_ip_limit, descriptors, accept_failed).",
            ["reason"],
            registry=self.registry,
        )
        self.read_timeouts = Counter(
            "orchestrator_http_read_timeouts",
            "Connections closed because a request's headers or body did not arrive in time, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.protocol_errors = Counter(
            "orchestrator_http_protocol_errors",
            "Requests refused before routing because they were malformed HTTP, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "orchestrator_event_loop_lag_seconds",
            "How late the event loop ran a timer: time it spent on something else, with every request waiting.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )

        # labels() costs a lock and a dict lookup per call; these caches make it one dict lookup.
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._route_children: dict[str, Any] = {}
        self._redis_children: dict[str, Any] = {}
        self._update_children: dict[str, Any] = {}

    def count_update(self, outcome: str) -> None:
        counter = self._update_children.get(outcome)
        if counter is None:
            counter = self._update_children[outcome] = self.updates.labels(outcome)
        counter.inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        histogram = self._route_children.get(route)
        if histogram is None:
            histogram = self._route_children[route] = self.request_seconds.labels(route)
        histogram.observe(seconds)

    def observe_redis(self, operation: str, seconds: float) -> None:
        histogram = self._redis_children.get(operation)
        if histogram is None:
            histogram = self._redis_children[operation] = self.redis_seconds.labels(operation)
        histogram.observe(seconds)
