"""Prometheus metrics of one gateway, in its own registry (several apps can live in one process, e.g. tests).

Other packages add their metrics to ``app.state.metrics.registry``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300)


class GatewayMetrics:
    """Per-adapter request, error, latency, time-to-first-token and token counters; replica state gauges.

    The ``model`` label is the base model or the adapter *name* (versions share it, keeping cardinality bounded).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragswap_requests", "Inference requests.", ["endpoint", "model", "stream"], registry=r
        )
        self.errors = Counter(
            "ragswap_request_errors",
            "Failed inference requests.",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ragswap_request_latency_seconds",
            "End-to-end inference latency (until the last byte).",
            ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "ragswap_time_to_first_token_seconds",
            "Time to the first generated token of streaming requests.",
            ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alias_requests = Counter(
            "ragswap_alias_requests",
            "Inference requests to an alias, by the concrete version that served them (canary splits).",
            ["alias", "version"],
            registry=r,
        )
        self.tokens = Counter("ragswap_tokens", "Tokens processed.", ["model", "kind"], registry=r)
        self.in_flight = Gauge(
            "ragswap_requests_in_flight", "Requests being proxied.", ["replica"], registry=r
        )
        self.replica_ready = Gauge(
            "ragswap_replica_ready", "1 when the replica serves.", ["replica"], registry=r
        )
        self.adapters = Gauge("ragswap_adapters_registered", "Adapter versions in the registry.", registry=r)
        self.adapter_ops = Counter(
            "ragswap_adapter_operations", "Adapter registry changes.", ["op", "outcome"], registry=r
        )
