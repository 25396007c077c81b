"""``/v1/evaluations`` on a real gateway and a real worker, on SQLite and on PostgreSQL: jobs are queued by the
gateway, run by the embedded worker (a child process on SQLite, a thread on PostgreSQL here, so both modes run),
reported from the database (results, traces, the HTML report), and cancelled.

The jobs score answered rows with metrics that need no judge, so no LLM is involved: the engine behind the gateway
is a stand-in (a tiny HTTP server answering ``/v1/models``, and chat completions that wait until the test lets
them finish, to hold interactive requests in flight) whose answers are never scored. The same
flows against the real engine, with a judge and a restart mid-job, are in ``tests/eval/test_api_jobs.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from controlplane import ControlPlane
from eval import TRAFFIC_HEADER
from serving.engine import EngineSettings
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway

BASE = "smollm2-135m-instruct"
ROWS = [
    {
        "user_input": f"Which documents mention topic {i}?",
        "response": f"Documents d{i} and d{i + 1} mention topic {i}.",
        "reference": f"Topic {i} is in documents d{i} and d{i + 1}.",
        "retrieved_contexts": [f"passage {i}", f"passage {i + 1}", "other"],
        "retrieved_context_ids": [f"d{i}", "x", f"d{i + 1}"],
        "reference_context_ids": [f"d{i}", f"d{i + 1}"],
    }
    for i in range(6)
]
RELEASE = threading.Event()
"""Set: the stand-in engine's chat completions answer (cleared: they wait)."""
RELEASE.set()


