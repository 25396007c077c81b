"""Console benchmark: what the console costs the gateway, and what a page costs the browser.

    .venv/bin/python bench/console.py        # ~20 s, no engine; writes bench/results/console.json

- **Metrics history** (``/v1/metrics/summary``): time to sample the gateway's Prometheus registry and to answer a
  5-minute and a 1-hour summary over a full hour of samples, with 1, 16 and 64 adapters each serving chat and
  completions (every label set populated, so every histogram bucket is exported).
- **Event-loop lag** side by side: a 5 ms ticker on an asyncio loop without, then with, the history sampling a
  64-adapter registry every 50 ms (100× the real rate) in its worker thread; p50/p99 of the ticker's overshoot.
- **Page weight**: bytes and requests each page loads (HTML, stylesheet, its module and every module it imports,
  the icon), from the app itself; nothing comes from another origin.
"""

from __future__ import annotations

import asyncio
import functools
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, percentile, write_results
from rich.console import Console
from rich.table import Table

from serving.ops.insights.metrics_window import MetricsHistory
from serving.ops.metrics import GatewayMetrics

console = Console()
ADAPTER_COUNTS = (1, 16, 64)
PAGES = ["/ui", "/ui/adapters", "/ui/collections", "/ui/collections/kb", "/ui/evaluations",
         "/ui/evaluations/compare", "/ui/evaluations/eval-1", "/ui/chat"]  # fmt: skip


def populated(adapters: int) -> GatewayMetrics:
    metrics = GatewayMetrics()
    for i in range(adapters):
        model = f"adapter-{i}"
        for endpoint in ("chat", "completions"):
            metrics.requests.labels(endpoint, model, "true").inc()
            metrics.latency.labels(endpoint, model).observe(0.4)
            metrics.ttft.labels(endpoint, model).observe(0.04)
            metrics.errors.labels(endpoint, model, "502").inc()
        metrics.tokens.labels(model, "prompt").inc(10)
        metrics.tokens.labels(model, "completion").inc(10)
    return metrics


def time_ms(fn: Any, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def history_costs() -> dict[str, Any]:
    out = {}
    for adapters in ADAPTER_COUNTS:
        history = MetricsHistory(populated(adapters).registry)
        for k in range(int(history.retention_s / history.interval_s)):
            history.sample(monotonic=k * history.interval_s, wall=k * history.interval_s)
        now = history.retention_s
        out[str(adapters)] = {
            "snapshot_ms": round(time_ms(history.sample, 20), 2),
            "summary_5min_ms": round(time_ms(functools.partial(history.summary, 300, now, now), 10), 2),
            "summary_1h_ms": round(time_ms(functools.partial(history.summary, 3600, now, now), 10), 2),
        }
    return out


async def _lag(seconds: float, sample_every_s: float | None) -> list[float]:
    task = None
    if sample_every_s is not None:
        history = MetricsHistory(populated(64).registry, interval_s=sample_every_s)
        task = asyncio.create_task(history.run())
    lags = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((time.perf_counter() - start - 0.005) * 1000)
    if task is not None:
        task.cancel()
    return lags


def loop_lag() -> dict[str, float]:
    without = asyncio.run(_lag(4.0, None))
    with_sampler = asyncio.run(_lag(4.0, 0.05))
    return {
        "without_p50_ms": round(percentile(without, 50), 2),
        "without_p99_ms": round(percentile(without, 99), 2),
        "with_sampler_p50_ms": round(percentile(with_sampler, 50), 2),
        "with_sampler_p99_ms": round(percentile(with_sampler, 99), 2),
    }


def page_weight() -> dict[str, dict[str, int]]:
    import tempfile

    from fastapi.testclient import TestClient

    from ragswap.config import Settings
    from serving import build_app
    from serving.engine import EngineSettings
    from serving.settings import ServerSettings

    state = Path(tempfile.mkdtemp(prefix="bench-console-"))
    client = TestClient(
        build_app(
            Settings(
                engine=EngineSettings(urls=["http://127.0.0.1:9"]),
                server=ServerSettings(
                    api_keys=["sk-bench-0123456789"], state_dir=state, adapter_roots=[state]
                ),
            )
        )
    )
    out = {}
    for page in PAGES:
        html = client.get(page).text
        urls = set(re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', html))
        queue, seen, total = list(urls), set(), len(html.encode())
        while queue:
            url = queue.pop()
            if url in seen:
                continue
            seen.add(url)
            body = client.get(url).content
            total += len(body)
            if url.endswith(".js"):
                base = url.rsplit("/", 1)[0]
                for spec in re.findall(rb'from "(\.[^"]+)"', body):
                    parts: list[str] = []
                    for part in f"{base}/{spec.decode()}".split("/"):
                        if part == "..":
                            parts.pop()
                        elif part != ".":
                            parts.append(part)
                    queue.append("/".join(parts))
        out[page] = {"bytes": total, "requests": 1 + len(seen)}
    return out


def main() -> None:
    info = machine()
    started = time.perf_counter()
    costs = history_costs()
    lag = loop_lag()
    weight = page_weight()
    payload = {
        "machine": info,
        "metrics_history": costs,
        "event_loop_lag": lag,
        "page_weight": weight,
        "seconds": round(time.perf_counter() - started, 1),
    }
    path = write_results("console", payload)

    table = Table(title="metrics history (per sample / per summary)")
    for column in ("adapters", "snapshot ms", "summary 5 min ms", "summary 1 h ms"):
        table.add_column(column, justify="right")
    for adapters, row in costs.items():
        table.add_row(
            adapters, *(f"{row[k]:.2f}" for k in ("snapshot_ms", "summary_5min_ms", "summary_1h_ms"))
        )
    console.print(table)
    console.print(
        f"event-loop lag p50/p99: {lag['without_p50_ms']}/{lag['without_p99_ms']} ms without, "
        f"{lag['with_sampler_p50_ms']}/{lag['with_sampler_p99_ms']} ms while sampling 64 adapters every 50 ms"
    )
    pages = Table(title="page weight")
    pages.add_column("page")
    pages.add_column("KiB", justify="right")
    pages.add_column("requests", justify="right")
    for page, row in weight.items():
        pages.add_row(page, f"{row['bytes'] / 1024:.1f}", str(row["requests"]))
    console.print(pages)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
