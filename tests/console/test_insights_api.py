"""The read-only views the console uses, through the live test gateway: who am I, the metrics summary, adapter
sources and manifests, evaluation reports and comparisons."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import ADAPTER_PROMPT, Gateway

pytestmark = pytest.mark.engine

ROWS = [
    {"question": f"What colour is the sky on a clear day? ({i})", "reference": "The sky is blue."}
    for i in range(3)
]


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Any:
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def user(gateway: Gateway) -> Any:
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(), timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def registered(admin: httpx.Client, lora_adapters: dict[str, Path]) -> Any:
    resp = admin.post("/v1/adapters", json={"name": "api-alpha", "path": "trained/alpha"})
    assert resp.status_code == 201, resp.text
    yield resp.json()
    admin.delete("/v1/adapters/api-alpha", params={"force": True})


def test_whoami(gateway: Gateway, admin: httpx.Client, user: httpx.Client) -> None:
    assert admin.get("/v1/whoami").json() == {
        "object": "principal",
        "role": "admin",
        "admin": True,
        "key_hint": "…6789",
        "auth_required": True,
    }
    assert user.get("/v1/whoami").json()["role"] == "user"
    missing = httpx.get(f"{gateway.url}/v1/whoami")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.get(f"{gateway.url}/v1/whoami", headers={"Authorization": "Bearer sk-nope-0000000000"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_metrics_summary_reflects_real_requests(
    gateway: Gateway, user: httpx.Client, registered: Any
) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)
    before = {m["model"]: m for m in user.get("/v1/metrics/summary").json()["models"]}
    for _ in range(2):
        stream = client.chat.completions.create(
            model="api-alpha",
            messages=[{"role": "user", "content": ADAPTER_PROMPT}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with pytest.raises(
        openai.BadRequestError
    ):  # longer than the context: the engine's 400 counts as an error
        client.chat.completions.create(
            model="api-alpha", messages=[{"role": "user", "content": "word " * 20_000}], max_tokens=4
        )
    summary = user.get("/v1/metrics/summary", params={"window_s": 60}).json()
    alpha = next(m for m in summary["models"] if m["model"] == "api-alpha")
    had = before.get("api-alpha", {"total_requests": 0, "total_errors": 0})
    assert alpha["total_requests"] - had["total_requests"] == 3
    assert alpha["total_errors"] - had["total_errors"] == 1
    assert alpha["requests"] >= 3 and alpha["errors"] >= 1 and alpha["error_rate"] > 0
    assert alpha["latency_s"]["p50"] > 0 and alpha["latency_s"]["p95"] >= alpha["latency_s"]["p50"]
    assert alpha["ttft_s"]["p50"] > 0 and alpha["completion_tokens"] >= 2
    assert summary["overall"]["requests"] >= alpha["requests"] and summary["series"]
    assert user.get("/v1/metrics/summary", params={"window_s": 1}).status_code == 400
    assert httpx.get(f"{gateway.url}/v1/metrics/summary").status_code == 401


def test_adapter_roots_need_admin_and_list_the_trained_adapters(
    admin: httpx.Client, user: httpx.Client, registered: Any, lora_adapters: dict[str, Path]
) -> None:
    denied = user.get("/v1/adapter-roots")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"
    sources = admin.get("/v1/adapter-roots").json()
    by_path = {s["path"]: s for s in sources["data"]}
    alpha = by_path["trained/alpha"]
    manifest = json.loads((lora_adapters["alpha"] / "ragswap.json").read_text())
    assert alpha["name"] == manifest["name"] and alpha["rank"] == 8
    assert alpha["base_model"] == "smollm2-135m-instruct" and alpha["manifest_error"] is None
    assert "api-alpha@1" in alpha["registered_as"]
    assert "trained/beta" in by_path and not sources["truncated"]


def test_manifest_of_a_version(user: httpx.Client, registered: Any) -> None:
    view = user.get("/v1/adapters/api-alpha/manifest").json()
    assert view["model"] == "api-alpha@1" and view["error"] is None
    manifest = view["manifest"]
    assert manifest["adapter"]["r"] == 8 and "q_proj" in manifest["adapter"]["target_modules"]
    assert manifest["base_model"]["config_sha256"] and manifest["hyperparameters"]["steps"] == 30
    assert user.get("/v1/adapters/api-alpha@1/manifest").json()["model"] == "api-alpha@1"
    missing = user.get("/v1/adapters/nope@3/manifest")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "adapter_not_found"


def _finish(user: httpx.Client, body: dict[str, Any]) -> str:
    job = user.post("/v1/evaluations", json=body)
    assert job.status_code == 202, job.text
    job_id = str(job.json()["id"])
    deadline = time.monotonic() + 300
    while (status := user.get(f"/v1/evaluations/{job_id}").json()["status"]) not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status == "succeeded"
    return job_id


def test_report_and_comparison(user: httpx.Client, gateway: Gateway, registered: Any) -> None:
    base = _finish(user, {"name": "api-base", "dataset": ROWS, "metrics": ["rouge_l"]})
    alpha = _finish(
        user, {"name": "api-alpha", "dataset": ROWS, "metrics": ["rouge_l"], "adapters": ["api-alpha"]}
    )
    report = user.get(f"/v1/evaluations/{base}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in report.headers["content-security-policy"]
    assert "<html" in report.text and "rouge_l" in report.text and "api-base" in report.text
    assert httpx.get(f"{gateway.url}/v1/evaluations/{base}/report").status_code == 401

    comparison = user.get(f"/v1/evaluations/{base}/compare/{alpha}").json()
    (pair,) = comparison["pairs"]
    assert (pair["config_a"], pair["config_b"]) == ("smollm2-135m-instruct", "api-alpha")
    (rouge,) = pair["metrics"]
    assert rouge["metric"] == "rouge_l" and rouge["n_pairs"] == 3
    assert rouge["delta"] == pytest.approx(rouge["mean_b"] - rouge["mean_a"])
    assert rouge["paired_delta"] == pytest.approx(rouge["delta"])  # every sample scored in both runs
    assert "issue 15" in comparison["note"]
    samples = pair["samples"]
    assert [s["sample_id"] for s in samples] == ["1", "2", "3"] and not pair["samples_truncated"]
    assert all(s["answer_a"] and s["answer_b"] and s["question"].startswith("What colour") for s in samples)
    print([(s["answer_a"], s["scores_a"], s["answer_b"], s["scores_b"]) for s in samples])
    deltas = [s["scores_b"]["rouge_l"] - s["scores_a"]["rouge_l"] for s in samples]
    assert rouge["paired_delta"] == pytest.approx(sum(deltas) / 3)
    same = user.get(f"/v1/evaluations/{base}/compare/{base}")
    assert same.status_code == 400 and same.json()["error"]["param"] == "b"
    assert user.get(f"/v1/evaluations/eval-missing/compare/{base}").status_code == 404
