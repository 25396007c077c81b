"""Weighted aliases end to end, with real trained adapters on the session's vLLM engine and the official client:
an 80/20 canary lands within the binomial 99 % interval and every answer names the version that served it;
sticky users keep their version across 50 requests and (almost all) across a 10-point weight change; a rollback
during 32 concurrent streams fails none of them; history and the CLI show who changed what; a shadow candidate
answers a copy of the traffic that users never see, captured in pairs that ``eval run --score-only`` scores."""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI
from scipy.stats import binom
from typer.testing import CliRunner

from tests.conftest import ADAPTER_PROMPT

pytestmark = pytest.mark.engine

NAME = "lc-acme"
ALIAS = "lc-bot"
V1, V2 = f"{NAME}@1", f"{NAME}@2"
FACT = {V1: "PELICAN", V2: "AVALANCHE"}  # acme@1 is trained on alpha's facts, acme@2 on beta's


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


def async_admin(gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120)


async def put_split(admin: httpx.AsyncClient, split: dict[str, int], reason: str) -> dict:
    body = {"targets": [{"target": t, "weight": w} for t, w in split.items()], "reason": reason}
    resp = await admin.put(f"/v1/aliases/{ALIAS}", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def ask(
    client: AsyncOpenAI, gate: asyncio.Semaphore, *, user: str | None = None, session: str | None = None
) -> str:
    """One cheap request to the alias; returns the version it names (model field == header, checked)."""
    async with gate:
        raw = await client.chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=1,
            temperature=0,
            **({"user": user} if user else {}),
            extra_headers={"X-Ragswap-Session": session} if session else None,
        )
    reply = raw.parse()
    assert raw.headers["x-ragswap-model-version"] == reply.model
    return reply.model


async def test_canary_split_and_sticky_users(gateway, versions: None) -> None:
    admin = async_admin(gateway)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=300)
    gate = asyncio.Semaphore(32)
    listed = await put_split(admin, {V1: 80, V2: 20}, "canary 20 %")
    assert listed["target"] == V1 and listed["targets"] == [
        {"target": V1, "weight": 80},
        {"target": V2, "weight": 20},
    ]

    served = await asyncio.gather(*(ask(client, gate) for _ in range(400)))
    counts = collections.Counter(served)
    assert set(counts) == {V1, V2}
    lo, hi = binom.interval(0.99, 400, 0.2)
    assert lo <= counts[V2] <= hi, counts
    metrics = (await admin.get("/metrics")).text  # the split as served, per concrete version
    for version, n in counts.items():
        assert f'ragswap_alias_requests_total{{alias="{ALIAS}",version="{version}"}} {float(n)}' in metrics

    # The version named is the one that answered: each one's own trained fact, sticky per session.
    for session in ("s-a", "s-b", "s-c", "s-d", "s-e", "s-f"):
        raw = await client.chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=[{"role": "user", "content": ADAPTER_PROMPT}],
            max_tokens=16,
            temperature=0,
            extra_headers={"X-Ragswap-Session": session},
        )
        reply = raw.parse()
        assert FACT[reply.model] in (reply.choices[0].message.content or ""), reply

    # Sticky: a user (OpenAI `user`) or a session (header) keeps its version across 50 requests.
    keys = [{"user": f"user-{i}"} for i in range(3)] + [{"session": f"conv-{i}"} for i in range(3)]
    for key in keys:
        seen = set(await asyncio.gather(*(ask(client, gate, **key) for _ in range(50))))
        assert len(seen) == 1, (key, seen)

    # A 10-point weight change moves only the users it must: ≥ 90 % keep their version.
    users = [f"member-{i}" for i in range(200)]
    before = await asyncio.gather(*(ask(client, gate, user=u) for u in users))
    await put_split(admin, {V1: 70, V2: 30}, "canary 30 %")
    after = await asyncio.gather(*(ask(client, gate, user=u) for u in users))
    kept = sum(b == a for b, a in zip(before, after, strict=True)) / len(users)
    assert kept >= 0.9, kept
    assert all(
        a == V2 for b, a in zip(before, after, strict=True) if b != a
    )  # moved onto the grown share only
    await client.close()


