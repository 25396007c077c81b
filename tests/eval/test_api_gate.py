"""``POST /v1/evaluations/{id}/gate`` on the real gateway: the CLI's gate over a finished job's summary."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ragswap.cli import app
from tests.conftest import Gateway

pytestmark = pytest.mark.engine

# Already-answered rows scored with exact metrics only: the job needs no judge and no generation.
ROWS = [
    {
        "user_input": f"What is the capital of France? ({i})",
        "response": "The capital of France is Paris.",
        "retrieved_contexts": ["Paris is the capital of France.", "Lyon is in France."],
        "retrieved_context_ids": ["d1", "d2"] if i % 2 else ["d2", "d1"],
        "reference": "Paris is the capital of France.",
        "reference_context_ids": ["d1"],
    }
    for i in range(8)
]


def _finished(gw: Gateway, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{gw.url}/v1/evaluations/{job_id}", headers=gw.headers(), timeout=30).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


def test_gate_route(gateway: Gateway) -> None:
    url, headers = f"{gateway.url}/v1/evaluations", gateway.headers()
    body = {
        "dataset": ROWS,
        "metrics": ["rouge_l", "mrr"],
        "score_only": True,
        "adapters": ["current", "next"],
    }
    job = httpx.post(url, json=body, headers=headers, timeout=30).json()
    assert _finished(gateway, job["id"])["status"] == "succeeded"

    require = {"require": ["mrr>=0.7", "rouge_l>base"], "candidate": "next"}
    gate = httpx.post(f"{url}/{job['id']}/gate", json=require, headers=headers, timeout=30)
    assert gate.status_code == 200, gate.text
    result = gate.json()
    assert result["passed"] is False and (result["candidate"], result["baseline"]) == ("next", "current")
    mrr, rouge = result["checks"]
    assert mrr["passed"] and mrr["observed"] == pytest.approx(0.75)
    # Same answers under both configs: no detectable improvement, whatever the threshold says.
    assert not rouge["passed"] and rouge["observed"] == 0.0 and rouge["p_value"] == 1.0
    assert httpx.post(f"{url}/{job['id']}/gate", json={"require": ["mrr>=0.7"]}, headers=headers).json()[
        "passed"
    ]

    bad = httpx.post(f"{url}/{job['id']}/gate", json={"require": ["mrr=>1"]}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "require"
    assert "cannot read requirement" in bad.json()["error"]["message"]
    empty = httpx.post(f"{url}/{job['id']}/gate", json={"require": []}, headers=headers)
    assert empty.status_code == 400
    unknown = httpx.post(
        f"{url}/{job['id']}/gate", json={"require": ["mrr>=0.1"], "candidate": "x"}, headers=headers
    )
    assert unknown.status_code == 400 and "not in run" in unknown.json()["error"]["message"]
    missing = httpx.post(f"{url}/eval-missing/gate", json={"require": ["mrr>=0.1"]}, headers=headers)
    assert missing.status_code == 404
    assert httpx.post(f"{url}/{job['id']}/gate", json={"require": ["mrr>=0.1"]}).status_code == 401

    # The CLI gates the same job through the API.
    cli = CliRunner().invoke(
        app,
        [
            "eval",
            "gate",
            job["id"],
            "--server",
            gateway.url,
            "--api-key",
            gateway.api_key,
            "--require",
            "mrr>=0.7",
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert "gate passed" in cli.output

    # A job without results (cancelled before it ran) cannot be gated: 409, as for its results.
    slow = httpx.post(
        url,
        json={"dataset": [{"question": f"q{i}"} for i in range(50)], "metrics": ["rouge_l"]},
        headers=headers,
    ).json()
    httpx.post(f"{url}/{slow['id']}/cancel", headers=headers, timeout=60)
    early = httpx.post(f"{url}/{slow['id']}/gate", json={"require": ["rouge_l>=0"]}, headers=headers)
    assert early.status_code == 409 and early.json()["error"]["code"] == "evaluation_not_finished"
