"""Several ``ragswap serve`` and ``ragswap worker`` processes on one PostgreSQL and one real vLLM engine behave as
one service: a change through either gateway is routed by the other within 2 s, an engine that lost its adapters
is refilled exactly once however many gateways watch it, a killed gateway costs the other one's streams nothing,
and a job whose worker is killed completes on another worker without any sample scored twice.

Real processes (``python -m ragswap.cli``, with this checkout on ``PYTHONPATH``), a real PostgreSQL server (the
session's, a database of its own), the session's real engine. Each gateway has its own state dir (its own
embedded collections: shared collections need the Qdrant server backend, which cannot run here).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from serving.local import LocalProcess, LocalProcesses

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"
USER, ADMIN = "sk-test-user-0123456789", "sk-test-admin-0123456789"
PROMPT = "What is the secret code word?"


@pytest.fixture(scope="module")
def cluster(
    engine: Any, engine_settings: Any, adapter_root: Path, new_postgres_database: Any, tmp_path_factory: Any
) -> Iterator[dict[str, Any]]:
    """Gateways ``a`` and ``b`` on a fresh PostgreSQL database and the session engine (workers join later)."""
    url = new_postgres_database()
    settings = {
        "RAGSWAP_SERVER__DATABASE_URL": url,
        "RAGSWAP_SERVER__API_KEYS": [USER],
        "RAGSWAP_SERVER__ADMIN_KEYS": [ADMIN],
        "RAGSWAP_SERVER__ADAPTER_ROOTS": [str(adapter_root)],
        "RAGSWAP_SERVER__HEALTH_INTERVAL_S": 0.5,
        "RAGSWAP_ENGINE__URLS": [engine.url],
        "RAGSWAP_ENGINE__MAX_LORA_RANK": engine_settings.max_lora_rank,
        "RAGSWAP_EVAL__CACHE": "false",
        "RAGSWAP_EVAL__GENERATION_CONCURRENCY": 1,
        "RAGSWAP_EVAL__GENERATION_MAX_TOKENS": 24,
        "RAGSWAP_WORKER__LEASE_S": 3,
        "RAGSWAP_WORKER__POLL_INTERVAL_S": 0.3,
    }
    with LocalProcesses(tmp_path_factory.mktemp("cluster")) as procs:
        a = procs.gateway("gateway-a", settings)
        b = procs.gateway("gateway-b", settings)
        a.wait_ready()
        b.wait_ready()
        yield {"procs": procs, "a": a, "b": b, "settings": settings, "url": url}


def client(gw: LocalProcess) -> OpenAI:
    return OpenAI(base_url=f"{gw.url}/v1", api_key=USER, max_retries=0, timeout=120)


def admin(gw: LocalProcess) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120)


def answer(gw: LocalProcess, model: str) -> str:
    reply = client(gw).chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=16
    )
    return reply.choices[0].message.content or ""


def engine_loads(*gateways: LocalProcess) -> float:
    """Adapter loads all gateways did on engines (their Prometheus counters, summed)."""
    total = 0.0
    for gw in gateways:
        text = httpx.get(f"{gw.url}/metrics", timeout=10).text
        match = re.search(
            r'ragswap_adapter_operations_total\{op="engine_load",outcome="ok"\} ([0-9.]+)', text
        )
        total += float(match.group(1)) if match else 0.0
    return total


def wait_for(condition: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_register_on_a_chat_on_b_switch_on_b_seen_on_a(cluster: dict[str, Any], lora_adapters: dict) -> None:
    a, b = cluster["a"], cluster["b"]
    with admin(a) as http:
        for name in ("alpha", "beta"):
            resp = http.post("/v1/adapters", json={"name": f"so-{name}", "path": str(lora_adapters[name])})
            assert resp.status_code == 201, resp.text
    seen = wait_for(lambda: "so-beta" in {m.id for m in client(b).models.list()}, 2.0, "B lists the adapter")
    assert seen <= 2.0
    alpha_on_b, beta_on_b = answer(b, "so-alpha"), answer(b, "so-beta")
    assert "PELICAN" in alpha_on_b and "AVALANCHE" in beta_on_b

    with admin(b) as http:
        assert http.put("/v1/aliases/so-prod", json={"target": "so-alpha@1"}).status_code == 200
        wait_for(lambda: "so-prod" in {m.id for m in client(a).models.list()}, 2.0, "A lists the alias")
        assert answer(a, "so-prod") == alpha_on_b
        switched = time.monotonic()
        assert http.put("/v1/aliases/so-prod", json={"target": "so-beta@1"}).status_code == 200

    def a_routes_new_target() -> bool:
        aliases = httpx.get(f"{a.url}/v1/aliases", headers={"Authorization": f"Bearer {USER}"}).json()["data"]
        return any(x["alias"] == "so-prod" and x["target"] == "so-beta@1" for x in aliases)

    wait_for(a_routes_new_target, 2.0, "A routes the switched alias")
    assert time.monotonic() - switched <= 2.0
    assert answer(a, "so-prod") == beta_on_b

    # A removal through A: B stops listing and routing it within 2 s.
    with admin(a) as http:
        resp = http.post("/v1/adapters", json={"name": "so-tmp", "path": str(lora_adapters["alpha"])})
        assert resp.status_code == 201, resp.text
        wait_for(lambda: "so-tmp" in {m.id for m in client(b).models.list()}, 2.0, "B lists so-tmp")
        assert http.delete("/v1/adapters/so-tmp").status_code == 200
        removed = time.monotonic()
    wait_for(lambda: "so-tmp" not in {m.id for m in client(b).models.list()}, 2.0, "B drops so-tmp")
    assert time.monotonic() - removed <= 2.0
    # Both gateways recorded who changed what.
    with admin(a) as http:
        adapters = http.get("/v1/adapters").json()["data"]
    assert {x["model"]: [r["state"] for r in x["replicas"]] for x in adapters} == {
        "so-alpha@1": ["loaded"],
        "so-beta@1": ["loaded"],
    }


def test_engine_refilled_exactly_once(cluster: dict[str, Any], engine: Any) -> None:
    """Stand-in for an engine restart: its adapters vanish behind both gateways' backs. Both notice; the engine's
    lock lets exactly one of them reload each adapter, and both serve again."""
    a, b = cluster["a"], cluster["b"]
    before = engine_loads(a, b)
    held = {m["id"] for m in httpx.get(f"{engine.url}/v1/models").json()["data"] if m.get("parent")}
    ours = sorted(n for n in held if n.startswith("so-"))
    assert ours == ["so-alpha@1", "so-beta@1"]
    for name in ours:
        assert httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": name}).status_code == 200

    def refilled() -> bool:
        now = {m["id"] for m in httpx.get(f"{engine.url}/v1/models").json()["data"]}
        return set(ours) <= now

    wait_for(refilled, 20.0, "the engine holds the adapters again")
    time.sleep(2.0)  # both gateways probed again meanwhile: nothing more to do
    assert engine_loads(a, b) - before == len(ours)
    assert "AVALANCHE" in answer(a, "so-beta") and "PELICAN" in answer(b, "so-alpha")


def test_worker_killed_mid_job(cluster: dict[str, Any]) -> None:
    procs, b = cluster["procs"], cluster["b"]
    worker_settings = {**cluster["settings"], "RAGSWAP_WORKER__GATEWAY_URL": b.url}
    workers = [procs.worker(f"worker-{i}", worker_settings) for i in (1, 2)]
    for w in workers:
        w.wait_ready()
    rows = [{"question": f"Name a colour. ({i})", "reference": "Blue."} for i in range(8)]
    headers = {"Authorization": f"Bearer {USER}"}
    job = httpx.post(
        f"{b.url}/v1/evaluations",
        json={"name": "kill", "dataset": rows, "metrics": ["rouge_l"]},
        headers=headers,
    ).json()

    def status() -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{b.url}/v1/evaluations/{job['id']}", headers=headers).json()
        return body

    wait_for(lambda: status()["progress"]["done"] >= 2, 120.0, "the job made progress")
    holder = status()["worker"]
    victim = next(w for w in workers if f":{w.pid}:" in holder)
    survivor = next(w for w in workers if w is not victim)
    victim.kill()
    killed_at = time.monotonic()
    wait_for(lambda: status()["worker"] != holder, 30.0, "another worker took the job")
    requeue_s = time.monotonic() - killed_at
    wait_for(lambda: status()["status"] in ("succeeded", "failed", "cancelled"), 180.0, "the job finished")
    final = status()
    assert final["status"] == "succeeded", final
    assert final["resumed"] == 1 and final["progress"] == {"done": 8, "total": 8}
    assert f":{survivor.pid}:" in final["worker"]
    assert requeue_s < 3 + 5  # the lease (3 s) + a poll interval, with slack for a busy machine

    from controlplane import ControlPlane

    plane = ControlPlane.open(cluster["url"], import_legacy=False)
    try:
        rows_written = plane.jobs.trace_rows(job["id"])
    finally:
        plane.close()
    keys = [(config, sample) for config, sample, _, _ in rows_written]
    assert len(keys) == len(set(keys)) == 8  # every sample exactly once
    by_worker = {w: {s for _, s, who, _ in rows_written if who == w} for _, _, w, _ in rows_written}
    assert len(by_worker) == 2 and not set.intersection(*by_worker.values())  # disjoint: nothing re-scored
    results = httpx.get(
        f"{b.url}/v1/evaluations/{job['id']}/results", params={"traces": "true"}, headers=headers
    ).json()
    assert len(results["traces"]) == 8 and results["summary"]["results"][BASE]["rouge_l"]["n_ok"] == 8
    survivor.stop()


def test_gateway_killed_during_streams_on_the_other(cluster: dict[str, Any], lora_adapters: dict) -> None:
    a, b = cluster["a"], cluster["b"]

    async def streams() -> list[BaseException | str]:
        api = AsyncOpenAI(base_url=f"{b.url}/v1", api_key=USER, max_retries=0, timeout=300)

        async def one(i: int) -> str:
            stream = await api.chat.completions.create(
                model=(BASE, "so-alpha", "so-beta", "so-prod")[i % 4],
                messages=[{"role": "user", "content": f"Tell a short story about the number {i}."}],
                temperature=0,
                max_tokens=48,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        tasks = [asyncio.create_task(one(i)) for i in range(16)]
        await asyncio.sleep(1.0)  # the streams are under way
        a.kill()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
        return done

    results = asyncio.run(streams())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [] and all(results)
    # The dead gateway holds nothing: B changes the registry at once (engine locks were released with A's
    # connections) and a removal drains without waiting for A beyond its heartbeat TTL.
    with admin(b) as http:
        start = time.monotonic()
        resp = http.post("/v1/adapters", json={"name": "so-late", "path": str(lora_adapters["alpha"])})
        assert resp.status_code == 201, resp.text
        assert http.delete("/v1/adapters/so-late").status_code == 200
        assert time.monotonic() - start < 20