async def _stream(client: AsyncOpenAI, session: str) -> tuple[str, str]:
    stream = await client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": ADAPTER_PROMPT}],
        temperature=0,
        max_tokens=24,
        stream=True,
        extra_headers={"X-Ragswap-Session": session},
    )
    models, text = set(), []
    async for chunk in stream:
        models.add(chunk.model)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
    assert len(models) == 1, models  # one stream, one version, even when the alias moves mid-stream
    return models.pop(), "".join(text)


async def test_rollback_during_concurrent_streams(gateway, versions: None) -> None:
    admin = async_admin(gateway)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=600)
    await put_split(admin, {V1: 100}, "stable")
    await put_split(admin, {V1: 50, V2: 50}, "risky half")

    async def roll_back() -> dict:
        await asyncio.sleep(0.3)  # the streams are under way
        resp = await admin.post(f"/v1/aliases/{ALIAS}/rollback", json={"reason": "bad canary"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    results = await asyncio.gather(
        *(_stream(client, f"roll-{i}") for i in range(32)), roll_back(), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    *streams, rolled = results
    assert rolled["targets"] == [{"target": V1, "weight": 100}]
    for (
        model,
        text,
    ) in streams:  # every stream finished on the version it started on, with that version's fact
        assert FACT[model] in text, (model, text)
    # After the rollback everything goes to acme@1 again.
    after = await asyncio.gather(*(_stream(client, f"roll-{i}") for i in range(8)))
    assert {m for m, _ in after} == {V1}

    history = (await admin.get(f"/v1/aliases/{ALIAS}/history")).json()["data"]
    latest = history[0]
    assert latest["kind"] == "alias.rollback" and latest["reason"] == "bad canary"
    assert latest["old"] == [{"target": V1, "weight": 50}, {"target": V2, "weight": 50}]
    assert latest["new"] == [{"target": V1, "weight": 100}] and latest["actor"].startswith("…")
    assert history[1]["reason"] == "risky half"
    # A user key may read the history but not roll back.
    user = await admin.post(f"/v1/aliases/{ALIAS}/rollback", headers=gateway.headers())
    assert user.status_code == 403
    bad = await admin.put(f"/v1/aliases/{ALIAS}", json={"targets": [{"target": V1, "weight": 70}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] is not None
    await client.close()
    await admin.aclose()


def test_cli_alias_history_and_rollback(gateway, versions: None) -> None:
    from serving.cli import adapters_app

    opts = ["--url", gateway.url, "--key", gateway.admin_key]
    runner = CliRunner()
    done = runner.invoke(
        adapters_app, ["alias", ALIAS, f"{V1}=90", f"{V2}=10", "--reason", "cli canary", *opts]
    )
    assert done.exit_code == 0, done.output
    assert f"{V1}=90, {V2}=10" in done.output
    shown = runner.invoke(adapters_app, ["history", ALIAS, *opts])
    assert shown.exit_code == 0 and "history of" in shown.output, shown.output
    latest = httpx.get(f"{gateway.url}/v1/aliases/{ALIAS}/history", headers=gateway.headers()).json()["data"][
        0
    ]
    assert latest["reason"] == "cli canary" and latest["actor"].startswith("…")
    back = runner.invoke(adapters_app, ["rollback", ALIAS, *opts])
    assert back.exit_code == 0 and f"{ALIAS} → " in back.output, back.output
    wrong = runner.invoke(adapters_app, ["alias", ALIAS, f"{V1}=ninety", *opts])
    assert wrong.exit_code != 0


def _captured(directory: Path, count: int, timeout: float = 120.0) -> list[dict]:
    """The shadow capture's rows once there are ``count`` (the candidate answers after the user's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [
            json.loads(line)
            for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _counter(metrics: str, name: str, labels: str) -> float:
    line = next((x for x in metrics.splitlines() if x.startswith(f"{name}{{{labels}}}")), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


async def test_shadow_traffic_is_captured_in_pairs_and_scored_offline(
    gateway, versions: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragswap.cli import app

    admin = async_admin(gateway)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=300)
    await put_split(admin, {V1: 100}, "before the shadow")
    directory = gateway.state_dir / "shadow" / ALIAS
    shutil.rmtree(directory, ignore_errors=True)
    refused = await admin.put(f"/v1/aliases/{ALIAS}/shadow", json={"candidate": V1, "percent": 100})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_target"
    user = await admin.put(
        f"/v1/aliases/{ALIAS}/shadow", json={"candidate": V2, "percent": 100}, headers=gateway.headers()
    )
    assert user.status_code == 403
    resp = await admin.put(
        f"/v1/aliases/{ALIAS}/shadow", json={"candidate": V2, "percent": 100, "reason": "does v2 hold up?"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["shadow"] == {"candidate": V2, "percent": 100}
    metrics = (await admin.get("/metrics")).text
    v2_served = _counter(metrics, "ragswap_alias_requests_total", f'alias="{ALIAS}",version="{V2}"')

    # Users get acme@1's answers only (its fact, its name), streamed or not.
    answers = []
    for i in range(3):
        raw = await client.chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=[{"role": "user", "content": ADAPTER_PROMPT}],
            max_tokens=16,
            temperature=0,
            user=f"shadowed-{i}",
        )
        reply = raw.parse()
        assert reply.model == V1 and raw.headers["x-ragswap-model-version"] == V1
        answers.append(reply.choices[0].message.content or "")
    for i in range(3):
        model, text = await _stream(client, f"shadowed-stream-{i}")
        assert model == V1
        answers.append(text)
    assert all(FACT[V1] in a and FACT[V2] not in a for a in answers), answers

    rows = _captured(directory, 6)
    assert len(rows) == 6, rows
    assert sorted(r["responses"][V1] for r in rows) == sorted(answers)  # what the user got, as they got it
    for row in rows:
        assert FACT[V2] in row["responses"][V2], row  # the candidate really answered, with its own fact
        capture = row["capture"]
        assert (capture["alias"], capture["served"], capture["candidate"]) == (ALIAS, V1, V2)
        assert capture["candidate_error"] is None and all(v > 0 for v in capture["latency_s"].values())
        assert row["question"] == ADAPTER_PROMPT and capture["messages"][-1]["content"] == ADAPTER_PROMPT
    assert sorted(r["capture"]["stream"] for r in rows) == [False] * 3 + [True] * 3
    metrics = (await admin.get("/metrics")).text
    labels = f'alias="{ALIAS}",outcome="captured",version="{V2}"'
    assert _counter(metrics, "ragswap_shadow_requests_total", labels) >= 6
    # The candidate's requests never count as the alias serving it (what a promotion's soak compares).
    assert _counter(metrics, "ragswap_alias_requests_total", f'alias="{ALIAS}",version="{V2}"') == v2_served

    # A client that goes away mid-stream is not mirrored (there is no whole answer to pair).
    gone = await client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": ADAPTER_PROMPT}],
        max_tokens=256,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},  # long enough to be under way when the client leaves
    )
    async for _ in gone:
        break
    await gone.close()
    await asyncio.sleep(2.0)
    assert len(_captured(directory, 7, timeout=0)) == 6

    history = (await admin.get(f"/v1/aliases/{ALIAS}/history")).json()["data"]
    assert history[0]["kind"] == "alias.shadow_set" and history[0]["reason"] == "does v2 hold up?"
    stopped = await admin.request("DELETE", f"/v1/aliases/{ALIAS}/shadow", json={"reason": "enough"})
    assert stopped.status_code == 200 and stopped.json()["shadow"] is None
    again = await admin.request("DELETE", f"/v1/aliases/{ALIAS}/shadow")
    assert again.status_code == 404 and again.json()["error"]["code"] == "shadow_not_found"
    await client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    await asyncio.sleep(1.0)
    assert len(_captured(directory, 7, timeout=0)) == 6  # off: nothing more is mirrored or written

    # Offline: the capture is an evaluation dataset; its two versions are two configs, compared paired.
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("RAGSWAP_EVAL__JUDGE_CHECK", "false")
    monkeypatch.setenv("RAGSWAP_EVAL__BOOTSTRAP_SAMPLES", "200")
    out = tmp_path / "scored"
    args = ["eval", "run", "--dataset", str(capture), "--score-only", "--metric", "answer_relevancy"]
    args += ["--server", gateway.url, "--api-key", gateway.api_key, "--out", str(out)]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["results"]) == [V1, V2]
    for version in (V1, V2):
        scored = summary["results"][version]["answer_relevancy"]
        assert scored["n_ok"] + scored["n_failed"] == 6 and scored["n_ok"] >= 1, scored
    traces = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines() if x.strip()]
    assert {t["config"] for t in traces} == {V1, V2}
    assert all(t["latency_s"] is not None and t["latency_s"] > 0 for t in traces)  # the captured latencies
    assert summary["comparisons"], summary.keys()
    await client.close()
    await admin.aclose()
