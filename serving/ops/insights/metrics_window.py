"""Request rate, error rate and latency quantiles per model over a recent window, from the gateway's own registry.

Prometheus metrics are cumulative (counters, histogram buckets); a dashboard wants "the last five minutes".
:class:`MetricsHistory` samples the registry every few seconds into a bounded ring and answers a window by
subtracting the sample at its start from a fresh one: what Prometheus's ``rate()`` and ``histogram_quantile()``
compute, without a Prometheus server next to every gateway. Quantiles are estimated from bucket counts by linear
interpolation inside the bucket (the estimate ``histogram_quantile`` gives), so they are as coarse as the buckets
of :class:`serving.ops.metrics.GatewayMetrics`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from serving.ops.insights.protocol import MetricsSummary, ModelStats, Quantiles, RatePoint

# Families of serving.ops.metrics.GatewayMetrics this module reads (a test checks they are all seen).
REQUESTS = "ragswap_requests_total"
ERRORS = "ragswap_request_errors_total"
LATENCY = "ragswap_request_latency_seconds"
TTFT = "ragswap_time_to_first_token_seconds"
TOKENS = "ragswap_tokens_total"

_FAMILIES = frozenset(
    name.removesuffix("_total") for name in (REQUESTS, ERRORS, LATENCY, TTFT, TOKENS)
)  # prometheus_client names counter families without the suffix its samples carry

ALL_MODELS = "all"
"""The ``model`` of the aggregate row (every model together)."""


@dataclass
class Histogram:
    """Cumulative bucket counts by upper bound (``inf`` included), as Prometheus exposes them."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0

    def add(self, other: Histogram) -> None:
        for bound, n in other.buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + n
        self.count += other.count

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            {b: n - earlier.buckets.get(b, 0.0) for b, n in self.buckets.items()},
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """``histogram_quantile(q)``: None without observations; the largest finite bound past the last one."""
        bounds = sorted(self.buckets)
        total = self.buckets.get(math.inf, self.count)
        if total <= 0 or not bounds:
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for bound in bounds:
            cumulative = self.buckets[bound]
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
            lower, below = bound, cumulative
        return lower


@dataclass
class Counters:
    """One model's cumulative counters at one instant (summed over endpoints and other labels)."""

    requests: float = 0.0
    errors: float = 0.0
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    completion_tokens: float = 0.0
    prompt_tokens: float = 0.0

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency.add(other.latency)
        self.ttft.add(other.ttft)
        self.completion_tokens += other.completion_tokens
        self.prompt_tokens += other.prompt_tokens

    def minus(self, earlier: Counters) -> Counters:
        return Counters(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            self.latency.minus(earlier.latency),
            self.ttft.minus(earlier.ttft),
            self.completion_tokens - earlier.completion_tokens,
            self.prompt_tokens - earlier.prompt_tokens,
        )


@dataclass(frozen=True)
class Snapshot:
    monotonic: float
    wall: float
    models: dict[str, Counters]
    requests: float = 0.0
    """All models' requests (kept apart so that a rate series needs no per-model sums)."""
    errors: float = 0.0

    def total(self) -> Counters:
        out = Counters()
        for counters in self.models.values():
            out.add(counters)
        return out


def take_snapshot(registry: CollectorRegistry, monotonic: float, wall: float) -> Snapshot:
    """Read the registry once: per model label, the counters this module summarises."""
    models: dict[str, Counters] = collections.defaultdict(Counters)
    for family in registry.collect():
        if family.name not in _FAMILIES:
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            c = models[model]
            if sample.name == REQUESTS:
                c.requests += sample.value
            elif sample.name == ERRORS:
                c.errors += sample.value
            elif sample.name == TOKENS:
                kind = sample.labels.get("kind")
                if kind == "completion":
                    c.completion_tokens += sample.value
                elif kind == "prompt":
                    c.prompt_tokens += sample.value
            elif sample.name in (f"{LATENCY}_bucket", f"{TTFT}_bucket"):
                histogram = c.latency if sample.name.startswith(LATENCY) else c.ttft
                bound = float(sample.labels["le"])
                histogram.buckets[bound] = histogram.buckets.get(bound, 0.0) + sample.value
            elif sample.name in (f"{LATENCY}_count", f"{TTFT}_count"):
                histogram = c.latency if sample.name.startswith(LATENCY) else c.ttft
                histogram.count += sample.value
    return Snapshot(
        monotonic,
        wall,
        dict(models),
        requests=sum(c.requests for c in models.values()),
        errors=sum(c.errors for c in models.values()),
    )


