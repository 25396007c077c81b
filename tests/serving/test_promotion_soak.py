"""A promotion's soak: between steps the candidate serves its share of the alias's traffic while the gateway's
per-version counters compare its 5xx rate and latency with the baseline's; a regression puts the alias back at once,
recorded with the counts that decided it.

The engine is the stand-in (``tests/serving/stand_in_engine.py``): a real vLLM engine cannot be made to fail for one
adapter on demand. The adapters, the gateway, the control plane, the evaluation job and its gate are real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.engine import EngineSettings
from serving.ops.metrics import VersionStats
from serving.promotions import SoakWatch, soak_verdict
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.serving.stand_in_engine import StandInEngine

NAME = "soak-acme"
ALIAS = "soak-bot"
OLD, NEW = f"{NAME}@1", f"{NAME}@2"
ROWS = [
    {"id": f"q{i}", "question": "What is the secret code word?", "reference": "Hello there"} for i in range(6)
]


@pytest.fixture(scope="module")
def gw(
    stand_in_engine: StandInEngine,
    lora_adapters: dict[str, Path],
    adapter_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    settings = gateway_settings(
        stand_in_engine.url, EngineSettings(), adapter_root, tmp_path_factory.mktemp("soak-state")
    )
    gateway = start_gateway(settings, adapter_root)
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=60) as admin:
        for source in ("alpha", "beta"):
            resp = admin.post("/v1/adapters", json={"name": NAME, "path": str(lora_adapters[source])})
            assert resp.status_code == 201, resp.text
    yield gateway
    gateway.server.stop()


def promote(admin: httpx.Client, **options: Any) -> dict[str, Any]:
    body = {"candidate": NEW, "dataset": ROWS, "require": ["rouge_l>=base-0.5"], **options}
    resp = admin.post(f"/v1/aliases/{ALIAS}/promotions", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def drive(
    gw: Gateway, admin: httpx.Client, promotion: dict[str, Any], timeout: float = 300
) -> dict[str, Any]:
    """Send the alias traffic until the promotion is decided; its final state."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=gw.url, headers=gw.headers(), timeout=30) as user:
        while promotion["status"] in ("evaluating", "promoting"):
            assert time.monotonic() < deadline, promotion
            if promotion["status"] == "promoting":
                for _ in range(4):
                    user.post(
                        "/v1/chat/completions",
                        json={
                            "model": ALIAS,
                            "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 4,
                        },
                    )
            else:
                time.sleep(0.2)
            promotion = admin.get(f"/v1/aliases/{ALIAS}/promotions/{promotion['id']}").json()
    return promotion


def test_soak_reverts_a_candidate_whose_errors_rise(gw: Gateway, stand_in_engine: StandInEngine) -> None:
    with httpx.Client(base_url=gw.url, headers=gw.headers(admin=True), timeout=60) as admin:
        assert admin.put(f"/v1/aliases/{ALIAS}", json={"target": OLD}).status_code == 200
        watch = {"min_requests": 10, "max_error_rate_delta": 0.05}
        started = promote(admin, steps=[50, 100], step_interval_s=60, soak=watch, reason="soak test")
        promotion = admin.get(f"/v1/aliases/{ALIAS}/promotions/{started['id']}").json()
        while promotion["status"] == "evaluating":
            time.sleep(0.2)
            promotion = admin.get(f"/v1/aliases/{ALIAS}/promotions/{started['id']}").json()
        assert promotion["status"] == "promoting" and promotion["step"] == 50, promotion
        stand_in_engine.failing = {NEW}  # it passed its evaluation; now its answers fail for users
        try:
            began = time.monotonic()
            final = drive(gw, admin, promotion)
        finally:
            stand_in_engine.failing = set()
        assert final["status"] == "reverted", final
        assert time.monotonic() - began < 50, "the soak did not stop at the regression"
        (soak,) = final["soaks"]
        assert soak["verdict"] == "regressed" and soak["step"] == 50
        # Every candidate request failed; the one in flight when the window was read is counted, its error not yet.
        candidate = soak["candidate"]
        assert candidate["requests"] >= 10 and candidate["requests"] - 1 <= candidate["server_errors"]
        assert soak["baseline"]["requests"] > 0 and soak["baseline"]["server_errors"] == 0
        assert soak["reasons"][0].startswith("5xx rate ") and "vs 0.0% for the baseline" in soak["reasons"][0]
        assert "soak regression" in final["error"]

        alias = {a["alias"]: a for a in admin.get("/v1/aliases").json()["data"]}[ALIAS]
        assert alias["targets"] == [{"target": OLD, "weight": 100}]
        history = admin.get(f"/v1/aliases/{ALIAS}/history").json()["data"]
        reverted, stepped = history[0], history[1]
        assert reverted["kind"] == "alias.promotion_reverted" and stepped["kind"] == "alias.promoted"
        record = reverted["details"]["promotion"]
        assert record["id"] == final["id"] and record["soak"]["verdict"] == "regressed"
        assert record["dataset_sha256"] == final["dataset_sha256"]
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert (
            f'ragswap_alias_request_errors_total{{alias="{ALIAS}",status="502",version="{NEW}"}}' in metrics
        )

        # The same candidate, healthy: the soak passes and the promotion completes.
        final = drive(gw, admin, promote(admin, steps=[50, 100], step_interval_s=3, soak=watch))
        assert final["status"] == "promoted" and final["step"] == 100, final
        assert [s["verdict"] for s in final["soaks"]] in (["passed"], ["insufficient_traffic"])


def stats(requests: int, errors: int = 0, latency_s: float = 0.1) -> VersionStats:
    answered = requests - errors
    return VersionStats(requests, errors, answered, answered * latency_s)


@pytest.mark.parametrize(
    ("candidate", "baseline", "verdict", "reason"),
    [
        (stats(9, errors=9), stats(9), "insufficient_traffic", None),  # too few to judge
        (stats(40, errors=2), stats(40, errors=1), "passed", None),  # 5 % vs 2.5 %: within five points
        (stats(40, errors=4), stats(40), "regressed", "5xx rate 10.0% vs 0.0%"),
        (stats(40, latency_s=0.5), stats(40, latency_s=0.2), "regressed", "mean latency"),
        (stats(40, latency_s=0.3), stats(40, latency_s=0.2), "passed", None),
        (stats(40, latency_s=0.5), stats(5, latency_s=0.2), "passed", None),  # too few baseline answers
    ],
)
def test_soak_verdict(
    candidate: VersionStats, baseline: VersionStats, verdict: str, reason: str | None
) -> None:
    result = soak_verdict(candidate, baseline, SoakWatch(min_requests=10))
    assert result["verdict"] == verdict, result
    if reason:
        assert reason in result["reasons"][0]
    assert result["candidate"]["requests"] == int(candidate.requests)
