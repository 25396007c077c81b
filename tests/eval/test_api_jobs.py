"""``/v1/evaluations`` on a real gateway over the session's vLLM engine: jobs run by the gateway's embedded worker
(the default on SQLite), errors, the report, and a gateway restart mid-job that resumes from the stored traces."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane import ControlPlane, default_url
from serving.engine import EngineSettings
from tests.conftest import Gateway, gateway_settings, start_gateway

pytestmark = pytest.mark.engine

# Already-answered rows (ragas EvaluationDataset fields): the job only scores them, so it stays cheap.
ROWS = [
    {
        "user_input": f"What is the capital of France? ({i})",
        "response": "The capital of France is Paris.",
        "retrieved_contexts": ["Paris is the capital of France."],
        "retrieved_context_ids": ["d1", "d2"],
        "reference": "Paris is the capital of France.",
        "reference_context_ids": ["d1"],
    }
    for i in range(5)
]


def _wait(gw: Gateway, job_id: str, until: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{gw.url}/v1/evaluations/{job_id}", headers=gw.headers(), timeout=30).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.5)


@pytest.fixture
def own_gateway(engine: Any, engine_settings: EngineSettings, adapter_root: Path, tmp_path: Path) -> Any:
    """Start/stop gateways sharing one state dir (the session ``gateway`` fixture cannot be restarted)."""
    started: list[Gateway] = []
    settings = gateway_settings(engine.url, engine_settings, adapter_root, tmp_path / "state")
    settings.eval = settings.eval.model_copy(
        # Cheap judging, no cache, one sample at a time so that a stop cuts the job between samples.
        update={"judge_max_tokens": 160, "cache": False, "generation_concurrency": 1}
    )

    def start() -> Gateway:
        gw = start_gateway(settings, adapter_root)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.server.stop()


def test_job_survives_restart_and_resumes(own_gateway: Any) -> None:
    gw = own_gateway()
    body = {"name": "restart", "dataset": ROWS, "metrics": ["context_recall", "mrr"], "score_only": True}
    created = httpx.post(f"{gw.url}/v1/evaluations", json=body, headers=gw.headers(), timeout=30)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] in ("queued", "running") and job["progress"]["total"] == 5
    job_id = job["id"]
    # Stop the gateway as soon as the first sample is traced, while the job is running.
    _wait(gw, job_id, lambda b: b["progress"]["done"] >= 1)
    gw.server.stop()
    plane = ControlPlane.open(default_url(gw.state_dir))
    try:
        interrupted = plane.jobs.get(job_id)
        traced_before = plane.jobs.traced(job_id)
    finally:
        plane.close()
    assert interrupted.status == "queued" and interrupted.worker  # handed back to the queue, not failed
    assert 1 <= len(traced_before) < 5 and interrupted.done == len(traced_before)

    gw2 = own_gateway()
    final = _wait(gw2, job_id, lambda b: b["status"] in ("succeeded", "failed", "cancelled"))
    assert final["status"] == "succeeded", final
    assert final["resumed"] == 1 and final["progress"] == {"done": 5, "total": 5}
    results = httpx.get(
        f"{gw2.url}/v1/evaluations/{job_id}/results",
        params={"traces": "true"},
        headers=gw2.headers(),
        timeout=30,
    ).json()
    traces = results["traces"]
    # Every sample exactly once: the samples traced before the restart were not run again.
    assert sorted(t["sample_id"] for t in traces) == ["1", "2", "3", "4", "5"]
    assert final["worker"] != interrupted.worker  # the second gateway's worker finished it
    summary = results["summary"]["results"]["smollm2-135m-instruct"]
    assert summary["mrr"]["mean"] == 1.0 and summary["mrr"]["n_ok"] == 5
    recall = summary["context_recall"]
    assert recall["n_ok"] + recall["n_failed"] == 5  # each sample scored or counted as failed
    for trace in traces:
        score = trace["scores"]["context_recall"]
        assert score["judge_calls"] and score["judge_calls"][0]["raw"], (
            score
        )  # the judge's raw output is kept
        assert (score["status"] == "ok") == (score["value"] is not None)
    report = httpx.get(f"{gw2.url}/v1/evaluations/{job_id}/report", headers=gw2.headers(), timeout=60)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "context_recall" in report.text


def test_errors_and_cancel(gateway: Gateway) -> None:
    url, headers = f"{gateway.url}/v1/evaluations", gateway.headers()
    bad = httpx.post(url, json={"dataset": [{"question": "q"}, {"answer": "no question"}]}, headers=headers)
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert "row:2" in error["message"] and "question" in error["message"]
    unknown = httpx.post(url, json={"dataset": [{"question": "q"}], "metrics": ["bleu"]}, headers=headers)
    assert unknown.status_code == 400 and "bleu" in unknown.json()["error"]["message"]
    assert httpx.post(url, json={"dataset": [{"question": "q"}]}).status_code == 401
    elsewhere = {"dataset": [{"question": "q"}], "judge": {"url": "http://169.254.169.254/v1"}}
    forbidden = httpx.post(url, json=elsewhere, headers=headers)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["param"] == "judge.url"
    missing = httpx.get(f"{url}/eval-missing", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"

    rows = [{"question": f"Say a colour. ({i})", "reference": "Blue."} for i in range(50)]
    job = httpx.post(url, json={"dataset": rows, "metrics": ["rouge_l"]}, headers=headers).json()
    early = httpx.get(f"{url}/{job['id']}/results", headers=headers)
    assert early.status_code == 409 and early.json()["error"]["code"] == "evaluation_not_finished"
    assert httpx.get(f"{url}/{job['id']}/report", headers=headers).status_code == 409
    cancelled = httpx.post(f"{url}/{job['id']}/cancel", headers=headers, timeout=60)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = httpx.delete(f"{url}/{job['id']}", headers=headers, timeout=60)
    assert again.status_code == 409
    listed = httpx.get(url, headers=headers).json()["data"]
    assert any(j["id"] == job["id"] and j["status"] == "cancelled" for j in listed)
