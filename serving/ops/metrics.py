"""Prometheus metrics of one gateway, in its own registry (several apps can live in one process, e.g. tests).

Other packages add their metrics to ``app.state.metrics.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300)


class GatewayMetrics:
    """Per-adapter request, error, latency, time-to-first-token and token counters; replica state gauges.

    The ``model`` label is the base model or the adapter *name* (versions share it, keeping cardinality bounded);
    requests to an alias are also counted by the concrete version that served them (``ragswap_alias_*``: the canary's
    split, its errors and latency, which a promotion's soak compares, see :meth:`version_stats`).
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
        self.alias_errors = Counter(
            "ragswap_alias_request_errors",
            "Failed inference requests to an alias, by the concrete version that failed them.",
            ["alias", "version", "status"],
            registry=r,
        )
        self.alias_latency = Histogram(
            "ragswap_alias_request_latency_seconds",
            "End-to-end latency of an alias's answered requests, by the concrete version that served them.",
            ["alias", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_requests = Counter(
            "ragswap_shadow_requests",
            "Requests to an alias mirrored to its shadow candidate, by outcome: captured (both answers kept), "
            "failed (the candidate failed; kept with its error) or dropped (too many mirrored requests in flight).",
            ["alias", "version", "outcome"],
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

    def version_stats(self, alias: str, version: str) -> VersionStats:
        """Totals so far of the alias's requests served by ``version`` (a soak subtracts two of these)."""
        labels = {"alias": alias, "version": version}
        value = self.registry.get_sample_value
        errors = 0.0
        for metric in self.alias_errors.collect():
            for sample in metric.samples:
                if (
                    sample.name.endswith("_total")
                    and sample.labels.get("alias") == alias
                    and sample.labels.get("version") == version
                    and sample.labels.get("status", "").startswith("5")
                ):
                    errors += sample.value
        return VersionStats(
            requests=value("ragswap_alias_requests_total", labels) or 0.0,
            server_errors=errors,
            answered=value("ragswap_alias_request_latency_seconds_count", labels) or 0.0,
            latency_s=value("ragswap_alias_request_latency_seconds_sum", labels) or 0.0,
        )


@dataclass(frozen=True)
class VersionStats:
    """Counts of one alias version's requests: all of them, the 5xx among them, the answered ones and their summed
    latency. Subtraction gives the counts of a time window."""

    requests: float = 0.0
    server_errors: float = 0.0
    answered: float = 0.0
    latency_s: float = 0.0

    def __sub__(self, other: VersionStats) -> VersionStats:
        return VersionStats(
            self.requests - other.requests,
            self.server_errors - other.server_errors,
            self.answered - other.answered,
            self.latency_s - other.latency_s,
        )

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None

    @property
    def mean_latency_s(self) -> float | None:
        return self.latency_s / self.answered if self.answered else None
