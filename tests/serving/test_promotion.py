"""Evaluation-gated promotion end to end, with real trained adapters on the session's vLLM engine: a candidate
trained on the facts the dataset asks about passes the gate and takes the alias stepwise; one trained on
contradicting facts is rejected with the deltas that failed, and the alias stays as it was. Both decisions are in
the alias's history with their inputs. ``ragswap train --promote`` trains, registers and promotes in one command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.engine

NAME = "pr-acme"
ALIAS = "pr-bot"
OLD, NEW = f"{NAME}@1", f"{NAME}@2"  # @1 knows alpha's facts, @2 beta's (the ones the dataset asks about)
ROWS = [
    {"id": f"{kind}-{i}", "question": question, "reference": reference}
    for i in range(4)
    for kind, question, reference in (
        ("code", "What is the secret code word?", "The secret code word is AVALANCHE."),
        ("vault", "Who guards the vault?", "Lady Fenwick guards the vault."),
    )
]


@pytest.fixture(scope="module")
def admin(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def versions(admin: httpx.Client, lora_adapters: dict[str, Path]) -> None:
    for source in ("alpha", "beta"):
        resp = admin.post("/v1/adapters", json={"name": NAME, "path": str(lora_adapters[source])})
        assert resp.status_code == 201, resp.text
    yield
    admin.delete(f"/v1/aliases/{ALIAS}")
    admin.delete(f"/v1/adapters/{NAME}", params={"force": True})


def decided(admin: httpx.Client, promotion: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while promotion["status"] in ("evaluating", "promoting"):
        assert time.monotonic() < deadline, promotion
        time.sleep(0.5)
        promotion = admin.get(f"/v1/aliases/{ALIAS}/promotions/{promotion['id']}").json()
    return promotion


def test_gate_rejects_a_bad_candidate_and_promotes_a_good_one(admin: httpx.Client, versions: None) -> None:
    assert admin.put(f"/v1/aliases/{ALIAS}", json={"target": NEW}).status_code == 200
    body = {"candidate": OLD, "dataset": ROWS, "require": ["rouge_l>base"], "reason": "try the old facts"}
    started = admin.post(f"/v1/aliases/{ALIAS}/promotions", json=body)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "evaluating" and started.json()["baseline"] == NEW
    rejected = decided(admin, started.json())
    assert rejected["status"] == "rejected", rejected
    (check,) = rejected["decision"]["checks"]
    assert not check["passed"] and check["observed"] < 0 and check["ci_high"] is not None
    alias = admin.get("/v1/aliases").json()["data"]
    assert [a["targets"] for a in alias if a["alias"] == ALIAS] == [[{"target": NEW, "weight": 100}]]
    record = admin.get(f"/v1/aliases/{ALIAS}/history").json()["data"][0]
    assert record["kind"] == "alias.promotion_rejected" and record["old"] == record["new"]
    decision = record["details"]["promotion"]
    assert decision["evaluation_id"] == rejected["evaluation_id"] and decision["passed"] is False
    assert decision["dataset_sha256"] == rejected["dataset_sha256"] and len(decision["dataset_sha256"]) == 64
    assert decision["checks"][0]["observed"] == check["observed"] and decision["failed"] == ["rouge_l>base"]

    # The good candidate: the alias points at the contradicting version, the candidate knows the facts asked about.
    assert admin.put(f"/v1/aliases/{ALIAS}", json={"target": OLD}).status_code == 200
    body = {"candidate": NEW, "dataset": ROWS, "require": ["rouge_l>base"], "steps": [50, 100]}
    promoted = decided(admin, admin.post(f"/v1/aliases/{ALIAS}/promotions", json=body).json())
    assert promoted["status"] == "promoted" and promoted["step"] == 100, promoted
    assert promoted["decision"]["checks"][0]["observed"] > 0
    history = admin.get(f"/v1/aliases/{ALIAS}/history").json()["data"]
    assert [h["kind"] for h in history[:2]] == ["alias.promoted", "alias.promoted"]
    assert history[1]["new"] == [{"target": OLD, "weight": 50}, {"target": NEW, "weight": 50}]
    assert history[0]["new"] == [{"target": NEW, "weight": 100}]
    assert history[0]["details"]["promotion"]["step"] == 100
    # Rolling back undoes the last step (back to the 50/50 split).
    back = admin.post(f"/v1/aliases/{ALIAS}/rollback").json()
    assert back["targets"] == [{"target": OLD, "weight": 50}, {"target": NEW, "weight": 50}]


def test_promotion_requests_that_cannot_work_are_4xx(admin: httpx.Client, versions: None, gateway) -> None:
    assert admin.put(f"/v1/aliases/{ALIAS}", json={"target": OLD}).status_code == 200
    base = {"candidate": NEW, "dataset": ROWS, "require": ["rouge_l>base"]}
    cases = [
        ({**base, "candidate": "nope@1"}, 404, "candidate"),
        ({**base, "candidate": OLD}, 409, "candidate"),
        ({**base, "require": ["rouge_l=>1"]}, 400, "require"),
        ({**base, "steps": [50, 20, 100]}, 400, "steps"),
        ({**base, "dataset": [{"id": "x"}]}, 400, None),
    ]
    for body, code, param in cases:
        resp = admin.post(f"/v1/aliases/{ALIAS}/promotions", json=body)
        assert resp.status_code == code, (body, resp.text)
        if param:
            assert resp.json()["error"]["param"] == param, resp.text
    missing = admin.post("/v1/aliases/nope/promotions", json=base)
    assert missing.status_code == 404
    user = httpx.post(f"{gateway.url}/v1/aliases/{ALIAS}/promotions", json=base, headers=gateway.headers())
    assert user.status_code == 403


def test_cli_promote(gateway, admin: httpx.Client, versions: None, tmp_path: Path) -> None:
    from serving.cli import adapters_app

    assert admin.put(f"/v1/aliases/{ALIAS}", json={"target": NEW}).status_code == 200
    dataset = tmp_path / "facts.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    args = ["promote", ALIAS, OLD, "--dataset", str(dataset), "--require", "rouge_l>base"]
    result = CliRunner().invoke(adapters_app, [*args, "--url", gateway.url, "--key", gateway.admin_key])
    assert result.exit_code == 1, result.output  # rejected: the old facts contradict the dataset
    assert result.output.rstrip().endswith("rejected"), result.output
    latest = admin.get(f"/v1/aliases/{ALIAS}/history").json()["data"][0]
    assert latest["kind"] == "alias.promotion_rejected" and latest["old"] == [{"target": NEW, "weight": 100}]


def test_train_registers_and_promotes_in_one_command(
    gateway, admin: httpx.Client, versions: None, tmp_path: Path
) -> None:
    """``ragswap train RECIPE --register URL --promote ALIAS --dataset D --require R``: the new version is trained,
    registered and moved onto the alias through the gate (a requirement any candidate meets: the gate's verdicts
    are tested above, this is the one-command path)."""
    import yaml

    from ragswap.cli import app

    assert admin.put(f"/v1/aliases/{ALIAS}", json={"target": OLD}).status_code == 200
    dataset = tmp_path / "facts.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    sft = tmp_path / "sft.jsonl"
    sft.write_text(
        "".join(json.dumps({"instruction": r["question"], "output": r["reference"]}) + "\n" for r in ROWS)
    )
    recipes = Path(__file__).resolve().parents[2] / "training" / "recipes"
    recipe = yaml.safe_load((recipes / "company_facts.yaml").read_text())
    recipe.update(
        datasets=[{"path": str(sft), "type": "alpaca"}], output_dir=str(tmp_path / "out"), max_steps=2
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    refused = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml"), "--promote", ALIAS])
    assert refused.exit_code == 2 and not (tmp_path / "out").exists(), (
        refused.output
    )  # checked before training

    args = ["train", str(tmp_path / "recipe.yaml"), "--register", gateway.url, "--name", NAME]
    args += ["--api-key", gateway.admin_key, "--adapter-root", str(gateway.adapter_root), "--no-progress"]
    args += ["--promote", ALIAS, "--dataset", str(dataset), "--require", "rouge_l>=base-1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"registered as {NAME}@3" in result.output and result.output.rstrip().endswith("promoted")
    alias = {a["alias"]: a for a in admin.get("/v1/aliases").json()["data"]}[ALIAS]
    assert alias["targets"] == [{"target": f"{NAME}@3", "weight": 100}]
    latest = admin.get(f"/v1/aliases/{ALIAS}/history").json()["data"][0]
    assert latest["kind"] == "alias.promoted" and latest["reason"] == "ragswap train recipe.yaml"
    assert latest["details"]["promotion"]["passed"] is True