def _stats(model: str, window: Counters, total: Counters, span: float) -> ModelStats:
    return ModelStats(
        model=model,
        requests=round(window.requests),
        requests_per_s=window.requests / span if span > 0 else 0.0,
        errors=round(window.errors),
        error_rate=window.errors / window.requests if window.requests > 0 else None,
        latency_s=Quantiles(p50=window.latency.quantile(0.5), p95=window.latency.quantile(0.95)),
        ttft_s=Quantiles(p50=window.ttft.quantile(0.5), p95=window.ttft.quantile(0.95)),
        completion_tokens_per_s=window.completion_tokens / span if span > 0 else 0.0,
        prompt_tokens=round(window.prompt_tokens),
        completion_tokens=round(window.completion_tokens),
        total_requests=round(total.requests),
        total_errors=round(total.errors),
    )


class MetricsHistory:
    """Samples of one registry every ``interval_s``, kept for ``retention_s``; summaries over any window in it.

    Example:
        >>> history = MetricsHistory(app.state.metrics.registry)
        >>> task = asyncio.create_task(history.run())
        >>> history.summary(window_s=300).models[0].latency_s.p95
    """

    def __init__(
        self, registry: CollectorRegistry, interval_s: float = 5.0, retention_s: float = 3600.0
    ) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.retention_s = retention_s
        self._ring: collections.deque[Snapshot] = collections.deque(maxlen=int(retention_s / interval_s) + 2)

    def sample(self, monotonic: float | None = None, wall: float | None = None) -> Snapshot:
        snap = take_snapshot(
            self.registry,
            time.monotonic() if monotonic is None else monotonic,
            time.time() if wall is None else wall,
        )
        self._ring.append(snap)
        return snap

    async def run(self) -> None:
        """Sample until cancelled (the module's lifespan owns the task).

        Reading the registry is CPU work proportional to models × buckets (≈ 40 ms for 64 adapters on two
        endpoints here), so it runs in a worker thread, never on the event loop; prometheus_client is thread-safe.
        """
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.interval_s)

    def summary(
        self, window_s: float, monotonic: float | None = None, wall: float | None = None
    ) -> MetricsSummary:
        """Per model and overall, over the last ``window_s`` (or as much of it as has been sampled)."""
        now = take_snapshot(
            self.registry,
            time.monotonic() if monotonic is None else monotonic,
            time.time() if wall is None else wall,
        )
        window_s = min(window_s, self.retention_s)
        start_at = now.monotonic - window_s
        # Baseline: the newest sample at or before the window's start (else the oldest one there is).
        in_window = [s for s in self._ring if start_at < s.monotonic < now.monotonic]
        older = [s for s in self._ring if s.monotonic <= start_at]
        if older:
            baseline = older[-1]
        elif in_window:
            baseline = in_window[0]
        else:
            baseline = Snapshot(now.monotonic, now.wall, {})
        span = now.monotonic - baseline.monotonic
        models = []
        for model in sorted(now.models):
            window = now.models[model].minus(baseline.models.get(model, Counters()))
            models.append(_stats(model, window, now.models[model], span))
        total_now = now.total()
        overall = _stats(ALL_MODELS, total_now.minus(baseline.total()), total_now, span)
        points = [s for s in self._ring if baseline.monotonic <= s.monotonic < now.monotonic] + [now]
        series = []
        for before, after in itertools.pairwise(points):
            dt = after.monotonic - before.monotonic
            if dt > 0:
                series.append(
                    RatePoint(
                        t=after.wall,
                        requests_per_s=(after.requests - before.requests) / dt,
                        errors_per_s=(after.errors - before.errors) / dt,
                    )
                )
        return MetricsSummary(
            window_s=span,
            requested_window_s=window_s,
            interval_s=self.interval_s,
            generated_at=now.wall,
            overall=overall,
            models=models,
            series=series,
        )
