"""The windowed metrics summary over the gateway's real Prometheus registry (GatewayMetrics), with explicit clocks."""

from __future__ import annotations

import math

import pytest

from serving.ops.insights.metrics_window import Histogram, MetricsHistory
from serving.ops.metrics import GatewayMetrics


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.5], 2 in (0.5, 1]; cumulative 4, 8, 10.
    h = Histogram({0.1: 4, 0.5: 8, 1.0: 10, math.inf: 10}, count=10)
    assert h.quantile(0.5) == pytest.approx(0.1 + 0.4 * (5 - 4) / 4)
    assert h.quantile(0.95) == pytest.approx(0.5 + 0.5 * (9.5 - 8) / 2)
    assert h.quantile(0.2) == pytest.approx(0.1 * 2 / 4)
    # Past the last finite bucket: the largest finite bound (what Prometheus answers).
    assert Histogram({1.0: 1, math.inf: 3}, count=3).quantile(0.9) == 1.0
    assert Histogram({1.0: 0, math.inf: 0}).quantile(0.5) is None


def _traffic(m: GatewayMetrics, model: str, n: int, latency: float, errors: int = 0) -> None:
    for _ in range(n):
        m.requests.labels("chat", model, "true").inc()
        m.latency.labels("chat", model).observe(latency)
        m.ttft.labels("chat", model).observe(latency / 10)
        m.tokens.labels(model, "completion").inc(20)
        m.tokens.labels(model, "prompt").inc(5)
    for _ in range(errors):
        m.errors.labels("chat", model, "502").inc()


def test_summary_counts_only_the_window_and_reads_every_family() -> None:
    metrics = GatewayMetrics()
    history = MetricsHistory(metrics.registry, interval_s=5, retention_s=600)
    history.sample(monotonic=0, wall=1000)
    _traffic(metrics, "alpha", 10, latency=3.0, errors=2)  # old traffic
    history.sample(monotonic=5, wall=1005)
    history.sample(monotonic=100, wall=1100)
    _traffic(metrics, "alpha", 4, latency=0.3)
    _traffic(metrics, "base", 6, latency=0.7, errors=1)
    history.sample(monotonic=105, wall=1105)

    recent = history.summary(window_s=10, monotonic=110, wall=1110)
    assert recent.window_s == pytest.approx(10)  # from the sample at t=100 to now
    by_model = {m.model: m for m in recent.models}
    alpha, base = by_model["alpha"], by_model["base"]
    assert (alpha.requests, alpha.errors, alpha.error_rate) == (4, 0, 0.0)
    assert alpha.requests_per_s == pytest.approx(0.4)
    assert 0.25 < alpha.latency_s.p50 <= 0.5 and 0.025 < alpha.ttft_s.p95 <= 0.05  # type: ignore[operator]
    assert alpha.completion_tokens == 80 and alpha.prompt_tokens == 20
    assert alpha.completion_tokens_per_s == pytest.approx(8.0)
    assert (alpha.total_requests, alpha.total_errors) == (14, 2)  # since start, not the window
    assert base.error_rate == pytest.approx(1 / 6)
    assert 0.5 < base.latency_s.p95 <= 1.0  # type: ignore[operator]
    assert recent.overall.requests == 10 and recent.overall.errors == 1

    everything = history.summary(window_s=600, monotonic=110, wall=1110)
    assert everything.window_s == pytest.approx(110)  # as much as was sampled
    assert {m.model: m.requests for m in everything.models} == {"alpha": 14, "base": 6}
    slow = next(m for m in everything.models if m.model == "alpha")
    assert slow.latency_s.p95 > 2.0  # type: ignore[operator]  # the old 3 s requests count now
    # One rate point per sampling interval, the last one up to "now".
    assert [p.t for p in everything.series] == [1005, 1100, 1105, 1110]
    assert everything.series[0].requests_per_s == pytest.approx(10 / 5)
    assert everything.series[0].errors_per_s == pytest.approx(2 / 5)
    assert everything.series[2].requests_per_s == pytest.approx(10 / 5)
    assert everything.series[3].requests_per_s == 0


def test_summary_without_samples_or_traffic() -> None:
    history = MetricsHistory(GatewayMetrics().registry)
    summary = history.summary(window_s=300)
    assert summary.models == [] and summary.overall.requests == 0
    assert summary.overall.error_rate is None and summary.overall.latency_s.p50 is None


def test_ring_keeps_only_the_retention() -> None:
    history = MetricsHistory(GatewayMetrics().registry, interval_s=1, retention_s=10)
    for t in range(100):
        history.sample(monotonic=t, wall=t)
    assert len(history._ring) == 12
    assert history.summary(window_s=3600, monotonic=100, wall=100).requested_window_s == 10