@pytest.fixture(scope="module")
def stand_in_engine() -> Iterator[str]:
    """Stand-in for a vLLM engine: lists the base model, nothing else (no job here generates anything)."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": BASE, "object": "model", "parent": None}]}

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        await asyncio.to_thread(RELEASE.wait, 60)
        message = {"role": "assistant", "content": "ok"}
        return {
            "id": "chatcmpl-stand-in",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": BASE,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def gateway_on(db_url: str, stand_in_engine: str, tmp_path: Path) -> Iterator[Gateway]:
    mode = "process" if db_url.startswith("sqlite") else "thread"
    settings = gateway_settings(
        stand_in_engine, EngineSettings(), tmp_path, tmp_path / "state", database_url=db_url
    )
    update = {"embedded": mode, "poll_interval_s": 0.2, "yield_quiet_s": 0.2}
    settings.worker = settings.worker.model_copy(update=update)
    gw = start_gateway(settings, tmp_path)
    try:
        yield gw
    finally:
        gw.server.stop()


def wait(gw: Gateway, job_id: str, until: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(f"{gw.url}/v1/evaluations/{job_id}", headers=gw.headers()).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_job_runs_on_the_worker_and_reports_from_the_database(gateway_on: Gateway, db_url: str) -> None:
    gw, url, headers = gateway_on, f"{gateway_on.url}/v1/evaluations", gateway_on.headers()
    body = {"name": "ir", "dataset": ROWS, "metrics": ["mrr", "ndcg", "rouge_l"], "score_only": True}
    created = httpx.post(url, json=body, headers=headers)
    assert created.status_code == 202, created.text
    job = created.json()
    assert (job["status"], job["progress"], job["worker"]) == ("queued", {"done": 0, "total": 6}, None)
    final = wait(gw, job["id"], lambda b: b["status"] in ("succeeded", "failed", "cancelled"))
    assert final["status"] == "succeeded" and final["progress"] == {"done": 6, "total": 6}, final
    assert final["worker"].startswith("worker:") and final["attempts"] == 1 and final["resumed"] == 0
    assert final["started_at"] >= final["created_at"] and final["finished_at"] >= final["started_at"]

    results = httpx.get(f"{url}/{job['id']}/results", params={"traces": "true"}, headers=headers).json()
    summary = results["summary"]["results"][BASE]
    assert summary["mrr"]["mean"] == pytest.approx(1.0) and summary["mrr"]["n_ok"] == 6
    assert 0 < summary["ndcg"]["mean"] < 1  # the second relevant document is ranked third
    assert sorted(t["sample_id"] for t in results["traces"]) == [str(i) for i in range(1, 7)]
    assert httpx.get(f"{url}/{job['id']}/results", headers=headers).json()["traces"] is None
    report = httpx.get(f"{url}/{job['id']}/report", headers=headers)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "ndcg" in report.text and "ir" in report.text

    # The database is the record: every sample once, written by the worker that ran the job.
    plane = ControlPlane.open(db_url, import_legacy=False)
    try:
        rows = plane.jobs.trace_rows(job["id"])
    finally:
        plane.close()
    assert len(rows) == 6 and {w for _, _, w, _ in rows} == {final["worker"]}

    finished = httpx.post(f"{url}/{job['id']}/cancel", headers=headers)
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "evaluation_finished"
    listed = httpx.get(url, headers=headers).json()["data"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_embedded_worker_yields_to_interactive_requests(gateway_on: Gateway) -> None:
    """While a chat is in flight on the gateway the embedded worker scores nothing; evaluation traffic (the
    ``x-ragswap-traffic: evaluation`` header) does not count as load; once serving is idle the job finishes."""
    gw, url, headers = gateway_on, f"{gateway_on.url}/v1/evaluations", gateway_on.headers()
    assert httpx.get(f"{gw.url}/load").json() == {"interactive_in_flight": 0, "idle_s": None}
    RELEASE.clear()
    answers: list[httpx.Response] = []
    chat = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    def post(extra: dict[str, str]) -> None:
        answers.append(
            httpx.post(f"{gw.url}/v1/chat/completions", json=chat, headers={**headers, **extra}, timeout=60)
        )

    clients = [threading.Thread(target=post, args=(h,)) for h in ({}, {TRAFFIC_HEADER: "evaluation"})]
    try:
        for t in clients:
            t.start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{gw.url}/load").json()["interactive_in_flight"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # both requests are in flight now; only the interactive one counts
        assert httpx.get(f"{gw.url}/load").json() == {"interactive_in_flight": 1, "idle_s": 0.0}

        body = {"name": "ir", "dataset": ROWS, "metrics": ["mrr", "rouge_l"], "score_only": True}
        job = httpx.post(url, json=body, headers=headers).json()
        wait(gw, job["id"], lambda b: b["status"] != "queued")
        time.sleep(2.0)
        held = httpx.get(f"{url}/{job['id']}", headers=headers).json()
        assert held["status"] == "running" and held["progress"]["done"] == 0, held
    finally:
        RELEASE.set()
        for t in clients:
            t.join(30)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    final = wait(gw, job["id"], lambda b: b["status"] in ("succeeded", "failed", "cancelled"))
    assert final["status"] == "succeeded" and final["progress"] == {"done": 6, "total": 6}, final
    load = httpx.get(f"{gw.url}/load").json()
    assert load["interactive_in_flight"] == 0 and load["idle_s"] > 0


def test_cancel_and_errors(gateway_on: Gateway) -> None:
    url, headers = f"{gateway_on.url}/v1/evaluations", gateway_on.headers()
    big = {"name": "big", "dataset": ROWS * 50, "metrics": ["rouge_l"], "score_only": True}
    rows = [dict(r, user_input=f"{r['user_input']} ({i})") for i, r in enumerate(big["dataset"])]
    job = httpx.post(url, json={**big, "dataset": rows}, headers=headers).json()
    cancelled = httpx.post(f"{url}/{job['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(1.0)  # a worker that had claimed it stops at its next write
    after = httpx.get(f"{url}/{job['id']}", headers=headers).json()
    assert after["status"] == "cancelled" and after["progress"]["done"] < 300
    time.sleep(0.5)
    later = httpx.get(f"{url}/{job['id']}", headers=headers).json()
    assert later["progress"]["done"] == after["progress"]["done"]  # nothing stored after the cancel settled
    for path in ("results", "report"):
        resp = httpx.get(f"{url}/{job['id']}/{path}", headers=headers)
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "evaluation_not_finished"
    assert httpx.delete(f"{url}/{job['id']}", headers=headers).status_code == 409
    missing = httpx.get(f"{url}/eval-nope", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"
    bad = httpx.post(url, json={"dataset": [{"answer": "no question"}]}, headers=headers)
    assert bad.status_code == 400 and "question" in bad.json()["error"]["message"]
    assert httpx.post(url, json={"dataset": ROWS}).status_code == 401
